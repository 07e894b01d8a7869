"""The safety layer's arithmetic pinned at its edges (issue 33): action validation, Rodrigues and its
inverse in every branch, the gripper threshold, per-axis translation and norm-bounded rotation steps."""

import numpy as np
import pytest

from parl_robot.config import ControlConfig
from parl_robot.robot.safety import (
    DOWNWARD_ROTATION, ActionError, CommandIntegrator, SafetyLimits, bound_orientation, gripper_tilt, gripper_yaw,
    rotation_about_axis, rotation_error, validate_action,
)


def limits(**changes):
    fields = dict(action_scale=np.array([0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0]), box_low=np.array([0.1, -0.2, 0.0]),
                  box_high=np.array([0.5, 0.2, 0.4]), max_translation=0.03, max_rotation=0.2, gripper_threshold=0.5)
    fields.update(changes)
    return SafetyLimits(**fields)


def about_z(angle):
    return rotation_about_axis(np.array([0.0, 0.0, angle]))


def test_validate_action_flattens_checks_length_and_finiteness():
    action = validate_action(np.arange(7).reshape(1, 7))
    assert action.shape == (7,) and action.dtype == np.float64 and action.tolist() == list(range(7))
    with pytest.raises(ActionError, match="must have 7 values, got 8"):
        validate_action([0.0] * 8)
    with pytest.raises(ActionError, match=r"NaN or Inf: \[0.0, 0.0, 0.0, 0.0, 0.0, inf, 1.0\]"):
        validate_action([0, 0, 0, 0, 0, float("inf"), 1])


def test_rodrigues_matches_known_rotations():
    np.testing.assert_allclose(about_z(np.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(rotation_about_axis(np.array([np.pi / 2, 0, 0])) @ [0.0, 1.0, 0.0], [0, 0, 1.0], atol=1e-12)
    np.testing.assert_allclose(rotation_about_axis(np.array([0, -np.pi / 2, 0])) @ [1.0, 0.0, 0.0], [0, 0, 1.0], atol=1e-12)
    assert np.array_equal(rotation_about_axis(np.zeros(3)), np.eye(3))
    assert np.array_equal(rotation_about_axis(np.full(3, 1e-13)), np.eye(3))
    tiny = rotation_about_axis(np.array([0.0, 0.0, 1e-9]))  # just above the identity shortcut
    assert tiny[1, 0] == pytest.approx(1e-9, rel=1e-6)


@pytest.mark.parametrize("vector", [[0.3, -0.2, 0.1], [1.0, 2.0, -0.5], [0.0, 0.0, 2.9], [1e-8, 0.0, 0.0],
                                    [0.0, 3e-7, 0.0]])
def test_rotation_error_recovers_the_rotation_vector(vector):
    vector = np.array(vector)
    current = rotation_about_axis(np.array([0.2, 0.4, -0.1]))
    np.testing.assert_allclose(rotation_error(rotation_about_axis(vector) @ current, current), vector, atol=1e-9)
    np.testing.assert_allclose(rotation_error(current, current), np.zeros(3), atol=1e-12)


def check_half_turn_error(axis, angle):
    axis = np.array(axis) / np.linalg.norm(axis)
    error = rotation_error(rotation_about_axis(axis * angle), np.eye(3))
    assert np.linalg.norm(error) == pytest.approx(angle, abs=1e-6)
    assert abs(error @ axis) == pytest.approx(angle, abs=1e-4)  # along the axis (either sign at π)
    np.testing.assert_allclose(rotation_about_axis(error), rotation_about_axis(axis * angle), atol=2e-4)


@pytest.mark.parametrize("axis", [[1.0, 2.0, 2.0], [0.0, 0.0, 1.0], [1.0, -1.0, 0.5], [-2.0, 1.0, 1.0]])
def test_rotation_error_near_a_half_turn_gives_the_axis(axis):
    check_half_turn_error(axis, np.pi - 5e-5)


@pytest.mark.parametrize("axis", [[1.0, 2.0, 2.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
def test_rotation_error_at_a_half_turn_about_an_axis_with_no_negative_component(axis):
    check_half_turn_error(axis, np.pi)


@pytest.mark.parametrize("axis", [[1.0, -1.0, 0.5], [-2.0, 1.0, 1.0]])
def test_rotation_error_at_a_half_turn_about_an_axis_with_mixed_signs(axis):
    check_half_turn_error(axis, np.pi)


def test_yaw_and_tilt_of_the_downward_gripper():
    assert gripper_yaw(DOWNWARD_ROTATION) == pytest.approx(0.0, abs=1e-12)
    assert gripper_tilt(DOWNWARD_ROTATION) == pytest.approx(0.0, abs=1e-7)
    assert gripper_yaw(about_z(0.4) @ DOWNWARD_ROTATION) == pytest.approx(0.4)
    assert gripper_yaw(about_z(-2.5) @ DOWNWARD_ROTATION) == pytest.approx(-2.5)
    tilted = rotation_about_axis(np.array([0.3, 0.0, 0.0])) @ DOWNWARD_ROTATION
    assert gripper_tilt(tilted) == pytest.approx(0.3)
    assert gripper_tilt(rotation_about_axis(np.array([0.0, np.pi, 0.0])) @ DOWNWARD_ROTATION) == pytest.approx(np.pi)


def test_bound_orientation_leaves_a_pose_inside_the_bounds_alone_and_clamps_each_bound():
    inside = rotation_about_axis(np.array([0.1, 0.0, 0.0])) @ about_z(0.2) @ DOWNWARD_ROTATION
    assert np.array_equal(bound_orientation(inside, (-0.5, 0.5), 0.3), inside)
    yawed = bound_orientation(about_z(0.9) @ DOWNWARD_ROTATION, (-0.5, 0.5), 0.3)
    assert gripper_yaw(yawed) == pytest.approx(0.5) and gripper_tilt(yawed) == pytest.approx(0.0, abs=1e-7)
    yawed = bound_orientation(about_z(-0.9) @ DOWNWARD_ROTATION, (-0.5, 0.5), 0.3)
    assert gripper_yaw(yawed) == pytest.approx(-0.5)
    for axis in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, -0.8, 0.0]):
        tilted = rotation_about_axis(np.array(axis) * 0.7) @ DOWNWARD_ROTATION
        bounded = bound_orientation(tilted, (-np.pi, np.pi), 0.3)
        assert gripper_tilt(bounded) == pytest.approx(0.3, abs=1e-9)
        # Tilted back the shortest way: what is left is a rotation about the same world axis.
        remaining = rotation_error(bounded, DOWNWARD_ROTATION)
        np.testing.assert_allclose(remaining, np.array(axis) * 0.3, atol=1e-9)


def test_from_config_maps_every_field():
    control = ControlConfig(action_scale=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], safety_box_low=[0.1, -0.1, 0.05],
                            safety_box_high=[0.4, 0.1, 0.3], max_translation_per_step_m=0.02,
                            max_rotation_per_step_rad=0.15, gripper_threshold=0.3, yaw_limits_rad=[-0.7, 0.9],
                            max_tilt_rad=0.4)
    mapped = SafetyLimits.from_config(control)
    assert mapped.action_scale.tolist() == control.action_scale
    assert mapped.box_low.tolist() == control.safety_box_low and mapped.box_high.tolist() == control.safety_box_high
    assert (mapped.max_translation, mapped.max_rotation, mapped.gripper_threshold) == (0.02, 0.15, 0.3)
    assert mapped.yaw_limits == (-0.7, 0.9) and mapped.max_tilt == 0.4
    assert mapped.clip_position(np.array([0.0, 0.5, 0.2])).tolist() == [0.1, 0.1, 0.2]
    defaults = SafetyLimits(np.ones(7), np.zeros(3), np.ones(3), 0.1, 0.1, 0.5)
    assert defaults.yaw_limits == (-np.pi, np.pi) and defaults.max_tilt == np.pi


def test_integrator_scales_clips_and_accumulates_the_commanded_pose():
    start = np.array([0.3, 0.0, 0.2])
    integrator = CommandIntegrator(limits(), start, DOWNWARD_ROTATION)
    assert integrator.command.gripper_open is True
    command = integrator.apply([0.2, -0.4, 5.0, 0, 0, 0, 1])  # 5 is clipped to 1 before scaling
    np.testing.assert_allclose(command.position, start + [0.01, -0.02, 0.03])
    command = integrator.apply([-1.0, 0.0, 0.0, 0, 0, 0, 1])  # 0.05 per step, clipped to 0.03
    np.testing.assert_allclose(command.position, start + [-0.02, -0.02, 0.03])
    np.testing.assert_allclose(command.rotation, DOWNWARD_ROTATION, atol=1e-12)
    integrator.reset(np.array([9.0, -9.0, 0.1]), DOWNWARD_ROTATION, gripper_open=False)
    assert integrator.command.position.tolist() == [0.5, -0.2, 0.1] and integrator.command.gripper_open is False


def test_rotation_steps_are_scaled_then_norm_clipped():
    integrator = CommandIntegrator(limits(), np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION)
    command = integrator.apply([0, 0, 0, 0, 0, 0.4, 1])  # 0.4 * 0.25 = 0.1 rad about z, under the 0.2 limit
    np.testing.assert_allclose(rotation_error(command.rotation, DOWNWARD_ROTATION), [0, 0, 0.1], atol=1e-12)
    before = command.rotation
    command = integrator.apply([0, 0, 0, 0, -1.0, 1.0, 1])  # (0, -0.25, 0.25): norm clipped to 0.2
    np.testing.assert_allclose(rotation_error(command.rotation, before), np.array([0, -1.0, 1.0]) * 0.2 / np.sqrt(2),
                               atol=1e-9)


@pytest.mark.parametrize("gripper_action,is_open", [(-1.0, False), (0.0, False), (1e-6, True), (1.0, True), (3.0, True)])
def test_the_gripper_opens_strictly_above_the_threshold(gripper_action, is_open):
    integrator = CommandIntegrator(limits(), np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION)
    assert integrator.apply([0, 0, 0, 0, 0, 0, gripper_action]).gripper_open is is_open
    lower = CommandIntegrator(limits(gripper_threshold=0.25), np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION)
    assert lower.apply([0, 0, 0, 0, 0, 0, -0.4]).gripper_open is True  # (−0.4 + 1) / 2 = 0.3 > 0.25


def test_rotation_error_stays_finite_when_rounding_leaves_the_valid_range():
    assert rotation_error(np.eye(3) * (1 + 4e-16), np.eye(3)).tolist() == [0.0, 0.0, 0.0]  # cos(angle) > 1
    rng = np.random.default_rng(0)
    for _ in range(20):  # half turns about axes in a coordinate plane: a diagonal entry rounds below -1
        axis = np.abs(rng.normal(size=3))
        axis[rng.integers(3)] = 0.0
        axis /= np.linalg.norm(axis)
        current = rotation_about_axis(rng.normal(size=3))
        target = rotation_about_axis(axis * np.pi) @ current
        error = rotation_error(target, current)
        assert np.all(np.isfinite(error))
        np.testing.assert_allclose(rotation_about_axis(error) @ current, target, atol=1e-6)


def test_action_values_beyond_one_count_as_one_when_the_step_limits_are_looser():
    loose = limits(max_translation=0.2, max_rotation=1.0)
    start = np.array([0.3, 0.0, 0.2])
    command = CommandIntegrator(loose, start, DOWNWARD_ROTATION).apply([3.0, -3.0, 0.5, 0, 0, -3.0, 1])
    np.testing.assert_allclose(command.position, start + [0.05, -0.05, 0.025])
    np.testing.assert_allclose(rotation_error(command.rotation, DOWNWARD_ROTATION), [0, 0, -0.25], atol=1e-12)


def test_the_integrator_starts_with_the_gripper_state_it_is_given():
    closed = CommandIntegrator(limits(), np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION, gripper_open=False)
    assert closed.command.gripper_open is False
    closed.reset(np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION)
    assert closed.command.gripper_open is True  # a reset opens the gripper unless told otherwise


def test_tilt_stays_finite_when_rounding_pushes_the_approach_axis_past_vertical():
    assert gripper_tilt(DOWNWARD_ROTATION * (1 + 4e-16)) == 0.0  # -R[2, 0] just above 1
    upward = rotation_about_axis(np.array([0.0, -np.pi / 2, 0.0]))
    assert gripper_tilt(upward * (1 + 4e-16)) == pytest.approx(np.pi)  # just below -1
