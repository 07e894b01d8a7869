import numpy as np
import pytest

from parl_robot.config import ControlConfig
from parl_robot.robot.safety import (
    DOWNWARD_ROTATION, ActionError, CommandIntegrator, SafetyLimits, gripper_tilt, gripper_yaw, rotation_about_axis,
    rotation_error, validate_action,
)


def test_validate_action_rejects_bad_messages():
    with pytest.raises(ActionError, match="7 values"):
        validate_action([0.0] * 6)
    with pytest.raises(ActionError, match="NaN"):
        validate_action([0, 0, float("nan"), 0, 0, 0, 1])


def test_integrator_clips_each_axis_to_the_box_and_step_limits():
    control = ControlConfig(max_translation_per_step_m=0.03)
    integrator = CommandIntegrator(SafetyLimits.from_config(control), np.array(control.home_xyz), DOWNWARD_ROTATION)
    command = integrator.apply([1, 1, -0.2, 0, 0, 0, 1])
    step = command.position - np.array(control.home_xyz)
    # Bridge/OpenVLA semantics: each axis clipped on its own (a norm clip would shorten z as well).
    assert np.allclose(step, [0.03, 0.03, -0.2 * 0.05])
    for _ in range(50):
        command = integrator.apply([1, 1, 1, 0, 0, 0, -1])
    assert np.allclose(command.position, control.safety_box_high)
    assert command.gripper_open is False
    rotated = integrator.apply([0, 0, 0, 1, 1, 1, 1])
    angle = np.linalg.norm(rotation_error(rotated.rotation, command.rotation))
    assert angle == pytest.approx(control.max_rotation_per_step_rad, abs=1e-6)


def test_integrator_bounds_yaw_and_tilt():
    control = ControlConfig(yaw_limits_rad=[-0.5, 0.8], max_tilt_rad=0.3)
    integrator = CommandIntegrator(SafetyLimits.from_config(control), np.array(control.home_xyz), DOWNWARD_ROTATION)
    for _ in range(20):
        command = integrator.apply([0, 0, 0, 0, 0, 1, 1])  # keep turning about z
    assert gripper_yaw(command.rotation) == pytest.approx(0.8, abs=1e-9)
    for _ in range(20):
        command = integrator.apply([0, 0, 0, 0, 0, -1, 1])
    assert gripper_yaw(command.rotation) == pytest.approx(-0.5, abs=1e-9)
    for _ in range(20):
        command = integrator.apply([0, 0, 0, 1, 0, 0, 1])  # keep tilting
    assert gripper_tilt(command.rotation) == pytest.approx(0.3, abs=1e-6)
    assert -0.5 - 1e-6 <= gripper_yaw(command.rotation) <= 0.8 + 1e-6


def test_rotation_error_inverts_rodrigues():
    vector = np.array([0.1, -0.2, 0.3])
    assert np.allclose(rotation_error(rotation_about_axis(vector) @ DOWNWARD_ROTATION, DOWNWARD_ROTATION), vector)
