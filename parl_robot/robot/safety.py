"""Turning 7-D end-effector delta actions into safe absolute commands.

Convention (BridgeData / OpenVLA / PA-RL on WidowX): ``[dx, dy, dz, droll, dpitch, dyaw, gripper]``
in [-1, 1], scaled per dimension by the task's ``action_scale``; rotation deltas are about the
end-effector position with world-aligned axes; the gripper is absolute, mapped to [0 = closed,
1 = open] and thresholded. The integrator accumulates the *commanded* pose, never the measured one
(commanding the measured pose makes a real arm sag).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parl_robot.config import ControlConfig

ACTION_DIM = 7


class ActionError(ValueError):
    """An action message is malformed (wrong length, NaN/Inf)."""


def validate_action(values) -> np.ndarray:
    action = np.asarray(values, dtype=np.float64).reshape(-1)
    if action.shape != (ACTION_DIM,):
        raise ActionError(f"action must have {ACTION_DIM} values, got {action.shape[0]}")
    if not np.all(np.isfinite(action)):
        raise ActionError(f"action contains NaN or Inf: {action.tolist()}")
    return action


def rotation_about_axis(rotation_vector: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrix for a rotation vector (axis * angle)."""
    angle = float(np.linalg.norm(rotation_vector))
    if angle < 1e-12:
        return np.eye(3)
    axis = rotation_vector / angle
    skew = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector taking `current` to `target` (both 3x3)."""
    relative = target @ current.T
    cos_angle = np.clip((np.trace(relative) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos_angle)
    vee = np.array([relative[2, 1] - relative[1, 2], relative[0, 2] - relative[2, 0], relative[1, 0] - relative[0, 1]])
    if angle < 1e-6:
        return 0.5 * vee
    if np.pi - angle < 1e-4:
        # Near π the antisymmetric part vanishes; recover the axis from the symmetric part,
        # (R + Rᵀ)/2 = cos θ I + (1 − cos θ) a aᵀ: its column with the largest diagonal is a multiple of a
        # (relative signs of the components included), and the antisymmetric part (2 sin θ a) decides
        # the overall sign while it is not zero (at exactly π, a and −a are the same half turn).
        outer = ((relative + relative.T) / 2 - cos_angle * np.eye(3)) / (1 - cos_angle)
        column = int(np.argmax(np.diag(outer)))
        axis = outer[:, column] / np.sqrt(max(outer[column, column], 1e-12))
        if axis @ vee < 0:
            axis = -axis
        return angle * axis / max(np.linalg.norm(axis), 1e-12)
    return angle / (2 * np.sin(angle)) * vee


# Gripper pointing straight down (x axis of the gripper frame along world -z).
DOWNWARD_ROTATION = rotation_about_axis(np.array([0.0, np.pi / 2, 0.0]))


@dataclass
class EECommand:
    position: np.ndarray  # (3,) metres, robot base frame
    rotation: np.ndarray  # (3, 3)
    gripper_open: bool


@dataclass
class SafetyLimits:
    action_scale: np.ndarray
    box_low: np.ndarray
    box_high: np.ndarray
    max_translation: float  # per axis, metres per step (Bridge/OpenVLA clip each axis)
    max_rotation: float  # norm of the rotation step, radians
    gripper_threshold: float
    yaw_limits: tuple[float, float] = (-np.pi, np.pi)  # gripper yaw about world z
    max_tilt: float = np.pi  # angle between the gripper axis and straight down

    @classmethod
    def from_config(cls, control: ControlConfig) -> "SafetyLimits":
        return cls(
            action_scale=np.asarray(control.action_scale, dtype=float),
            box_low=np.asarray(control.safety_box_low, dtype=float),
            box_high=np.asarray(control.safety_box_high, dtype=float),
            max_translation=control.max_translation_per_step_m,
            max_rotation=control.max_rotation_per_step_rad,
            gripper_threshold=control.gripper_threshold,
            yaw_limits=(float(control.yaw_limits_rad[0]), float(control.yaw_limits_rad[1])),
            max_tilt=control.max_tilt_rad,
        )

    def clip_position(self, position: np.ndarray) -> np.ndarray:
        return np.clip(position, self.box_low, self.box_high)


def gripper_yaw(rotation: np.ndarray) -> float:
    """Yaw about world z of a gripper pointing down: the heading of its y axis, 0 at DOWNWARD_ROTATION."""
    return float(np.arctan2(-rotation[0, 1], rotation[1, 1]))


def gripper_tilt(rotation: np.ndarray) -> float:
    """Angle between the gripper's approach axis (its x axis) and straight down."""
    return float(np.arccos(np.clip(-rotation[2, 0], -1.0, 1.0)))


def bound_orientation(rotation: np.ndarray, yaw_limits: tuple[float, float], max_tilt: float) -> np.ndarray:
    """The rotation with its tilt from straight down and its yaw clamped into the bounds."""
    tilt = gripper_tilt(rotation)
    if tilt > max_tilt:
        # Rotate back toward straight down about the axis perpendicular to both directions.
        approach = rotation[:, 0]
        axis = np.cross(approach, np.array([0.0, 0.0, -1.0]))
        norm = float(np.linalg.norm(axis))
        if norm > 1e-9:
            rotation = rotation_about_axis(axis / norm * (tilt - max_tilt)) @ rotation
    yaw = gripper_yaw(rotation)
    clamped = float(np.clip(yaw, *yaw_limits))
    if clamped != yaw:
        rotation = rotation_about_axis(np.array([0.0, 0.0, clamped - yaw])) @ rotation
    return rotation


def _clip_norm(vector: np.ndarray, max_norm: float) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector if norm <= max_norm else vector * (max_norm / norm)


class CommandIntegrator:
    """Accumulates delta actions into the commanded end-effector pose, clipped to the limits."""

    def __init__(self, limits: SafetyLimits, position: np.ndarray, rotation: np.ndarray, gripper_open: bool = True):
        self.limits = limits
        self.reset(position, rotation, gripper_open)

    def reset(self, position: np.ndarray, rotation: np.ndarray, gripper_open: bool = True) -> None:
        self.command = EECommand(self.limits.clip_position(np.asarray(position, float)), np.asarray(rotation, float), gripper_open)

    def apply(self, action: np.ndarray) -> EECommand:
        action = np.clip(validate_action(action), -1.0, 1.0)
        scaled = action * self.limits.action_scale
        translation = np.clip(scaled[:3], -self.limits.max_translation, self.limits.max_translation)
        rotation_delta = _clip_norm(scaled[3:6], self.limits.max_rotation)
        gripper_value = (action[6] + 1.0) / 2.0  # [-1, 1] -> [0 closed, 1 open]
        rotation = rotation_about_axis(rotation_delta) @ self.command.rotation
        self.command = EECommand(
            position=self.limits.clip_position(self.command.position + translation),
            rotation=bound_orientation(rotation, self.limits.yaw_limits, self.limits.max_tilt),
            gripper_open=bool(gripper_value > self.limits.gripper_threshold),
        )
        return self.command
