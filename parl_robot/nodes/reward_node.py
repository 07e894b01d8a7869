"""Reward detector node: sparse success from detected object positions and the gripper state.

Consumes `objects/poses` (JSON {name: [x, y, z]} in the robot base frame: ground truth in sim,
the perception pipeline on hardware) and `robot/state` (its `gripper` entry, 1 = open); publishes
`reward` (Float32, biased so success is 0) and `reward/success` (Bool) for every object update.
An occluded object counts at its last seen position (the detector's object permanence): while the
gripper holds it the gripper is closed, so that is no success; after release it is seen again.
"""

from __future__ import annotations

from rclpy.node import Node
from sensor_msgs.msg import JointState
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
        self.create_subscription(String, common.OBJECT_POSES, self.on_objects, common.SENSOR_QOS)

    def on_state(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self.gripper_open = msg.position[list(msg.name).index("gripper")] > 0.5

    def on_objects(self, msg: String) -> None:
        poses = decode_object_poses(msg.data)
        position = None if poses is None else poses.positions.get(self.cfg.reward.object_name)
        if position is None:
            self.get_logger().warning(f"ignoring object message without a position for '{self.cfg.reward.object_name}'")
            return
        if self.gripper_open is None:
            return
        success = is_success(position, self.gripper_open, self.cfg.reward)
        self.reward_pub.publish(Float32(data=step_reward(success, self.cfg.reward)))
        self.success_pub.publish(Bool(data=success))


def main(args=None) -> int:
    return common.run_node(RewardNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
