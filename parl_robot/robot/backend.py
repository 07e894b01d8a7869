"""Arm backends behind one interface: the MuJoCo twin, and the Interbotix driver on hardware."""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

import numpy as np

from parl_robot.robot import widowx
from parl_robot.robot.safety import EECommand
from parl_robot.robot.widowx import JOINT_NAMES


class HomingError(RuntimeError):
    """A homing or parking move could not be made or did not arrive; the arm holds where it is."""


class HomingAborted(HomingError):
    """E-stop pre-empted a homing or parking move."""


class ArmBackend(Protocol):
    joint_names: tuple[str, ...]

    def execute(self, command: EECommand, duration: float) -> bool:
        """Start moving to `command` (non-blocking on hardware). False when the driver refuses the pose
        (no IK solution within the joint position and speed limits, or a hold is latched): the arm does
        not move and the gripper is not commanded."""

    def hold(self) -> None:
        """Stop at once where the arm is now and refuse every command until `release_hold`."""

    def release_hold(self) -> None:
        """Accept commands again, re-anchored on the measured joints."""

    def go_home(self, neutral_joints: np.ndarray, lift_height: float) -> None:
        """Blocking joint-space move to the neutral pose, lifting the gripper to `lift_height` first.
        Raises HomingError when it cannot get there (HomingAborted when a hold pre-empts it)."""

    def joint_positions(self) -> np.ndarray:
        """Measured joint angles (rad)."""

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured gripper position (m) and rotation."""

    def gripper_opening(self) -> float:
        """Measured gripper opening, 0 = closed, 1 = open."""

    def motor_faults(self) -> dict[str, int]:
        """Motors reporting a hardware error: name -> Hardware_Error_Status (empty when all are fine)."""

    def reboot_motors(self) -> None: ...


class SimArmBackend:
    """Drives a `SimWorld` (the world is shared with the sim camera and object publishers).

    Targets are accepted or refused as the real driver would (robot/widowx.solve_ik seeded with the
    current joints, the joint position limits, and the speed limit over the moving time); the motion
    itself is the world's damped-least-squares tracking. `moving_time` is the real arm's trajectory
    time for one step (the speed check uses it, as the Interbotix API does)."""

    joint_names = JOINT_NAMES

    def __init__(self, world, moving_time: float = 0.25):
        self.world = world
        self.moving_time = moving_time
        self.held = False
        self.last_ik_error = 0.0

    def execute(self, command: EECommand, duration: float) -> bool:
        if self.held:
            return False
        current = self.world.joint_positions()
        joints, solved = widowx.solve_ik(widowx.pose_matrix(command.position, command.rotation), guesses=(current,))
        if not solved or np.any(np.abs(joints - current) / self.moving_time > widowx.JOINT_VELOCITY_LIMIT):
            return False
        self.last_ik_error = self.world.execute(command, duration)
        return True

    def hold(self) -> None:
        """The kinematic sim arm finishes each command inside `execute`: nothing is left in motion."""
        self.held = True

    def release_hold(self) -> None:
        self.held = False

    def go_home(self, neutral_joints: np.ndarray, lift_height: float) -> None:
        if self.held:
            raise HomingAborted("hold latched")
        self.world.grasped = None
        self.world.set_arm(np.asarray(neutral_joints, float), gripper_open=True)

    def joint_positions(self) -> np.ndarray:
        return self.world.joint_positions()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.world.ee_pose()

    def gripper_opening(self) -> float:
        return 1.0 if self.world.gripper_open else 0.0

    def motor_faults(self) -> dict[str, int]:
        return {}

    def reboot_motors(self) -> None:
        pass


INTERBOTIX_INSTALL_HINT = (
    "the hardware backend needs Trossen's interbotix_xs_modules (interbotix_ros_toolboxes, humble branch) "
    "and a running driver: `ros2 launch interbotix_xsarm_control xsarm_control.launch.py robot_model:=wx250s`. "
    "Install it with Trossen's ROS 2 installer (https://docs.trossenrobotics.com/interbotix_xsarms_docs/) "
    "and source its workspace; or run with sim:=true"
)
INTERBOTIX_NODE_NAME = "parl_interbotix"  # the API's hidden node; named here, never by a launch remap
FINGER_CLOSED_M, FINGER_OPEN_M = 0.015, 0.037  # left finger joint limits (wx250s URDF)


class InterbotixArmBackend:
    """WidowX-250 through `InterbotixManipulatorXS` (interbotix_ros_toolboxes humble), non-blocking at
    the control rate.

    How it uses the API (its behaviour: robot/interbotix_emulator.py, tests/test_interbotix_backend.py):
    - The acting trajectory profile is written to the motor registers once at start-up: the
      constructor only stores it (the API writes registers only when the value changes).
    - Each step solves IK without moving (`set_ee_pose_matrix(..., execute=False)`, seeded with the
      last joint commands), then publishes with `set_joint_positions` unless a hold was latched in
      between, so an e-stop that arrives during an IK solve wins. The gripper is commanded only on
      steps the arm accepted, and only when its open/closed state changes (`delay=0`: never blocks).
    - Homing and parking are joint-space moves: the API checks joint speed against its *stored*
      moving time, so the trajectory time is set before each move (long enough for the largest joint
      change at `home_joint_speed`), arrival is checked on the measured joints, and the acting time
      is restored afterwards. A hold pre-empts the wait.
    - State is measured: `get_joint_positions()`, FK of them, `gripper.get_finger_position()`.
    """

    joint_names = JOINT_NAMES

    def __init__(
        self,
        robot_model: str = "wx250s",
        moving_time: float = 0.25,
        accel_time: float = 0.1,
        home_joint_speed: float = 1.0,
        home_tolerance: float = 0.03,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        try:
            from interbotix_common_modules.common_robot.robot import robot_shutdown, robot_startup
            from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
        except ImportError as err:
            raise RuntimeError(f"{err}: {INTERBOTIX_INSTALL_HINT}") from err
        self._shutdown = robot_shutdown
        self.moving_time = moving_time
        self.accel_time = accel_time
        self.home_joint_speed = home_joint_speed
        self.home_tolerance = home_tolerance
        self.clock = clock
        self.sleep = sleep
        self.bot = InterbotixManipulatorXS(
            robot_model=robot_model, group_name="arm", gripper_name="gripper",
            moving_time=moving_time, accel_time=accel_time, node_name=INTERBOTIX_NODE_NAME,
        )
        robot_startup()
        self._command_lock = threading.Lock()  # one command at a time reaches the API
        self._held = threading.Event()
        self._gripper_open: bool | None = None
        core = self.bot.core
        core.robot_set_motor_registers("group", "arm", "Profile_Velocity", int(moving_time * 1000))
        core.robot_set_motor_registers("group", "arm", "Profile_Acceleration", int(accel_time * 1000))

    # ----- acting -----------------------------------------------------------------------------
    def execute(self, command: EECommand, duration: float) -> bool:
        if self._held.is_set():
            return False
        arm = self.bot.arm
        joints, solved = arm.set_ee_pose_matrix(
            widowx.pose_matrix(command.position, command.rotation), custom_guess=arm.get_joint_commands(), execute=False
        )
        if not solved:
            return False
        with self._command_lock:
            if self._held.is_set():
                return False
            moved = arm.set_joint_positions(
                [float(j) for j in joints], moving_time=self.moving_time, accel_time=self.accel_time, blocking=False
            )
        if moved:
            self._set_gripper(command.gripper_open)
        return bool(moved)

    def _set_gripper(self, gripper_open: bool) -> None:
        if gripper_open != self._gripper_open:
            if gripper_open:
                self.bot.gripper.release(delay=0.0)
            else:
                self.bot.gripper.grasp(delay=0.0)
            self._gripper_open = gripper_open

    def hold(self) -> None:
        self._held.set()
        with self._command_lock:
            arm = self.bot.arm
            # Re-command the positions the encoders read now: the motors stop where they are.
            arm.capture_joint_positions()
            arm.set_joint_positions(arm.get_joint_commands(), moving_time=self.moving_time, accel_time=self.accel_time, blocking=False)

    def release_hold(self) -> None:
        with self._command_lock:
            self.bot.arm.capture_joint_positions()  # IK seeds and speed checks start from where the arm is
            self._held.clear()

    # ----- homing and parking ------------------------------------------------------------------
    def go_home(self, neutral_joints: np.ndarray, lift_height: float) -> None:
        self._lift(lift_height, np.asarray(neutral_joints, float))
        self._move_joints(np.asarray(neutral_joints, float), "the neutral pose")
        self.bot.gripper.release(delay=0.0)
        self._gripper_open = True

    def park(self, neutral_joints: np.ndarray, lift_height: float) -> None:
        """Lift, go to the neutral pose, then to the sleep pose (motors can be torqued off there)."""
        self._lift(lift_height, np.asarray(neutral_joints, float))
        self._move_joints(np.asarray(neutral_joints, float), "the neutral pose")
        self._move_joints(widowx.SLEEP_JOINTS, "the sleep pose")

    def _lift(self, lift_height: float, neutral_joints: np.ndarray) -> None:
        """Raise the gripper before any joint-space move, so it does not sweep through the scene.

        Straight up to `lift_height` when reachable; else up while retracting halfway toward the
        neutral pose; else 5 cm up. The IK is the API's (robot/widowx.solve_ik) without its speed check,
        which `_move_joints` satisfies by setting the trajectory time first."""
        position, rotation = self.ee_pose()
        if position[2] >= lift_height - 0.01:
            return
        current = self.joint_positions()
        neutral_xy = widowx.forward_kinematics(neutral_joints)[:2, 3]
        halfway_xy = (position[:2] + neutral_xy) / 2
        candidates = [
            np.array([*position[:2], lift_height]),
            np.array([*halfway_xy, lift_height]),
            np.array([*position[:2], min(lift_height, position[2] + 0.05)]),
            np.array([*halfway_xy, min(lift_height, position[2] + 0.05)]),
        ]
        for target in candidates:
            joints, solved = widowx.solve_ik(widowx.pose_matrix(target, rotation), guesses=(current,))
            if solved:
                self._move_joints(joints, f"the lift point {np.round(target, 3).tolist()}")
                return
        raise HomingError(f"cannot lift the gripper from {np.round(position, 3).tolist()}: no IK solution above it; "
                          "move the arm up by hand (torque off) or with small actions, then home")

    def _move_joints(self, target: np.ndarray, what: str) -> None:
        start = self.joint_positions()
        moving_time = max(1.0, float(np.max(np.abs(target - start))) / self.home_joint_speed)
        accel_time = moving_time / 4
        arm = self.bot.arm
        try:
            with self._command_lock:
                if self._held.is_set():
                    raise HomingAborted(f"e-stop before the move to {what}")
                arm.capture_joint_positions()  # the speed check compares against the last commands
                arm.set_trajectory_time(moving_time=moving_time, accel_time=accel_time)  # checked with this time
                accepted = arm.set_joint_positions([float(j) for j in target], moving_time=moving_time,
                                                   accel_time=accel_time, blocking=False)
            if not accepted:
                raise HomingError(f"the driver refused the move to {what} {np.round(target, 3).tolist()} (joint limits)")
            deadline = self.clock() + moving_time + max(1.0, moving_time / 2)
            while True:
                if self._held.is_set():
                    raise HomingAborted(f"e-stop during the move to {what}")
                error = np.abs(self.joint_positions() - target)
                if np.max(error) <= self.home_tolerance:
                    return
                if self.clock() > deadline:
                    worst = int(np.argmax(error))
                    raise HomingError(
                        f"the arm did not reach {what}: {JOINT_NAMES[worst]} is {error[worst]:.3f} rad away after "
                        f"{moving_time:.1f} s (blocked, or a motor fault?)"
                    )
                self.sleep(0.02)
        finally:
            with self._command_lock:
                arm.set_trajectory_time(moving_time=self.moving_time, accel_time=self.accel_time)

    # ----- measured state and faults ------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        return np.asarray(self.bot.arm.get_joint_positions(), dtype=float)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = np.asarray(self.bot.arm.get_ee_pose(), dtype=float)
        return pose[:3, 3].copy(), pose[:3, :3].copy()

    def gripper_opening(self) -> float:
        finger = float(self.bot.gripper.get_finger_position())
        return float(np.clip((finger - FINGER_CLOSED_M) / (FINGER_OPEN_M - FINGER_CLOSED_M), 0.0, 1.0))

    def motor_faults(self) -> dict[str, int]:
        core = self.bot.core
        arm = core.robot_get_motor_registers("group", "arm", "Hardware_Error_Status")
        gripper = core.robot_get_motor_registers("single", "gripper", "Hardware_Error_Status")
        return {name: int(value) for name, value in zip((*JOINT_NAMES, "gripper"), [*arm, *gripper]) if value}

    def reboot_motors(self) -> None:
        core = self.bot.core
        core.robot_reboot_motors("group", "arm", True, True)
        core.robot_reboot_motors("single", "gripper", True, False)
        with self._command_lock:
            self.bot.arm.capture_joint_positions()

    def close(self) -> None:
        """Shut the Interbotix API down (this also shuts down the process's rclpy context)."""
        self._shutdown()
