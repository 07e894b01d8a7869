"""An emulation of the Interbotix X-series driver (xs_sdk) and its Python API, for arm-free testing.

Written from interbotix_ros_toolboxes, branch `humble` (commit 8ae347e): `xs_robot/arm.py`,
`xs_robot/gripper.py`, `xs_robot/core.py`, `common_robot/robot.py`. It reproduces the behaviour that
decides whether a controller works on the real arm, including the API's failure modes:

- the arm starts in the sleep pose; measured joint states trail the commands along the motors'
  time-based profile (Profile_Velocity = moving time, Profile_Acceleration = acceleration time, in ms,
  2000 / 300 from the driver's modes.yaml until someone writes them);
- `set_trajectory_time` writes those registers only when the value differs from the stored one,
  and the constructor stores its `moving_time` first, so constructing with 0.2 s writes nothing;
- `_check_joint_limits` checks joint speed against the *stored* moving time, before the call's own
  `moving_time` is applied in `_publish_commands`;
- `set_ee_pose_matrix` runs modern_robotics `IKinSpace` from the custom guess (or the API's three
  default guesses), wraps, checks limits, returns `(theta, False)` and does not move on failure;
- blocking calls sleep the stored moving time; the gripper (PWM) moves while an effort is applied
  and stops at its finger limits; `Hardware_Error_Status` can be raised per motor (the motor then
  stops following commands until `robot_reboot_motors`), and the arm can be obstructed;
- `robot_startup` refuses a second start; `robot_shutdown` shuts the shared rclpy context down.

`install(driver)` registers the emulation under the real module names, so the project's
`InterbotixArmBackend` imports and drives it exactly as it would drive the real package.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np

from parl_robot.robot import widowx

ARM_GROUP = "arm"
GRIPPER = "gripper"
FINGER_LOWER_M = 0.015  # left finger closed (URDF limit)
FINGER_UPPER_M = 0.037  # left finger open
FINGER_SPEED_M_S = 0.08  # PWM at the default pressure
DEFAULT_PROFILE_MS = {"Profile_Velocity": 2000, "Profile_Acceleration": 300}  # modes.yaml, time profile


def _profile_fraction(elapsed: float, moving_time: float, accel_time: float) -> float:
    """Fraction of a move done after `elapsed` s on a trapezoidal time profile (Dynamixel time-based)."""
    if moving_time <= 0 or elapsed >= moving_time:
        return 1.0
    if elapsed <= 0:
        return 0.0
    accel = min(max(accel_time, 1e-6), moving_time / 2)
    peak_speed = 1.0 / (moving_time - accel)
    if elapsed < accel:
        return 0.5 * peak_speed * elapsed**2 / accel
    if elapsed <= moving_time - accel:
        return peak_speed * (elapsed - accel / 2)
    return 1.0 - 0.5 * peak_speed * (moving_time - elapsed) ** 2 / accel


class EmulatedDriver:
    """The xs_sdk driver and its motors: registers, joint states over time, faults."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.RLock()
        self.registers = dict(DEFAULT_PROFILE_MS)
        self.register_writes: list[tuple[str, int]] = []
        self.hardware_error = {name: 0 for name in (*widowx.JOINT_NAMES, GRIPPER)}
        self.reboots = 0
        self.obstructed = False
        # One time-profile segment per motor: from `_start` at `_t0` to `_target`.
        self._start = widowx.SLEEP_JOINTS.copy()
        self._target = widowx.SLEEP_JOINTS.copy()
        self._t0 = np.full(6, clock())
        self._moving_time = np.zeros(6)
        self._accel_time = np.zeros(6)
        self._finger = FINGER_UPPER_M
        self._finger_effort = 0.0
        self._finger_time = clock()
        self.group_commands: list[np.ndarray] = []

    # ----- motors -----------------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        with self.lock:
            now = self.clock()
            fractions = [_profile_fraction(now - t0, mt, at) for t0, mt, at in zip(self._t0, self._moving_time, self._accel_time)]
            return self._start + np.array(fractions) * (self._target - self._start)

    def _hold_joints(self, indices) -> None:
        held = self.joint_positions()
        for index in indices:
            self._start[index] = self._target[index] = held[index]

    def command_group(self, positions) -> None:
        """`commands/joint_group`: every healthy, unobstructed motor starts its profile to the goal."""
        with self.lock:
            now_positions = self.joint_positions()
            goal = np.asarray(positions, float).copy()
            self.group_commands.append(goal.copy())
            for index, name in enumerate(widowx.JOINT_NAMES):
                if self.hardware_error[name] or self.obstructed:
                    goal[index] = now_positions[index]  # torque off / blocked: it stays where it is
            self._start = now_positions
            self._target = goal
            self._t0[:] = self.clock()
            self._moving_time[:] = self.registers["Profile_Velocity"] / 1000.0
            self._accel_time[:] = self.registers["Profile_Acceleration"] / 1000.0

    def finger_position(self) -> float:
        with self.lock:
            self._advance_finger()
            return self._finger

    def command_gripper_effort(self, effort: float) -> None:
        with self.lock:
            self._advance_finger()
            self._finger_effort = 0.0 if self.hardware_error[GRIPPER] else effort

    def _advance_finger(self) -> None:
        now = self.clock()
        step = np.sign(self._finger_effort) * FINGER_SPEED_M_S * (now - self._finger_time)
        self._finger = float(np.clip(self._finger + step, FINGER_LOWER_M, FINGER_UPPER_M))
        self._finger_time = now

    # ----- services -----------------------------------------------------------------------------
    def set_register(self, cmd_type: str, name: str, reg: str, value: int) -> None:
        with self.lock:
            self.registers[reg] = int(value)
            self.register_writes.append((reg, int(value)))

    def get_register(self, cmd_type: str, name: str, reg: str) -> list[int]:
        with self.lock:
            if reg == "Hardware_Error_Status":
                names = widowx.JOINT_NAMES if cmd_type == "group" else (name,)
                return [self.hardware_error[n] for n in names]
            count = len(widowx.JOINT_NAMES) if cmd_type == "group" else 1
            return [self.registers.get(reg, 0)] * count

    def reboot(self, cmd_type: str, name: str, enable: bool, smart_reboot: bool) -> None:
        with self.lock:
            names = (*widowx.JOINT_NAMES, GRIPPER) if cmd_type == "group" else (name,)
            for motor in names:
                if self.hardware_error.get(motor) or not smart_reboot:
                    self.hardware_error[motor] = 0
            self.reboots += 1
            self._hold_joints(range(6))

    # ----- fault injection (tests) ----------------------------------------------------------------
    def raise_hardware_error(self, motor: str, status: int = 0x20) -> None:
        """A motor faults (0x20 = overload): it stops where it is and ignores commands."""
        with self.lock:
            self.hardware_error[motor] = status
            if motor in widowx.JOINT_NAMES:
                self._hold_joints([widowx.JOINT_NAMES.index(motor)])
            else:
                self.command_gripper_effort(0.0)

    def obstruct(self, blocked: bool = True) -> None:
        """The arm runs into something: it stops where it is and stays there while blocked."""
        with self.lock:
            self.obstructed = blocked
            self._hold_joints(range(6))


# ----- the Python API (interbotix_xs_modules.xs_robot) --------------------------------------------

_DRIVER: Optional[EmulatedDriver] = None
_STARTED = False


class InterbotixException(Exception):
    pass


class _GroupInfo:
    def __init__(self):
        self.num_joints = 6
        self.joint_names = list(widowx.JOINT_NAMES)
        self.joint_lower_limits = list(widowx.JOINT_LIMITS_RAD[:, 0])
        self.joint_upper_limits = list(widowx.JOINT_LIMITS_RAD[:, 1])
        self.joint_velocity_limits = [widowx.JOINT_VELOCITY_LIMIT] * 6
        self.joint_sleep_positions = list(widowx.SLEEP_JOINTS)
        self.profile_type = "time"
        self.mode = "position"


class InterbotixRobotXSCore:
    def __init__(self, robot_model: str, robot_name: str = None, topic_joint_states: str = "joint_states",
                 logging_level=None, node_name: str = "robot_manipulation", node=None, args=None) -> None:
        if _DRIVER is None:
            raise InterbotixException("Failed to find services under namespace: is the xs_sdk running?")
        self.driver = _DRIVER
        self.robot_model = robot_model
        self.robot_name = robot_model if robot_name is None else robot_name

    def robot_set_motor_registers(self, cmd_type: str, name: str, reg: str, value: int) -> None:
        self.driver.set_register(cmd_type, name, reg, value)

    def robot_get_motor_registers(self, cmd_type: str, name: str, reg: str) -> List[int]:
        return self.driver.get_register(cmd_type, name, reg)

    def robot_reboot_motors(self, cmd_type: str, name: str, enable: bool, smart_reboot: bool = False) -> None:
        self.driver.reboot(cmd_type, name, enable, smart_reboot)

    def robot_torque_enable(self, cmd_type: str, name: str, enable: bool) -> None:
        pass


class InterbotixArmXSInterface:
    def __init__(self, core: InterbotixRobotXSCore, robot_model: str, group_name: str, moving_time: float = 2.0,
                 accel_time: float = 0.3, iterative_update_fk: bool = True) -> None:
        self.core = core
        self.robot_model = robot_model
        self.moving_time, self.accel_time = moving_time, accel_time  # stored first: the call below writes nothing
        self.group_name = group_name
        self.iterative_update_fk = iterative_update_fk
        self.group_info = _GroupInfo()
        self.initial_guesses = [list(guess) for guess in widowx.DEFAULT_IK_GUESSES]
        self.joint_commands = list(self.core.driver.joint_positions())
        self._update_Tsb()
        self.set_trajectory_time(self.moving_time, self.accel_time)

    def _publish_commands(self, positions: List[float], moving_time: float = None, accel_time: float = None,
                          blocking: bool = True) -> None:
        self.set_trajectory_time(moving_time, accel_time)
        self.joint_commands = list(positions)
        self.core.driver.command_group(self.joint_commands)
        if blocking:
            self.core.driver.sleep(self.moving_time)
        if self.iterative_update_fk:
            self._update_Tsb()

    def set_trajectory_time(self, moving_time: float = None, accel_time: float = None) -> None:
        if moving_time is not None and moving_time != self.moving_time:
            self.moving_time = moving_time
            self.core.driver.set_register("group", self.group_name, "Profile_Velocity", int(moving_time * 1000))
        if accel_time is not None and accel_time != self.accel_time:
            self.accel_time = accel_time
            self.core.driver.set_register("group", self.group_name, "Profile_Acceleration", int(accel_time * 1000))

    def _check_joint_limits(self, positions: List[float]) -> bool:
        theta_list = [int(elem * 1000) / 1000.0 for elem in positions]
        speed_list = [abs(goal - current) / float(self.moving_time) for goal, current in zip(theta_list, self.joint_commands)]
        for x in range(self.group_info.num_joints):
            if not (self.group_info.joint_lower_limits[x] <= theta_list[x] <= self.group_info.joint_upper_limits[x]):
                return False
            if speed_list[x] > self.group_info.joint_velocity_limits[x]:
                return False
        return True

    def set_joint_positions(self, joint_positions: List[float], moving_time: float = None, accel_time: float = None,
                            blocking: bool = True) -> bool:
        if self._check_joint_limits(joint_positions):
            self._publish_commands(joint_positions, moving_time, accel_time, blocking)
            return True
        return False

    def go_to_home_pose(self, moving_time: float = None, accel_time: float = None, blocking: bool = True) -> None:
        self._publish_commands([0.0] * 6, moving_time, accel_time, blocking)

    def go_to_sleep_pose(self, moving_time: float = None, accel_time: float = None, blocking: bool = True) -> None:
        self._publish_commands(self.group_info.joint_sleep_positions, moving_time, accel_time, blocking)

    def set_ee_pose_matrix(self, T_sd: np.ndarray, custom_guess: List[float] = None, execute: bool = True,
                           moving_time: float = None, accel_time: float = None,
                           blocking: bool = True) -> Tuple[Union[np.ndarray, Any, List[float]], bool]:
        import modern_robotics as mr

        initial_guesses = self.initial_guesses if custom_guess is None else [custom_guess]
        theta_list = np.zeros(6)
        for guess in initial_guesses:
            theta_list, success = mr.IKinSpace(widowx.SCREW_AXES, widowx.HOME_MATRIX, T_sd, np.asarray(guess, float), 0.001, 0.001)
            if success:
                theta_list = widowx.wrap_into_limits(theta_list)
                solution_found = self._check_joint_limits(theta_list)
            else:
                solution_found = False
            if solution_found:
                if execute:
                    self._publish_commands(theta_list, moving_time, accel_time, blocking)
                    self.T_sb = T_sd
                return theta_list, True
        return theta_list, False

    def get_joint_commands(self) -> List[float]:
        return list(self.joint_commands)

    def get_ee_pose_command(self) -> np.ndarray:
        return np.array(self.T_sb)

    def get_ee_pose(self) -> np.ndarray:
        return widowx.forward_kinematics(self.core.driver.joint_positions())

    def capture_joint_positions(self) -> None:
        self.joint_commands = list(self.core.driver.joint_positions())
        self._update_Tsb()

    def get_joint_positions(self) -> List[float]:
        return list(self.core.driver.joint_positions())

    def _update_Tsb(self) -> None:
        self.T_sb = widowx.forward_kinematics(self.joint_commands)


class InterbotixGripperXSInterface:
    def __init__(self, core: InterbotixRobotXSCore, gripper_name: str, gripper_pressure: float = 0.5,
                 gripper_pressure_lower_limit: int = 150, gripper_pressure_upper_limit: int = 350) -> None:
        self.core = core
        self.gripper_name = gripper_name
        self.gripper_pressure_lower_limit = gripper_pressure_lower_limit
        self.gripper_pressure_upper_limit = gripper_pressure_upper_limit
        self.gripper_value = gripper_pressure_lower_limit + gripper_pressure * (
            gripper_pressure_upper_limit - gripper_pressure_lower_limit)

    def gripper_controller(self, effort: float, delay: float) -> None:
        position = self.core.driver.finger_position()
        if (effort > 0 and position < FINGER_UPPER_M) or (effort < 0 and position > FINGER_LOWER_M):
            self.core.driver.command_gripper_effort(effort)
            self.core.driver.sleep(delay)

    def set_pressure(self, pressure: float) -> None:
        self.gripper_value = self.gripper_pressure_lower_limit + pressure * (
            self.gripper_pressure_upper_limit - self.gripper_pressure_lower_limit)

    def release(self, delay: float = 1.0) -> None:
        self.gripper_controller(self.gripper_value, delay)

    def grasp(self, delay: float = 1.0) -> None:
        self.gripper_controller(-self.gripper_value, delay)

    def get_finger_position(self) -> float:
        return self.core.driver.finger_position()


class InterbotixManipulatorXS:
    def __init__(self, robot_model: str, group_name: str = "arm", gripper_name: str = "gripper",
                 robot_name: str = None, moving_time: float = 2.0, accel_time: float = 0.3,
                 gripper_pressure: float = 0.5, gripper_pressure_lower_limit: int = 150,
                 gripper_pressure_upper_limit: int = 350, topic_joint_states: str = "joint_states",
                 logging_level=None, node_name: str = "robot_manipulation", node=None,
                 iterative_update_fk: bool = True, args=None) -> None:
        self.core = InterbotixRobotXSCore(robot_model=robot_model, robot_name=robot_name,
                                          topic_joint_states=topic_joint_states, logging_level=logging_level,
                                          node_name=node_name, node=node, args=args)
        self.arm = InterbotixArmXSInterface(core=self.core, robot_model=robot_model, group_name=group_name,
                                            moving_time=moving_time, accel_time=accel_time,
                                            iterative_update_fk=iterative_update_fk)
        if gripper_name is not None:
            self.gripper = InterbotixGripperXSInterface(core=self.core, gripper_name=gripper_name,
                                                        gripper_pressure=gripper_pressure,
                                                        gripper_pressure_lower_limit=gripper_pressure_lower_limit,
                                                        gripper_pressure_upper_limit=gripper_pressure_upper_limit)
        self.robot_name = robot_name


def robot_startup(node=None, node_name: str = "interbotix_robot_manipulation", namespace: Optional[str] = None) -> None:
    global _STARTED
    if _STARTED:
        raise InterbotixException("Startup has already been requested.")
    _STARTED = True


def robot_shutdown(node=None) -> None:
    """As the real one: the shared rclpy context goes down with the Interbotix node."""
    global _STARTED
    _STARTED = False
    rclpy = sys.modules.get("rclpy")
    if rclpy is not None and rclpy.ok():
        rclpy.shutdown()


MODULE_NAMES = (
    "interbotix_xs_modules", "interbotix_xs_modules.xs_robot", "interbotix_xs_modules.xs_robot.arm",
    "interbotix_common_modules", "interbotix_common_modules.common_robot",
    "interbotix_common_modules.common_robot.robot",
)


def install(driver: EmulatedDriver) -> dict[str, types.ModuleType]:
    """Register the emulation under the real module names, driving `driver`; returns the modules."""
    global _DRIVER, _STARTED
    _DRIVER, _STARTED = driver, False
    modules = {name: types.ModuleType(name) for name in MODULE_NAMES}
    modules["interbotix_xs_modules.xs_robot.arm"].InterbotixManipulatorXS = InterbotixManipulatorXS
    modules["interbotix_common_modules.common_robot.robot"].robot_startup = robot_startup
    modules["interbotix_common_modules.common_robot.robot"].robot_shutdown = robot_shutdown
    sys.modules.update(modules)
    return modules


def uninstall() -> None:
    global _DRIVER, _STARTED
    _DRIVER, _STARTED = None, False
    for name in MODULE_NAMES:
        sys.modules.pop(name, None)
