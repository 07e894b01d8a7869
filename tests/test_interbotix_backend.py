"""The hardware backend's command path against recorders with the real Interbotix signatures.

The recorder classes below copy the method signatures of interbotix_ros_toolboxes, branch
`humble` (commit 8ae347e1, Dec 2024): `interbotix_xs_modules/xs_robot/arm.py`
(InterbotixManipulatorXS, InterbotixArmXSInterface), `xs_robot/gripper.py`
(InterbotixGripperXSInterface) and `interbotix_common_modules/common_robot/robot.py`
(robot_startup, robot_shutdown). Every call the backend makes is bound against the real signature
with `inspect.signature(...).bind`, so a misspelt method or keyword fails here as it would on the arm.
"""

import inspect
import sys
import types
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import pytest

from parl_robot.config import ControlConfig
from parl_robot.robot.arm_controller import ArmController
from parl_robot.robot.safety import DOWNWARD_ROTATION
from parl_robot.sim.widowx_model import HOME_EE_POSITION

CALLS: list[tuple[str, dict]] = []


def _record(method, *args, **kwargs) -> dict:
    bound = inspect.signature(method).bind(None, *args, **kwargs)  # raises TypeError on a bad call
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self")
    CALLS.append((method.__qualname__, arguments))
    return arguments


class InterbotixArmXSInterface:
    reachable = True  # IK outcome the test chooses

    def __init__(self):
        self.joint_commands = [0.0] * 6

    def set_trajectory_time(self, moving_time: float = None, accel_time: float = None) -> None:
        _record(InterbotixArmXSInterface.set_trajectory_time, moving_time, accel_time)

    def set_joint_positions(
        self, joint_positions: List[float], moving_time: float = None, accel_time: float = None, blocking: bool = True
    ) -> bool:
        _record(InterbotixArmXSInterface.set_joint_positions, joint_positions, moving_time, accel_time, blocking)
        return True

    def go_to_home_pose(self, moving_time: float = None, accel_time: float = None, blocking: bool = True) -> None:
        _record(InterbotixArmXSInterface.go_to_home_pose, moving_time, accel_time, blocking)

    def go_to_sleep_pose(self, moving_time: float = None, accel_time: float = None, blocking: bool = True) -> None:
        _record(InterbotixArmXSInterface.go_to_sleep_pose, moving_time, accel_time, blocking)

    def set_ee_pose_matrix(
        self,
        T_sd: np.ndarray,
        custom_guess: List[float] = None,
        execute: bool = True,
        moving_time: float = None,
        accel_time: float = None,
        blocking: bool = True,
    ) -> Tuple[Union[np.ndarray, Any, List[float]], bool]:
        _record(InterbotixArmXSInterface.set_ee_pose_matrix, T_sd, custom_guess, execute, moving_time, accel_time, blocking)
        return [0.1] * 6, self.reachable

    def get_joint_commands(self) -> List[float]:
        _record(InterbotixArmXSInterface.get_joint_commands)
        return list(self.joint_commands)

    def get_ee_pose(self) -> np.ndarray:
        _record(InterbotixArmXSInterface.get_ee_pose)
        pose = np.eye(4)
        pose[:3, 3] = HOME_EE_POSITION
        return pose

    def capture_joint_positions(self) -> None:
        _record(InterbotixArmXSInterface.capture_joint_positions)


class InterbotixGripperXSInterface:
    def set_pressure(self, pressure: float) -> None:
        _record(InterbotixGripperXSInterface.set_pressure, pressure)

    def release(self, delay: float = 1.0) -> None:
        _record(InterbotixGripperXSInterface.release, delay)

    def grasp(self, delay: float = 1.0) -> None:
        _record(InterbotixGripperXSInterface.grasp, delay)


class InterbotixManipulatorXS:
    def __init__(
        self,
        robot_model: str,
        group_name: str = "arm",
        gripper_name: str = "gripper",
        robot_name: str = None,
        moving_time: float = 2.0,
        accel_time: float = 0.3,
        gripper_pressure: float = 0.5,
        gripper_pressure_lower_limit: int = 150,
        gripper_pressure_upper_limit: int = 350,
        topic_joint_states: str = "joint_states",
        logging_level=None,
        node_name: str = "robot_manipulation",
        node=None,
        iterative_update_fk: bool = True,
        args=None,
    ) -> None:
        _record(InterbotixManipulatorXS.__init__, robot_model, group_name, gripper_name, robot_name, moving_time,
                accel_time, gripper_pressure, gripper_pressure_lower_limit, gripper_pressure_upper_limit,
                topic_joint_states, logging_level, node_name, node, iterative_update_fk, args)
        self.arm = InterbotixArmXSInterface()
        self.gripper = InterbotixGripperXSInterface()


def robot_startup(node=None, node_name: str = "interbotix_robot_manipulation", namespace: Optional[str] = None) -> None:
    CALLS.append(("robot_startup", {}))


def robot_shutdown(node=None) -> None:
    CALLS.append(("robot_shutdown", {}))


@pytest.fixture
def interbotix(monkeypatch):
    """Install the recorder modules under the real import paths."""
    modules = {
        "interbotix_xs_modules": types.ModuleType("interbotix_xs_modules"),
        "interbotix_xs_modules.xs_robot": types.ModuleType("interbotix_xs_modules.xs_robot"),
        "interbotix_xs_modules.xs_robot.arm": types.ModuleType("interbotix_xs_modules.xs_robot.arm"),
        "interbotix_common_modules": types.ModuleType("interbotix_common_modules"),
        "interbotix_common_modules.common_robot": types.ModuleType("interbotix_common_modules.common_robot"),
        "interbotix_common_modules.common_robot.robot": types.ModuleType("interbotix_common_modules.common_robot.robot"),
    }
    modules["interbotix_xs_modules.xs_robot.arm"].InterbotixManipulatorXS = InterbotixManipulatorXS
    modules["interbotix_common_modules.common_robot.robot"].robot_startup = robot_startup
    modules["interbotix_common_modules.common_robot.robot"].robot_shutdown = robot_shutdown
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    CALLS.clear()
    InterbotixArmXSInterface.reachable = True
    yield CALLS


def _names(calls):
    return [name.split(".")[-1] for name, _ in calls]


def test_startup_uses_wx250s_and_the_control_rate(interbotix):
    from parl_robot.robot.backend import InterbotixArmBackend

    InterbotixArmBackend(moving_time=0.2)
    (name, construct), startup = interbotix[0], interbotix[1]
    assert name == "InterbotixManipulatorXS.__init__" and startup[0] == "robot_startup"
    assert construct["robot_model"] == "wx250s" and construct["group_name"] == "arm" and construct["gripper_name"] == "gripper"
    assert construct["moving_time"] == 0.2 and construct["accel_time"] == pytest.approx(0.05)


def test_command_path_safety_clipping_gripper_and_estop(interbotix):
    from parl_robot.robot.backend import InterbotixArmBackend

    control = ControlConfig()
    clock = [0.0]
    controller = ArmController(control, InterbotixArmBackend(moving_time=1 / control.rate_hz), clock=lambda: clock[0])
    interbotix.clear()
    assert controller.go_home()
    home = [(n, a) for n, a in interbotix if n.endswith("set_ee_pose_matrix")][0][1]
    assert home["blocking"] is True and np.allclose(home["T_sd"][:3, 3], control.home_xyz)
    assert "set_trajectory_time" in _names(interbotix)  # back to the acting time once per reset
    interbotix.clear()

    # Ten full-speed "down" actions: every command non-blocking at the control period, the last one
    # clipped to the safety box floor; the gripper closes once, not every step.
    for step in range(10):
        clock[0] += 0.2
        assert controller.handle_action(np.array([0, 0, -1, 0, 0, 0, -1.0])) is not None
    poses = [a for n, a in interbotix if n.endswith("set_ee_pose_matrix")]
    assert len(poses) == 10
    assert all(p["blocking"] is False and p["execute"] is True and p["moving_time"] == pytest.approx(0.2) for p in poses)
    assert all(p["custom_guess"] is not None for p in poses)  # IK seeded with the last command
    assert poses[-1]["T_sd"][2, 3] == pytest.approx(control.safety_box_low[2])
    assert np.allclose(poses[-1]["T_sd"][:3, :3], DOWNWARD_ROTATION)
    steps = np.diff([p["T_sd"][2, 3] for p in poses])
    assert np.all(steps >= -control.max_translation_per_step_m - 1e-9)
    assert _names(interbotix).count("grasp") == 1 and "release" not in _names(interbotix)
    assert [a for n, a in interbotix if n.endswith("grasp")][0]["delay"] == 0.0  # never blocks the loop

    # No IK solution: reported, the arm is not considered moved, the command does not drift.
    InterbotixArmXSInterface.reachable = False
    before = controller.integrator.command.position.copy()
    clock[0] += 0.2
    assert controller.handle_action(np.array([1.0, 0, 0, 0, 0, 0, -1])) is None
    assert "no IK solution" in controller.status.last_error
    assert np.allclose(controller.integrator.command.position, before)
    InterbotixArmXSInterface.reachable = True

    # Watchdog: no fresh action for 2 periods -> hold, and nothing more is sent to the arm.
    interbotix.clear()
    clock[0] += 0.5
    assert controller.check_watchdog() and controller.status.holding
    assert interbotix == []

    # E-stop: the arm is stopped where it is at once, and later actions never reach the driver.
    controller.estop()
    assert _names(interbotix) == ["capture_joint_positions", "get_joint_commands", "set_joint_positions"]
    assert interbotix[-1][1]["blocking"] is False
    interbotix.clear()
    assert controller.handle_action(np.zeros(7)) is None and interbotix == []
    assert not controller.go_home()
    controller.clear_estop()
    assert controller.handle_action(np.zeros(7)) is not None


def test_close_parks_in_sleep_pose_then_shuts_down(interbotix):
    from parl_robot.robot.backend import InterbotixArmBackend

    backend = InterbotixArmBackend()
    interbotix.clear()
    backend.close()
    assert _names(interbotix) == ["go_to_sleep_pose", "robot_shutdown"]


def test_missing_interbotix_says_what_to_install(monkeypatch):
    from parl_robot.robot.backend import InterbotixArmBackend

    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)
    monkeypatch.setitem(sys.modules, "interbotix_common_modules", None)
    with pytest.raises(RuntimeError, match="interbotix_xs_modules.*xsarm_control.launch.py robot_model:=wx250s"):
        InterbotixArmBackend()
