"""USB / third-person camera node: OpenCV capture -> `camera/image_raw` (rgb8, timestamped).

Parameters: `device` (index such as "0" or a path such as /dev/video2), `width`/`height`/`fps`
requested from the driver, and the output size of the task (`sim.camera_width/height`, the policy
input) reached by a centre crop to the output aspect ratio and a resize. When frames stop, the node
reports it and reopens the device once a second until it is back.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image

from parl_robot.nodes import common
from parl_robot.perception.calibration import centre_crop_box

RECONNECT_INTERVAL_S = 1.0


def crop_and_resize(frame_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop a BGR frame to the target aspect ratio, resize, and convert to RGB.
    (`perception.calibration.camera_matrix_for_output` is the same map applied to the intrinsics.)"""
    x0, y0, crop_w, crop_h = centre_crop_box(frame_bgr.shape[1], frame_bgr.shape[0], width, height)
    resized = cv2.resize(frame_bgr[y0 : y0 + crop_h, x0 : x0 + crop_w], (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def open_capture(device: str, width: int, height: int, fps: float) -> cv2.VideoCapture:
    source = int(device) if device.isdigit() else device
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise RuntimeError(f"camera '{device}' could not be opened (does the device exist? try `v4l2-ctl --list-devices`)")
    capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    capture.set(cv2.CAP_PROP_FPS, fps)
    return capture


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        self.cfg = common.declare_task_config(self)
        self.device = str(self.declare_parameter("device", "0").value)
        self.capture_width = int(self.declare_parameter("width", 640).value)
        self.capture_height = int(self.declare_parameter("height", 480).value)
        self.fps = float(self.declare_parameter("fps", self.cfg.sim.camera_rate_hz).value)
        self.image_pub = self.create_publisher(Image, common.CAMERA_IMAGE, common.SENSOR_QOS)
        self.capture = open_capture(self.device, self.capture_width, self.capture_height, self.fps)
        self.connected = True
        self.last_reconnect = 0.0
        self.create_timer(1.0 / self.fps, self.on_tick)

    def on_tick(self) -> None:
        if not self.connected:
            if time.monotonic() - self.last_reconnect < RECONNECT_INTERVAL_S:
                return
            self.last_reconnect = time.monotonic()
            try:
                self.capture = open_capture(self.device, self.capture_width, self.capture_height, self.fps)
            except RuntimeError:
                return
            self.connected = True
            self.get_logger().info(f"camera '{self.device}' reconnected")
        ok, frame = self.capture.read()
        if not ok or frame is None:
            self.get_logger().error(f"camera '{self.device}' lost; reconnecting")
            self.capture.release()
            self.connected = False
            return
        rgb = crop_and_resize(frame, self.cfg.sim.camera_width, self.cfg.sim.camera_height)
        self.image_pub.publish(common.rgb_image_message(rgb, self.get_clock().now().to_msg()))

    def close(self) -> None:
        self.capture.release()


def main(args=None) -> int:
    return common.run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
