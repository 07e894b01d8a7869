"""WidowX-250 6-DoF (wx250s): kinematics, limits and poses, as the Interbotix driver defines them.

The screw axes and home pose are `interbotix_xs_modules.xs_robot.mr_descriptions.wx250s`; limits
and the sleep pose are the driver's URDF / motor config. `solve_ik` reproduces what
`InterbotixArmXSInterface.set_ee_pose_matrix` does before it moves the arm (modern_robotics
`IKinSpace` from each initial guess, angles wrapped into the limits, the joint-position check), so
the calibration check, the MuJoCo backend and the hardware agree on which targets are reachable.
"""

from __future__ import annotations

import modern_robotics as mr
import numpy as np

JOINT_NAMES = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")
JOINT_LIMITS_RAD = np.deg2rad(
    np.array([[-180, 180], [-108, 114], [-123, 92], [-180, 180], [-100, 123], [-180, 180]], dtype=float)
)
JOINT_VELOCITY_LIMIT = np.pi  # rad/s, every joint (URDF)
SLEEP_JOINTS = np.array([0.0, -1.80, 1.55, 0.0, 0.8, 0.0])
HOME_EE_POSITION = np.array([0.458325, 0.0, 0.36065])

# Space-frame screw axes (one per column) and the home configuration M (ee_gripper_link).
SCREW_AXES = np.array([
    [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.11065, 0.0, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.04975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
    [0.0, 1.0, 0.0, -0.36065, 0.0, 0.29975],
    [1.0, 0.0, 0.0, 0.0, 0.36065, 0.0],
]).T
HOME_MATRIX = np.array([
    [1.0, 0.0, 0.0, 0.458325],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.36065],
    [0.0, 0.0, 0.0, 1.0],
])
# The API's default IK seeds when no custom guess is given: straight, and the waist at ±120°.
DEFAULT_IK_GUESSES = (
    np.zeros(6),
    np.array([np.deg2rad(-120), 0, 0, 0, 0, 0]),
    np.array([np.deg2rad(120), 0, 0, 0, 0, 0]),
)
_REV = 2 * np.pi


def pose_matrix(position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = position
    return pose


def forward_kinematics(joints: np.ndarray) -> np.ndarray:
    """4x4 pose of the gripper frame for six joint angles."""
    return mr.FKinSpace(HOME_MATRIX, SCREW_AXES, np.asarray(joints, float))


def wrap_into_limits(joints: np.ndarray) -> np.ndarray:
    """The API's `_wrap_theta_list`: wrap to [-π, π), then shift by a revolution into the limits."""
    wrapped = (np.asarray(joints, float) + np.pi) % _REV - np.pi
    for index, (low, high) in enumerate(JOINT_LIMITS_RAD):
        if round(wrapped[index], 3) < round(low, 3):
            wrapped[index] += _REV
        elif round(wrapped[index], 3) > round(high, 3):
            wrapped[index] -= _REV
    return wrapped


def within_position_limits(joints: np.ndarray) -> bool:
    """The API's position check (angles truncated to milliradians first, as `_check_joint_limits`)."""
    truncated = np.trunc(np.asarray(joints, float) * 1000) / 1000
    return bool(np.all((JOINT_LIMITS_RAD[:, 0] <= truncated) & (truncated <= JOINT_LIMITS_RAD[:, 1])))


def solve_ik(pose: np.ndarray, guesses=DEFAULT_IK_GUESSES) -> tuple[np.ndarray, bool]:
    """Joint angles reaching `pose` (4x4) within the position limits, tried from each guess in turn."""
    joints = np.zeros(6)
    for guess in guesses:
        joints, converged = mr.IKinSpace(SCREW_AXES, HOME_MATRIX, pose, np.asarray(guess, float), 0.001, 0.001)
        if converged:
            joints = wrap_into_limits(joints)
            if within_position_limits(joints):
                return joints, True
    return np.asarray(joints, float), False
