"""WidowX-250 control node: executes `robot/action` through the shared `ArmController`.

Publishes `robot/state` (JointState: six arm joints plus `gripper`, 1 = open) and `robot/ee_pose`
after each command and at the control rate, `robot/status` (JSON) at 1 Hz; serves `robot/estop`,
`robot/estop_clear` and `robot/home`. The action's step id travels in `layout.data_offset`.
"""

from __future__ import annotations

import json

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from parl_robot.nodes import common
from parl_robot.robot.arm_controller import ArmController
from parl_robot.sim.world import SimWorld


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a 3x3 rotation matrix."""
    w = np.sqrt(max(0.0, 1 + rotation[0, 0] + rotation[1, 1] + rotation[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + rotation[0, 0] - rotation[1, 1] - rotation[2, 2])) / 2, rotation[2, 1] - rotation[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - rotation[0, 0] + rotation[1, 1] - rotation[2, 2])) / 2, rotation[0, 2] - rotation[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - rotation[0, 0] - rotation[1, 1] + rotation[2, 2])) / 2, rotation[1, 0] - rotation[0, 1])
    return np.array([w, x, y, z])


class ControlNode(Node):
    def __init__(self, name: str = "control_node", backend=None):
        super().__init__(name)
        self.cfg = common.declare_task_config(self)
        self.backend_name = self.declare_parameter("backend", "interbotix").value
        robot_model = self.declare_parameter("robot_model", "wx250s").value
        if backend is None:
            backend = self._make_backend(self.backend_name, robot_model)
        self.backend = backend
        self.controller = ArmController(self.cfg.control, backend)
        self.exit_code = None
        self.state_pub = self.create_publisher(JointState, common.ROBOT_STATE, common.SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, common.ROBOT_EE_POSE, common.SENSOR_QOS)
        self.status_pub = self.create_publisher(String, common.ROBOT_STATUS, common.EVENT_QOS)
        self.create_subscription(Float32MultiArray, common.ROBOT_ACTION, self.on_action, common.COMMAND_QOS)
        self.create_service(Trigger, common.SRV_ESTOP, self.on_estop)
        self.create_service(Trigger, common.SRV_ESTOP_CLEAR, self.on_estop_clear)
        self.create_service(Trigger, common.SRV_HOME, self.on_home)
        self.create_timer(self.controller.period / 2, self.on_watchdog_tick)
        self.create_timer(1.0, self.publish_status)
        self.controller.go_home()
        self.publish_state()

    def _make_backend(self, name: str, robot_model: str):
        if name == "interbotix":
            from parl_robot.robot.backend import InterbotixArmBackend

            return InterbotixArmBackend(robot_model, moving_time=1.0 / self.cfg.control.rate_hz)
        if name == "sim":
            from parl_robot.robot.backend import SimArmBackend

            return SimArmBackend(SimWorld(self.cfg.task.name, self.cfg.sim))
        raise ValueError(f"unknown control backend '{name}' (use 'interbotix' or 'sim')")

    def on_action(self, msg: Float32MultiArray) -> None:
        command = self.controller.handle_action(msg.data)
        if command is None:
            self.get_logger().warning(f"action {msg.layout.data_offset} refused: {self.controller.status.last_error}")
            return
        self.after_command()

    def after_command(self) -> None:
        self.publish_state()

    def on_watchdog_tick(self) -> None:
        if self.controller.check_watchdog():
            self.get_logger().info("watchdog: no fresh action, holding still")
        self.publish_state()

    def publish_state(self) -> None:
        stamp = self.get_clock().now().to_msg()
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = [*self.backend.joint_names, "gripper"]
        joints.position = [*map(float, self.backend.joint_positions()), float(self.backend.gripper_open())]
        self.state_pub.publish(joints)
        position, rotation = self.backend.ee_pose()
        pose = PoseStamped()
        pose.header.stamp = stamp
        pose.header.frame_id = "wx250s/base_link"
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = map(float, position)
        w, x, y, z = rotation_to_quaternion(rotation)
        pose.pose.orientation.w, pose.pose.orientation.x = float(w), float(x)
        pose.pose.orientation.y, pose.pose.orientation.z = float(y), float(z)
        self.pose_pub.publish(pose)

    def publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(vars(self.controller.status))))

    def on_estop(self, request, response):
        self.controller.estop()
        self.get_logger().error("E-STOP: latched; actions refused until robot/estop_clear")
        self.publish_status()
        response.success, response.message = True, "e-stop latched"
        return response

    def on_estop_clear(self, request, response):
        self.controller.clear_estop()
        response.success, response.message = True, "e-stop cleared"
        return response

    def on_home(self, request, response):
        response.success = self.controller.go_home()
        response.message = "home" if response.success else "refused: e-stop latched"
        self.after_command()
        return response

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close:
            close()


def main(args=None) -> int:
    return common.run_node(ControlNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
