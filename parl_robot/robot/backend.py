"""Arm backends behind one interface: the MuJoCo twin, and the Interbotix driver on hardware."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from parl_robot.robot.safety import EECommand
from parl_robot.sim.widowx_model import JOINT_NAMES


class ArmBackend(Protocol):
    joint_names: tuple[str, ...]

    def execute(self, command: EECommand, duration: float) -> None:
        """Start moving to `command`, reaching it within `duration` seconds (non-blocking on hardware)."""

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

    def execute(self, command: EECommand, duration: float) -> None:
        self.world.execute(command, duration)

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

    The trajectory time is set once (each change writes motor registers through a service); IK is
    seeded with the last joint commands; the gripper is only commanded when its state changes.
    """

    joint_names = JOINT_NAMES

    def __init__(self, robot_model: str = "wx250s", moving_time: float = 0.2):
        try:
            from interbotix_common_modules.common_robot.robot import robot_shutdown, robot_startup
            from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS
        except ImportError as err:
            raise RuntimeError(f"{err}: {INTERBOTIX_INSTALL_HINT}") from err
        self._shutdown = robot_shutdown
        self.bot = InterbotixManipulatorXS(
            robot_model=robot_model, group_name="arm", gripper_name="gripper",
            moving_time=moving_time, accel_time=moving_time / 4,
        )
        robot_startup()
        self.moving_time = moving_time
        self._gripper_open: bool | None = None

    def execute(self, command: EECommand, duration: float) -> None:
        pose = np.eye(4)
        pose[:3, :3] = command.rotation
        pose[:3, 3] = command.position
        self.bot.arm.set_ee_pose_matrix(
            pose, custom_guess=self.bot.arm.get_joint_commands(), execute=True,
            moving_time=self.moving_time, accel_time=self.moving_time / 4, blocking=False,
        )
        if command.gripper_open != self._gripper_open:
            (self.bot.gripper.release if command.gripper_open else self.bot.gripper.grasp)(0.0)
            self._gripper_open = command.gripper_open

    def go_home(self, position: np.ndarray, rotation: np.ndarray) -> None:
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, position
        self.bot.gripper.release(0.5)
        self._gripper_open = True
        self.bot.arm.set_ee_pose_matrix(pose, moving_time=1.0, accel_time=0.3, blocking=True)

    def joint_positions(self) -> np.ndarray:
        return np.asarray(self.bot.arm.get_joint_commands(), dtype=float)

    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = np.asarray(self.bot.arm.get_ee_pose(), dtype=float)
        return pose[:3, 3].copy(), pose[:3, :3].copy()

    def gripper_open(self) -> bool:
        return bool(self._gripper_open)

    def close(self) -> None:
        self._shutdown()
