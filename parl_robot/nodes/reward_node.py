"""Reward detector node: sparse success from detected object positions and the gripper state, or
from a learned success classifier on the camera's frames.

`reward.detector: positions` (default) consumes `objects/poses` (JSON {name: [x, y, z]} in the robot
base frame: ground truth in sim, the perception pipeline on hardware) and `robot/state` (its
`gripper` entry, 1 = open); publishes `reward` (Float32, biased so success is 0) and
`reward/success` (Bool) for every object update. An occluded object counts at its last seen
position (the detector's object permanence): while the gripper holds it the gripper is closed, so
that is no success; after release it is seen again.

`reward.detector: classifier` runs the classifier of `reward.classifier_file` on every
`camera/image_raw` frame instead and also publishes its probability on `reward/score`; success needs
`reward.classifier_consecutive_frames` positive frames in a row (one frame scored per control step,
by the images' stamps; counted from each episode's start) and, when the task asks for it, the
gripper open. A missing or damaged model file stops the node at
start-up with the reason.

The operator switches the detector while running (`use_detector` event from the page, after watching
the classifier's agreement in shadow mode): the node loads the newest model file and announces the
detector in use on `reward/detector` (latched JSON, also at start-up); a model that cannot be loaded
keeps the current detector and the announcement carries the error.
"""

from __future__ import annotations

import json
from pathlib import Path

from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32, String

from parl_robot.nodes import common
from parl_robot.perception.object_poses import decode_object_poses
from parl_robot.perception.success import is_success, step_reward


class RewardNode(Node):
    def __init__(self):
        super().__init__("reward_detector")
        self.cfg = common.declare_task_config(self)
        self.gripper_open: bool | None = None
        self.reward_pub = self.create_publisher(Float32, common.REWARD, common.COMMAND_QOS)
        self.success_pub = self.create_publisher(Bool, common.REWARD_SUCCESS, common.COMMAND_QOS)
        self.create_subscription(JointState, common.ROBOT_STATE, self.on_state, common.SENSOR_QOS)
        self.classifier = self.debouncer = None
        self.last_scored: float | None = None  # stamp of the last frame the classifier scored
        self.model_version: int | None = None
        self.detector = "positions"
        self.score_pub = self.create_publisher(Float32, common.REWARD_SCORE, common.COMMAND_QOS)
        self.detector_pub = self.create_publisher(String, common.REWARD_DETECTOR, common.LATCHED_QOS)
        if self.cfg.reward.detector == "classifier":
            self._load_classifier()  # SuccessModelError: the node does not start
        self.create_subscription(String, common.OBJECT_POSES, self.on_objects, common.SENSOR_QOS)
        self.create_subscription(Image, common.CAMERA_IMAGE, self.on_image, common.SENSOR_QOS)
        self.create_subscription(String, common.EPISODE_EVENT, self.on_event, common.EVENT_QOS)
        self._announce()

    def _announce(self, error: str = "") -> None:
        """`reward/detector` (latched): the detector in use, and why a requested switch failed."""
        status = {"detector": self.detector, "error": error}
        if self.detector == "classifier":
            status.update(model=self.cfg.reward.classifier_file, model_version=self.model_version)
        self.detector_pub.publish(String(data=json.dumps(status)))

    def _load_classifier(self) -> None:
        from parl_robot.perception.success_classifier import SuccessDebouncer, load_classifier

        reward = self.cfg.reward
        classifier = load_classifier(reward.classifier_file)
        threshold = reward.classifier_threshold or classifier.threshold
        summary = Path(reward.classifier_file).with_suffix(".json")  # the shadow node numbers its versions there
        try:
            self.model_version = json.loads(summary.read_text()).get("version") if summary.is_file() else None
        except (OSError, ValueError):
            self.model_version = None
        self.classifier = classifier
        self.debouncer = SuccessDebouncer(threshold, reward.classifier_consecutive_frames, reward.require_gripper_open)
        self.detector = "classifier"
        metrics = self.classifier.metrics
        self.get_logger().info(
            f"success classifier {reward.classifier_file}: threshold {threshold:.3f}, "
            f"{reward.classifier_consecutive_frames} control steps in a row; held-out precision {metrics.get('precision')}, "
            f"recall {metrics.get('recall')}")

    def on_state(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self.gripper_open = msg.position[list(msg.name).index("gripper")] > 0.5

    def use_detector(self, detector: str) -> None:
        """Switch to `detector` ("positions" or "classifier", the newest model file); announce the outcome."""
        from parl_robot.perception.success_classifier import SuccessModelError

        if detector not in ("positions", "classifier"):
            self._announce(f"unknown detector {detector!r}: positions or classifier")
            return
        if detector == "classifier":
            try:
                self._load_classifier()
            except SuccessModelError as err:
                self.get_logger().warning(f"staying with the {self.detector} detector: {err}")
                self._announce(str(err))
                return
        else:
            self.detector = "positions"
        self.get_logger().info(f"reward detector: {self.detector}")
        self._announce()

    def on_objects(self, msg: String) -> None:
        if self.detector != "positions":
            return
        poses = decode_object_poses(msg.data)
        position = None if poses is None else poses.positions.get(self.cfg.reward.object_name)
        if position is None:
            self.get_logger().warning(f"ignoring object message without a position for '{self.cfg.reward.object_name}'")
            return
        if self.gripper_open is None:
            return
        self._publish(is_success(position, self.gripper_open, self.cfg.reward))

    def on_image(self, msg: Image) -> None:
        if self.detector != "classifier":
            return
        # One frame per control step: "N frames in a row" then means N control steps, as the stored
        # episodes (one frame per step) the classifier is trained and judged on in shadow mode.
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if self.last_scored is not None and 0 <= stamp - self.last_scored < 0.9 / self.cfg.control.rate_hz:
            return
        frame = common.rgb_image_from_message(msg)
        if frame is None:
            self.get_logger().warning(f"ignoring image with encoding {msg.encoding} and {len(msg.data)} bytes")
            return
        if self.gripper_open is None:
            return
        self.last_scored = stamp
        probability = float(self.classifier.net.probabilities(frame))
        self.score_pub.publish(Float32(data=probability))
        self._publish(self.debouncer.update(probability, self.gripper_open))

    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is None:
            return
        if event.get("type") == "start" and self.debouncer is not None:
            self.debouncer.reset()  # consecutive frames count within one episode
            self.last_scored = None
        elif event.get("type") == "use_detector":
            self.use_detector(str(event.get("detector", "")))

    def _publish(self, success: bool) -> None:
        self.reward_pub.publish(Float32(data=step_reward(success, self.cfg.reward)))
        self.success_pub.publish(Bool(data=success))


def main(args=None) -> int:
    return common.run_node(RewardNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
