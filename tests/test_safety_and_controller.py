import numpy as np
import pytest

from parl_robot.config import ControlConfig
from parl_robot.robot.arm_controller import ArmController
from parl_robot.robot.safety import (
    DOWNWARD_ROTATION, ActionError, CommandIntegrator, SafetyLimits, rotation_about_axis, rotation_error, validate_action,
)


class RecordingBackend:
    joint_names = tuple(f"j{i}" for i in range(6))

    def __init__(self):
        self.commands = []
        self.homes = 0
        self.holds = 0

    def execute(self, command, duration):
        self.commands.append(command)
        return True

    def hold(self):
        self.holds += 1

    def go_home(self, position, rotation):
        self.homes += 1

    def joint_positions(self):
        return np.zeros(6)

    def ee_pose(self):
        return np.zeros(3), np.eye(3)

    def gripper_open(self):
        return True


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_validate_action_rejects_bad_messages():
    with pytest.raises(ActionError, match="7 values"):
        validate_action([0.0] * 6)
    with pytest.raises(ActionError, match="NaN"):
        validate_action([0, 0, float("nan"), 0, 0, 0, 1])


def test_integrator_clips_to_box_and_step_limits():
    control = ControlConfig()
    integrator = CommandIntegrator(SafetyLimits.from_config(control), np.array(control.home_xyz), DOWNWARD_ROTATION)
    command = integrator.apply([1, 1, 1, 0, 0, 0, 1])
    step = command.position - np.array(control.home_xyz)
    assert np.linalg.norm(step) == pytest.approx(control.max_translation_per_step_m)
    for _ in range(50):
        command = integrator.apply([1, 1, 1, 0, 0, 0, -1])
    assert np.allclose(command.position, control.safety_box_high)
    assert command.gripper_open is False
    rotated = integrator.apply([0, 0, 0, 1, 1, 1, 1])
    angle = np.linalg.norm(rotation_error(rotated.rotation, command.rotation))
    assert angle == pytest.approx(control.max_rotation_per_step_rad, abs=1e-6)


def test_rotation_error_inverts_rodrigues():
    vector = np.array([0.1, -0.2, 0.3])
    assert np.allclose(rotation_error(rotation_about_axis(vector) @ DOWNWARD_ROTATION, DOWNWARD_ROTATION), vector)


def test_watchdog_holds_and_estop_latches():
    clock, backend = FakeClock(), RecordingBackend()
    controller = ArmController(ControlConfig(rate_hz=5.0), backend, clock=clock)
    assert controller.handle_action([0, 0, 0, 0, 0, 0, 1]) is not None
    clock.now = 0.3
    assert controller.check_watchdog() is False  # 0.3 s < 2 / 5 Hz
    clock.now = 0.45
    assert controller.check_watchdog() is True and controller.status.holding
    assert controller.check_watchdog() is False  # counted once
    assert controller.status.watchdog_holds == 1
    controller.estop()
    assert controller.handle_action([0, 0, 0.5, 0, 0, 0, 1]) is None
    assert controller.go_home() is False
    assert len(backend.commands) == 1
    assert controller.status.rejected_actions == 1 and "e-stop" in controller.status.last_error
    controller.clear_estop()
    assert controller.handle_action([0, 0, 0.5, 0, 0, 0, 1]) is not None
    assert controller.handle_action([0, 0, 0.5, 0, 0, 0]) is None  # malformed: refused, arm holds
    assert len(backend.commands) == 2


def test_measured_rate():
    clock, backend = FakeClock(), RecordingBackend()
    controller = ArmController(ControlConfig(rate_hz=5.0), backend, clock=clock)
    for i in range(10):
        clock.now = 0.2 * i
        controller.handle_action([0, 0, 0, 0, 0, 0, 1])
    assert controller.status.action_rate_hz == pytest.approx(5.0)
