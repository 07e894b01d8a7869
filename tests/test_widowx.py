"""WidowX-250 6-DoF constants and kinematics (parl_robot/robot/widowx.py) against the published
wx250s description (interbotix mr_descriptions / URDF, ../shared/ANCHOR_FACTS.md) and the Interbotix
API's own wrapping, limit check and IK loop."""

import numpy as np
import pytest

from parl_robot.robot import widowx

DEG = np.pi / 180


def test_constants_are_the_wx250s_description():
    assert widowx.JOINT_NAMES == ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
    np.testing.assert_allclose(widowx.JOINT_LIMITS_RAD / DEG,
                               [[-180, 180], [-108, 114], [-123, 92], [-180, 180], [-100, 123], [-180, 180]])
    assert widowx.JOINT_VELOCITY_LIMIT == pytest.approx(np.pi)
    np.testing.assert_array_equal(widowx.SLEEP_JOINTS, [0.0, -1.80, 1.55, 0.0, 0.8, 0.0])
    screw_axes = [(0, 0, 1, 0, 0, 0), (0, 1, 0, -0.11065, 0, 0), (0, 1, 0, -0.36065, 0, 0.04975),
                  (1, 0, 0, 0, 0.36065, 0), (0, 1, 0, -0.36065, 0, 0.29975), (1, 0, 0, 0, 0.36065, 0)]
    np.testing.assert_array_equal(widowx.SCREW_AXES, np.array(screw_axes, float).T)
    home = np.eye(4)
    home[:3, 3] = [0.458325, 0.0, 0.36065]
    np.testing.assert_array_equal(widowx.HOME_MATRIX, home)
    np.testing.assert_array_equal(widowx.HOME_EE_POSITION, home[:3, 3])
    np.testing.assert_allclose([guess[0] / DEG for guess in widowx.DEFAULT_IK_GUESSES], [0, -120, 120])
    assert all(not np.any(guess[1:]) for guess in widowx.DEFAULT_IK_GUESSES)


def test_forward_kinematics_at_home_and_at_the_sleep_pose():
    np.testing.assert_allclose(widowx.forward_kinematics(np.zeros(6)), widowx.HOME_MATRIX, atol=1e-12)
    # Waist at 90°: the arm points along +y, the gripper frame turned with it.
    turned = widowx.forward_kinematics(np.array([90 * DEG, 0, 0, 0, 0, 0]))
    np.testing.assert_allclose(turned[:3, 3], [0.0, 0.458325, 0.36065], atol=1e-9)
    sleep = widowx.forward_kinematics(widowx.SLEEP_JOINTS)[:3, 3]
    assert 0.0 < sleep[0] < 0.2 and abs(sleep[1]) < 1e-9 and 0.0 < sleep[2] < 0.2  # folded low over the base
    assert widowx.within_position_limits(widowx.SLEEP_JOINTS)


def test_pose_matrix_places_rotation_and_position():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pose = widowx.pose_matrix(np.array([0.1, 0.2, 0.3]), rotation)
    np.testing.assert_array_equal(pose[:3, :3], rotation)
    np.testing.assert_array_equal(pose[:3, 3], [0.1, 0.2, 0.3])
    np.testing.assert_array_equal(pose[3], [0, 0, 0, 1])


def test_wrapping_follows_the_api():
    wrapped = widowx.wrap_into_limits(np.array([1.5 * np.pi, 0.0, 0.0, -1.5 * np.pi, 2 * np.pi + 0.1, np.pi]))
    np.testing.assert_allclose(wrapped, [-0.5 * np.pi, 0.0, 0.0, 0.5 * np.pi, 0.1, -np.pi], atol=1e-12)
    # After wrapping to [-π, π), an angle below a joint's lower limit is shifted up by a revolution and one
    # above its upper limit down by one (the API's `_wrap_theta_list`), compared at milliradian rounding.
    below = widowx.wrap_into_limits(np.array([-179.99 * DEG, 0, 0, 0, 0, 0]))
    assert below[0] == pytest.approx(-179.99 * DEG)  # inside ±180°: unchanged
    shoulder_low = widowx.JOINT_LIMITS_RAD[1, 0]
    shifted_up = widowx.wrap_into_limits(np.array([0, shoulder_low - 0.01, 0, 0, 0, 0]))
    assert shifted_up[1] == pytest.approx(shoulder_low - 0.01 + 2 * np.pi)
    at_limit = widowx.wrap_into_limits(np.array([0, shoulder_low - 0.0004, 0, 0, 0, 0]))  # equal when rounded
    assert at_limit[1] == pytest.approx(shoulder_low - 0.0004)
    elbow_high = widowx.JOINT_LIMITS_RAD[2, 1]
    shifted_down = widowx.wrap_into_limits(np.array([0, 0, elbow_high + 0.01, 0, 0, 0]))
    assert shifted_down[2] == pytest.approx(elbow_high + 0.01 - 2 * np.pi)
    near_high = widowx.wrap_into_limits(np.array([0, 0, elbow_high + 0.0004, 0, 0, 0]))
    assert near_high[2] == pytest.approx(elbow_high + 0.0004)


def test_position_limits_are_checked_on_angles_truncated_to_milliradians():
    low, high = widowx.JOINT_LIMITS_RAD[1]  # shoulder: -1.88496 .. 1.98968 rad
    joints = np.zeros(6)
    assert widowx.within_position_limits(joints)
    for angle, inside in ((high, True), (high + 0.0002, True),  # truncated to 1.989: inside
                          (high + 0.0009, False), (low, True), (low - 0.00003, True),  # -1.88499 -> -1.884
                          (low - 0.0002, False)):  # -1.88516 -> -1.885: below
        joints[1] = angle
        assert widowx.within_position_limits(joints) is inside, angle
    joints[1] = 0.0
    joints[5] = 181 * DEG
    assert not widowx.within_position_limits(joints)  # every joint is checked


def test_ik_reaches_reachable_poses_and_refuses_the_rest():
    rng = np.random.default_rng(0)
    reached = 0
    for _ in range(10):
        joints = rng.uniform(widowx.JOINT_LIMITS_RAD[:, 0] * 0.4, widowx.JOINT_LIMITS_RAD[:, 1] * 0.4)
        target = widowx.forward_kinematics(joints)
        solution, ok = widowx.solve_ik(target)
        if ok:
            reached += 1
            np.testing.assert_allclose(widowx.forward_kinematics(solution), target, atol=2e-3)
            assert widowx.within_position_limits(solution)
    assert reached >= 8
    far = widowx.pose_matrix(np.array([1.0, 0.0, 0.3]), np.eye(3))  # beyond the 650 mm reach
    solution, ok = widowx.solve_ik(far)
    assert not ok and solution.shape == (6,)


def test_ik_tries_each_guess_in_turn():
    """Targets far round the waist: the straight guess does not converge there; the API's −120° and
    +120° guesses are tried next, in that order."""
    guesses = widowx.DEFAULT_IK_GUESSES
    for joints, reached_from in (([-2.012, 0.612, 0.62, 0.0, 0.639, 0.0], 1), ([2.864, 0.748, 0.677, 0.0, 0.744, 0.0], 2)):
        target = widowx.forward_kinematics(np.array(joints))
        alone = [widowx.solve_ik(target, guesses=[guess])[1] for guess in guesses]
        assert alone == [index == reached_from for index in range(3)]
        solution, ok = widowx.solve_ik(target)
        assert ok
        np.testing.assert_allclose(widowx.forward_kinematics(solution), target, atol=2e-3)


def test_with_no_guess_left_ik_returns_six_zeros_and_failure():
    joints, reached = widowx.solve_ik(widowx.forward_kinematics(np.zeros(6)), guesses=[])
    assert reached is False and joints.dtype == float and joints.tolist() == [0.0] * 6
