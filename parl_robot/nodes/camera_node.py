"""USB / third-person camera node: OpenCV capture -> `camera/image_raw` (rgb8, capture-stamped).

Parameters: `device` (index such as "0" or a path such as /dev/video2), `width`/`height`/`fps`
requested from the driver, and the output size of the task (`sim.camera_width/height`, the policy
input) reached by a centre crop to the output aspect ratio and a resize.

A `FrameGrabber` thread drains the driver's queue and keeps the newest frame; the node publishes it
at `fps` with `header.stamp` = the ROS time of its capture (not of the publish), never the same
frame twice. It warns when no new frame came for over a second and when the driver repeats
byte-identical frames, reopens a lost device once a second, and publishes `camera/status` (JSON:
measured fps, age of the newest frame, identical-frame counts, connected) at 1 Hz.
"""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import String

from parl_robot.nodes import common
from parl_robot.perception.calibration import centre_crop_box
from parl_robot.perception.frame_grabber import Frame, FrameGrabber, open_capture

RECONNECT_INTERVAL_S = 1.0
STALE_AFTER_S = 1.0  # warn when the newest frame is older than this
FROZEN_AFTER_IDENTICAL = 3  # this many byte-identical frames in a row: the driver is stuck (or the lens capped)
WARNING_PERIOD_S = 5.0


def crop_and_resize(frame_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop a BGR frame to the target aspect ratio, resize, and convert to RGB.
    (`perception.calibration.camera_matrix_for_output` is the same map applied to the intrinsics.)"""
    x0, y0, crop_w, crop_h = centre_crop_box(frame_bgr.shape[1], frame_bgr.shape[0], width, height)
    resized = cv2.resize(frame_bgr[y0 : y0 + crop_h, x0 : x0 + crop_w], (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def capture_stamp(now: Time, now_monotonic: float, frame: Frame) -> Time:
    """The ROS time at which `frame` was captured: `now` minus the frame's age on the monotonic clock."""
    return now - Duration(nanoseconds=int(round((now_monotonic - frame.capture_monotonic) * 1e9)))


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        self.cfg = common.declare_task_config(self)
        self.device = str(self.declare_parameter("device", "0").value)
        self.capture_width = int(self.declare_parameter("width", 640).value)
        self.capture_height = int(self.declare_parameter("height", 480).value)
        self.fps = float(self.declare_parameter("fps", self.cfg.sim.camera_rate_hz).value)
        self.image_pub = self.create_publisher(Image, common.CAMERA_IMAGE, common.SENSOR_QOS)
        self.status_pub = self.create_publisher(String, common.CAMERA_STATUS, common.EVENT_QOS)
        capture = open_capture(self.device, self.capture_width, self.capture_height, self.fps)
        self.grabber = FrameGrabber(
            capture, lambda: open_capture(self.device, self.capture_width, self.capture_height, self.fps),
            RECONNECT_INTERVAL_S, name=self.device, logger=self.get_logger(),
        ).start()
        self.started = time.monotonic()
        self.published_serial = 0
        self.status_window = (self.started, 0)  # (monotonic time, frames read) at the last status
        self.create_timer(1.0 / self.fps, self.on_tick)
        self.create_timer(1.0, self.publish_status)

    def on_tick(self) -> None:
        frame = self.grabber.latest()
        now, now_monotonic = self.get_clock().now(), time.monotonic()
        age = now_monotonic - (frame.capture_monotonic if frame is not None else self.started)
        if age > STALE_AFTER_S:
            connected = "" if self.grabber.stats().connected else " (disconnected, reconnecting)"
            self.get_logger().warning(f"no new frame from camera '{self.device}' for {age:.1f} s{connected}",
                                      throttle_duration_sec=WARNING_PERIOD_S)
        if frame is None or frame.serial == self.published_serial:
            return
        self.published_serial = frame.serial
        identical = self.grabber.stats().identical_streak
        if identical >= FROZEN_AFTER_IDENTICAL:
            self.get_logger().warning(
                f"camera '{self.device}' repeats byte-identical frames ({identical} in a row): frozen driver "
                "or capped lens? replug the camera", throttle_duration_sec=WARNING_PERIOD_S)
        rgb = crop_and_resize(frame.image, self.cfg.sim.camera_width, self.cfg.sim.camera_height)
        self.image_pub.publish(common.rgb_image_message(rgb, capture_stamp(now, now_monotonic, frame).to_msg()))

    def publish_status(self) -> None:
        stats, frame, now = self.grabber.stats(), self.grabber.latest(), time.monotonic()
        window_start, frames_before = self.status_window
        self.status_window = (now, stats.frames)
        status = {
            "device": self.device,
            "connected": stats.connected,
            "fps": round((stats.frames - frames_before) / max(now - window_start, 1e-6), 2),
            "age_s": round(now - frame.capture_monotonic, 3) if frame is not None else None,
            "frames": stats.frames,
            "identical_frames": stats.identical_streak,
            "identical_total": stats.identical_total,
            "frozen": stats.identical_streak >= FROZEN_AFTER_IDENTICAL,
            "reconnects": stats.reconnects,
        }
        self.status_pub.publish(String(data=json.dumps(status)))

    def close(self) -> None:
        if not self.grabber.stop():
            self.get_logger().warning(f"camera '{self.device}' still blocked in read(); released when it returns")


def main(args=None) -> int:
    return common.run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
