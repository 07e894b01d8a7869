"""WidowX-250 control node: executes `robot/action` through the shared `ArmController`.

Publishes `robot/state` (JointState: six measured arm joints plus `gripper`, the measured opening,
1 = open) and `robot/ee_pose` (measured) at the control rate, `robot/status` (JSON) at 1 Hz and
`robot/safety` (JSON, latched: state `ok`/`held`, reasons, fault, since) on every change and at 1 Hz;
serves `robot/estop`, `robot/estop_clear`, `robot/home` and `robot/reboot_motors`. The action's step
id travels in `layout.data_offset`.

Threads: the node spins a multi-threaded executor. E-stop has a callback group of its own, so it is
served while a homing move blocks the home service or an IK solve runs in the action callback; the
motor-error poll has its own group too. Start-up homes the arm (a failure is reported and the arm
held, not a crash); shutdown (Ctrl-C, SIGTERM) parks it — lift, neutral, sleep pose — unless a hold
is latched, and only then shuts the Interbotix API down.
"""

from __future__ import annotations

import json
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Float32MultiArray, String
from std_srvs.srv import Trigger

from parl_robot.nodes import common
from parl_robot.robot.arm_controller import ArmController
from parl_robot.robot.teleop import HELD, InterventionArbiter, JoyMapping

EXECUTOR_THREADS = 4
CAMERA_LOST_AFTER_S = 1.0  # newest frame older than this: the camera counts as lost (ANCHOR: > 1 s is an error)
BACKENDS = ("interbotix", "interbotix_emulated", "sim")


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """(w, x, y, z) of a 3x3 rotation matrix."""
    w = np.sqrt(max(0.0, 1 + rotation[0, 0] + rotation[1, 1] + rotation[2, 2])) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + rotation[0, 0] - rotation[1, 1] - rotation[2, 2])) / 2, rotation[2, 1] - rotation[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - rotation[0, 0] + rotation[1, 1] - rotation[2, 2])) / 2, rotation[0, 2] - rotation[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - rotation[0, 0] - rotation[1, 1] + rotation[2, 2])) / 2, rotation[1, 0] - rotation[0, 1])
    return np.array([w, x, y, z])


class ControlNode(Node):
    def __init__(self, name: str = "control", backend=None):
        super().__init__(name)
        self.cfg = common.declare_task_config(self)
        self.backend_name = self.declare_parameter("backend", "interbotix").value
        robot_model = self.declare_parameter("robot_model", "wx250s").value
        self.exit_code = None
        self._safety_since = time.time()
        self._last_safety: dict | None = None
        control = self.cfg.control
        period = 1.0 / control.rate_hz
        if backend is None:
            backend = self._make_backend(self.backend_name, robot_model, control.moving_time_periods * period,
                                         control.accel_time_periods * period)
        self.backend = backend
        # Watchdog and rate on ROS time: the steady clock on hardware, sim time in lockstep simulation.
        clock = (lambda: common.node_seconds(self)) if common.uses_sim_time(self) else time.monotonic
        self.controller = ArmController(control, backend, clock=clock)
        self.state_pub = self.create_publisher(JointState, common.ROBOT_STATE, common.SENSOR_QOS)
        self.pose_pub = self.create_publisher(PoseStamped, common.ROBOT_EE_POSE, common.SENSOR_QOS)
        self.status_pub = self.create_publisher(String, common.ROBOT_STATUS, common.EVENT_QOS)
        self.safety_pub = self.create_publisher(String, common.ROBOT_SAFETY, common.LATCHED_QOS)
        acting = MutuallyExclusiveCallbackGroup()  # actions, homing and the world (sim) never interleave
        self.acting_group = acting
        estop = MutuallyExclusiveCallbackGroup()
        supervision = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Float32MultiArray, common.ROBOT_ACTION, self.on_action, common.COMMAND_QOS,
                                 callback_group=acting)
        # Interventions: the operator's teleop replaces the policy's action while it holds control.
        self.arbiter = InterventionArbiter(self.cfg.teleop.stream_timeout_s,
                                           self.cfg.teleop.stream_timeout_s + self.controller.watchdog_timeout, clock)
        self.joy = JoyMapping(self.cfg.teleop)
        self.executed_pub = self.create_publisher(String, common.ROBOT_EXECUTED, common.COMMAND_QOS)
        # Teleop in its own group, reliable and queued: a take-over press (an edge between two Joy messages)
        # is never dropped or delayed behind a busy control step. The arbiter locks its own state.
        teleop = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Joy, common.TELEOP_JOY, self.on_joy, common.COMMAND_QOS, callback_group=teleop)
        self.create_subscription(Float32MultiArray, common.TELEOP_ACTION, self.on_teleop_action, common.COMMAND_QOS,
                                 callback_group=teleop)
        self.create_service(Trigger, common.SRV_ESTOP, self.on_estop, callback_group=estop)
        self.create_service(Trigger, common.SRV_ESTOP_CLEAR, self.on_estop_clear, callback_group=acting)
        self.create_service(Trigger, common.SRV_HOME, self.on_home, callback_group=acting)
        self.create_service(Trigger, common.SRV_REBOOT_MOTORS, self.on_reboot_motors, callback_group=supervision)
        # camera_lost: judged from the camera node's status (hardware); the sim bridge knows its own camera.
        self._camera_status_time: float | None = None
        self._camera_ok = True
        if self.backend_name != "sim":
            self.create_subscription(String, common.CAMERA_STATUS, self.on_camera_status, common.EVENT_QOS,
                                     callback_group=supervision)
        self.create_timer(self.controller.period / 2, self.on_watchdog_tick, callback_group=acting)
        common.wall_timer(self, 1.0, self.publish_status, callback_group=supervision)
        common.wall_timer(self, control.motor_poll_period_s, self.on_motor_poll, callback_group=supervision)
        self.peer_check = common.start_peer_check(self, callback_group=supervision)  # role:=robot: is the learner there?
        if not self.controller.go_home():
            self.get_logger().error(f"start-up: {self.controller.status.last_error}; the arm holds where it is "
                                    "(fix the cause, then call robot/home)")
        self.publish_state()
        self.publish_safety()

    def _make_backend(self, name: str, robot_model: str, moving_time: float, accel_time: float):
        control = self.cfg.control
        if name in ("interbotix", "interbotix_emulated"):
            from parl_robot.robot.backend import InterbotixArmBackend

            if name == "interbotix_emulated":  # the arm-free rehearsal: the real backend on the emulated API
                from parl_robot.robot import interbotix_emulator

                interbotix_emulator.install(interbotix_emulator.EmulatedDriver())
            return InterbotixArmBackend(robot_model, moving_time=moving_time, accel_time=accel_time,
                                        home_joint_speed=control.home_joint_speed_rad_s,
                                        home_tolerance=control.home_tolerance_rad)
        if name == "sim":
            from parl_robot.robot.backend import SimArmBackend
            from parl_robot.sim.world import SimWorld  # MuJoCo only where the sim runs

            return SimArmBackend(SimWorld(self.cfg.task.name, self.cfg.sim), moving_time=moving_time)
        raise ValueError(f"unknown control backend '{name}' (use one of {', '.join(BACKENDS)})")

    # ----- acting -------------------------------------------------------------------------------
    def on_action(self, msg: Float32MultiArray) -> None:
        """One control step, paced by the policy's action; the arbiter decides whose action it executes."""
        step = int(msg.layout.data_offset)
        decision = self.arbiter.decide(np.asarray(msg.data, float) if len(msg.data) == 7 else np.asarray(msg.data))
        if decision.source == HELD:
            self.publish_executed(step, None, HELD, "the operator holds control but the teleop stream is quiet")
            return
        command = self.controller.handle_action(decision.action)
        if command is None:
            self.get_logger().warning(f"action {step} refused: {self.controller.status.last_error}")
            self.publish_executed(step, None, decision.source, self.controller.status.last_error)
            self.publish_safety()
            return
        self.publish_executed(step, decision.action, decision.source, "")
        self.after_command()

    def publish_executed(self, step: int, action, source: str, refused: str) -> None:
        self.executed_pub.publish(String(data=json.dumps({
            "step": step, "action": None if action is None else [round(float(v), 6) for v in action],
            "source": source, "refused": bool(refused), "reason": refused})))

    # ----- teleop ---------------------------------------------------------------------------------
    def on_joy(self, msg) -> None:
        action, toggled = self.joy.action(list(msg.axes), list(msg.buttons))
        takeover = (not self.arbiter.active) if toggled else None
        if takeover:  # bumpless: the operator's gripper starts as the arm's
            action = self.joy.start_from_arm(action, self.backend.gripper_opening() > 0.5)
        self.arbiter.operator_input(action, takeover=takeover)
        if toggled:
            self.get_logger().info("operator took over (joystick)" if self.arbiter.active else "operator released control")

    def on_teleop_action(self, msg: Float32MultiArray) -> None:
        label = msg.layout.dim[0].label if msg.layout.dim else "takeover"
        if len(msg.data) != 7 or not np.all(np.isfinite(msg.data)) or label not in ("takeover", "release"):
            self.get_logger().warning("teleop/action ignored: 7 finite values with dim label takeover|release expected")
            return
        was_active = self.arbiter.active
        # The page starts its gripper command from the arm's (robot/state) when it takes over.
        self.arbiter.operator_input(np.asarray(msg.data, float), takeover=label == "takeover")
        if was_active != self.arbiter.active:
            self.get_logger().info("operator took over (page)" if self.arbiter.active else "operator released control")

    def after_command(self) -> None:
        self.publish_state()

    def on_watchdog_tick(self) -> None:
        if self.controller.check_watchdog():
            self.get_logger().info("watchdog: no fresh action, holding still")
        if self.controller.check_tracking():
            self.get_logger().error(f"HOLD: {self.controller.status.fault}")
        camera_ok = self.camera_ok()
        if self.controller.set_camera_lost(not camera_ok):
            if camera_ok:
                self.get_logger().info("camera back: the hold is released")
            else:
                self.get_logger().error("HOLD: camera lost; actions refused until it is back")
        self.publish_state()
        self.publish_safety()

    def on_camera_status(self, msg: String) -> None:
        status = common.parse_json_object(msg) or {}
        self._camera_status_time = time.monotonic()
        self._camera_ok = bool(status.get("connected")) and not status.get("frozen") and float(status.get("age_s") or 0) <= CAMERA_LOST_AFTER_S

    def camera_ok(self) -> bool:
        """No camera status yet counts as fine (a camera never seen is the learner's business); silent
        status for 3 s, a disconnected, frozen or stale camera means lost."""
        if self._camera_status_time is None:
            return True
        return self._camera_ok and time.monotonic() - self._camera_status_time < 3.0

    def on_motor_poll(self) -> None:
        try:
            tripped = self.controller.check_motors()
        except Exception as err:  # noqa: BLE001  (a failed register read is reported, not fatal)
            self.get_logger().warning(f"motor status poll failed: {type(err).__name__}: {err}")
            return
        if tripped:
            self.get_logger().error(f"HOLD: {self.controller.status.fault}")
            self.publish_safety()

    # ----- publishing -----------------------------------------------------------------------------
    def publish_state(self) -> None:
        stamp = self.get_clock().now().to_msg()
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = [*self.backend.joint_names, "gripper"]
        joints.position = [*map(float, self.backend.joint_positions()), float(self.backend.gripper_opening())]
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
        status = {**vars(self.controller.status), "intervening": self.arbiter.active,
                  "intervention_steps": self.arbiter.interventions,
                  "gripper_open": round(float(self.backend.gripper_opening()), 3),
                  "peers_missing": self.peer_check.missing if self.peer_check else []}
        self.status_pub.publish(String(data=json.dumps(status)))
        self.publish_safety(force=True)

    def safety_state(self) -> dict:
        status = self.controller.status
        return {"state": "held" if status.held_reasons else "ok", "reasons": list(status.held_reasons),
                "fault": status.fault, "watchdog_holding": status.holding, "homed": status.homed}

    def publish_safety(self, force: bool = False) -> None:
        state = self.safety_state()
        changed = self._last_safety is None or {k: state[k] for k in ("state", "reasons", "fault")} != {
            k: self._last_safety[k] for k in ("state", "reasons", "fault")}
        if changed:
            self._safety_since = time.time()
        self._last_safety = state
        if changed or force:
            self.safety_pub.publish(String(data=json.dumps({**state, "since": self._safety_since})))

    # ----- services -----------------------------------------------------------------------------
    def on_estop(self, request, response):
        self.controller.estop()
        self.get_logger().error("E-STOP: latched; actions refused until robot/estop_clear")
        self.publish_safety()
        self.publish_status()
        response.success, response.message = True, "e-stop latched"
        return response

    def on_estop_clear(self, request, response):
        problem = self.controller.clear_holds()
        self.publish_safety()
        response.success = not problem
        response.message = problem or "holds cleared; commands continue from the measured pose"
        return response

    def on_home(self, request, response):
        response.success = self.controller.go_home()
        response.message = "home" if response.success else self.controller.status.last_error
        self.after_command()
        self.publish_safety()
        return response

    def on_reboot_motors(self, request, response):
        try:
            self.controller.reboot_motors()
        except Exception as err:  # noqa: BLE001  (reported to the operator)
            response.success, response.message = False, f"reboot failed: {type(err).__name__}: {err}"
            return response
        response.success, response.message = True, "motors rebooted; clear the hold, then home"
        return response

    def close(self) -> None:
        problem = self.controller.park()
        if problem:
            self.get_logger().warning(problem)
        else:
            joints = np.round(self.backend.joint_positions(), 3).tolist()
            self.get_logger().info(f"arm parked in the sleep pose (measured joints {joints})")
        close = getattr(self.backend, "close", None)
        if close:
            close()


def main(args=None) -> int:
    return common.run_node(ControlNode, args, threads=EXECUTOR_THREADS)


if __name__ == "__main__":
    raise SystemExit(main())
