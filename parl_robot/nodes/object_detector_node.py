"""Object detector node (hardware graph): the task object's position from the calibrated camera.

Consumes `camera/image_raw` (rgb8, the images the camera node publishes after crop/resize) and
publishes `objects/poses` for every image (JSON {object_name: [x, y, z]} in the robot base frame
plus `_meta`, see perception/object_poses.py) — the same message the sim bridge publishes from
ground truth, so the reward detector and the learner do not know which one they listen to. When
the object is not found (the gripper over it) the last seen position goes out, flagged `occluded`
with its `age_s`, so acting does not stall; before the first sighting nothing is published.
Detection: `perception.detector` (colour blob or ArUco marker), with the camera model in
`perception.calibration_file` (written by `parl-robot calibrate`).
"""

from __future__ import annotations

import time
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from parl_robot.nodes import common
from parl_robot.perception.calibration import CameraModel
from parl_robot.perception.object_detector import detect_object
from parl_robot.perception.object_poses import LastSeenPosition, encode_object_poses

MISSING_WARNING_PERIOD_S = 5.0


class ObjectDetectorNode(Node):
    def __init__(self):
        super().__init__("object_detector")
        self.cfg = common.declare_task_config(self)
        path = Path(self.cfg.perception.calibration_file)
        if not path.is_file():
            raise FileNotFoundError(
                f"no camera calibration at {path.resolve()}: run `parl-robot calibrate intrinsics ...` and "
                "`parl-robot calibrate extrinsics ...` (calibration/README.md) or set perception.calibration_file"
            )
        # Calibrated on full frames at the capture size: moved onto the published (cropped, resized) images.
        self.camera = CameraModel.load(path).for_output_size(self.cfg.sim.camera_width, self.cfg.sim.camera_height)
        self.poses_pub = self.create_publisher(String, common.OBJECT_POSES, common.SENSOR_QOS)
        self.create_subscription(Image, common.CAMERA_IMAGE, self.on_image, common.SENSOR_QOS)
        self.last_warning = 0.0
        self.object = LastSeenPosition(self.cfg.reward.object_name)

    def on_image(self, msg: Image) -> None:
        image = common.rgb_image_from_message(msg)
        if image is None:
            self.get_logger().warning(f"ignoring image with encoding {msg.encoding}")
            return
        try:
            detection = detect_object(image, self.camera, self.cfg.perception)
        except ValueError as err:
            self.get_logger().error(str(err))
            return
        name = self.cfg.reward.object_name
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        poses = self.object.update(None if detection is None else detection.position, stamp)
        if poses is not None:
            self.poses_pub.publish(String(data=encode_object_poses(poses)))
        if poses is None or poses.age_s[name] > 1.0:
            unseen = "yet" if poses is None else f"for {poses.age_s[name]:.1f} s (last seen position kept)"
            if time.monotonic() - self.last_warning > MISSING_WARNING_PERIOD_S:
                self.get_logger().warning(f"'{name}' not seen {unseen}")
                self.last_warning = time.monotonic()


def main(args=None) -> int:
    return common.run_node(ObjectDetectorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
