"""Arm backends behind one interface: the MuJoCo twin, and the Interbotix driver on hardware."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from parl_robot.robot.safety import EECommand
from parl_robot.robot.widowx import JOINT_NAMES


class ArmBackend(Protocol):
    joint_names: tuple[str, ...]

    def execute(self, command: EECommand, duration: float) -> bool:
        """Start moving to `command`, reaching it within `duration` seconds (non-blocking on hardware).
        False when the pose has no IK solution within the joint limits (the arm does not move)."""

    def hold(self) -> None:
        """Stop at once where the arm is now (e-stop), instead of finishing the last command."""

    def go_home(self, position: np.ndarray, rotation: np.ndarray) -> None:
        """Blocking move to the fixed start pose."""

    def joint_positions(self) -> np.ndarray: ...

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]: ...

    def gripper_open(self) -> bool: ...


class SimArmBackend:
    """Drives a `SimWorld` (the world is shared with the sim camera and object publishers)."""

    joint_names = JOINT_NAMES

    def __init__(self, world):
        self.world = world

    def execute(self, command: EECommand, duration: float) -> bool:
        self.world.execute(command, duration)  # damped least squares always returns the closest pose
        return True

    def hold(self) -> None:
        """The kinematic sim arm finishes each command inside `execute`: nothing is left in motion."""

    def go_home(self, position: np.ndarray, rotation: np.ndarray) -> None:
        joints, _ = self.world.solve_ik(position, rotation)
        self.world.grasped = None
        self.world.set_arm(joints, gripper_open=True)

    def joint_positions(self) -> np.ndarray:
        return self.world.joint_positions()

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        return self.world.ee_pose()

    def gripper_open(self) -> bool:
        return self.world.gripper_open


INTERBOTIX_INSTALL_HINT = (
    "the hardware backend needs Trossen's interbotix_xs_modules (interbotix_ros_toolboxes, humble branch) "
    "and a running driver: `ros2 launch interbotix_xsarm_control xsarm_control.launch.py robot_model:=wx250s`. "
    "Install it with Trossen's ROS 2 installer (https://docs.trossenrobotics.com/interbotix_xsarms_docs/) "
    "and source its workspace; or run with sim:=true"
)


class InterbotixArmBackend:
    """WidowX-250 through `InterbotixManipulatorXS`, commanded non-blocking at the control rate.

    Method names and keyword arguments follow interbotix_ros_toolboxes (humble branch,
    interbotix_xs_modules/xs_robot/arm.py and gripper.py; checked by tests/test_interbotix_backend.py):
    `set_ee_pose_matrix(T_sd, custom_guess, execute, moving_time, accel_time, blocking) -> (theta, ok)`
    solves IK with modern_robotics and publishes only when a solution within the joint position and
    velocity limits exists. The trajectory time stays at one value while acting, because every change
    writes the Profile_Velocity/Profile_Acceleration registers through a service call. The gripper
    (PWM mode) is commanded only when its open/closed state changes, with `delay=0` so nothing blocks.
    """

    joint_names = JOINT_NAMES

    def __init__(self, robot_model: str = "wx250s", moving_time: float = 0.2, home_moving_time: float = 1.5):
        try:
            from interbotix_common_modules.common_robot.robot import robot_shutdown, robot_startup
            from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
        except ImportError as err:
            raise RuntimeError(f"{err}: {INTERBOTIX_INSTALL_HINT}") from err
        self._shutdown = robot_shutdown
        self.moving_time = moving_time
        self.accel_time = moving_time / 4
        self.home_moving_time = home_moving_time
        self.bot = InterbotixManipulatorXS(
            robot_model=robot_model, group_name="arm", gripper_name="gripper",
            moving_time=moving_time, accel_time=self.accel_time,
        )
        robot_startup()
        self._gripper_open: bool | None = None

    def execute(self, command: EECommand, duration: float) -> bool:
        pose = np.eye(4)
        pose[:3, :3] = command.rotation
        pose[:3, 3] = command.position
        _, solved = self.bot.arm.set_ee_pose_matrix(
            pose, custom_guess=self.bot.arm.get_joint_commands(), execute=True,
            moving_time=self.moving_time, accel_time=self.accel_time, blocking=False,
        )
        self._set_gripper(command.gripper_open)
        return bool(solved)

    def _set_gripper(self, gripper_open: bool) -> None:
        if gripper_open != self._gripper_open:
            if gripper_open:
                self.bot.gripper.release(delay=0.0)
            else:
                self.bot.gripper.grasp(delay=0.0)
            self._gripper_open = gripper_open

    def hold(self) -> None:
        # Re-command the positions the encoders read now: the motors stop where they are.
        self.bot.arm.capture_joint_positions()
        self.bot.arm.set_joint_positions(
            self.bot.arm.get_joint_commands(), moving_time=self.moving_time, accel_time=self.accel_time, blocking=False
        )

    def go_home(self, position: np.ndarray, rotation: np.ndarray) -> None:
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, position
        self.bot.gripper.release(delay=0.5)
        self._gripper_open = True
        _, solved = self.bot.arm.set_ee_pose_matrix(
            pose, execute=True, moving_time=self.home_moving_time, accel_time=self.home_moving_time / 4, blocking=True
        )
        # Back to the acting trajectory time once, not on the first action of the episode.
        self.bot.arm.set_trajectory_time(moving_time=self.moving_time, accel_time=self.accel_time)
        if not solved:
            raise RuntimeError(f"home pose {np.round(position, 3).tolist()} has no IK solution: check control.home_xyz")

    def joint_positions(self) -> np.ndarray:
        return np.asarray(self.bot.arm.get_joint_commands(), dtype=float)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = np.asarray(self.bot.arm.get_ee_pose(), dtype=float)
        return pose[:3, 3].copy(), pose[:3, :3].copy()

    def gripper_open(self) -> bool:
        return bool(self._gripper_open)

    def close(self) -> None:
        """Park the arm in its sleep pose (motors can then be torqued off safely) and shut down."""
        try:
            self.bot.arm.go_to_sleep_pose(moving_time=2.0, accel_time=0.5, blocking=True)
        finally:
            self._shutdown()
