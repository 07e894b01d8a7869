"""Sparse task success from object positions and gripper state (the paper's real-robot reward)."""

from __future__ import annotations

import numpy as np

from parl_robot.config import RewardConfig


def object_in_target(object_position: np.ndarray, reward: RewardConfig) -> bool:
    position = np.asarray(object_position, dtype=float)
    return bool(np.all(position >= reward.target_low) and np.all(position <= reward.target_high))


def is_success(object_position: np.ndarray, gripper_open: bool, reward: RewardConfig) -> bool:
    """Success = the task object lies in the target region and, if required, the gripper is open."""
    return object_in_target(object_position, reward) and (gripper_open or not reward.require_gripper_open)


def step_reward(success: bool, reward: RewardConfig) -> float:
    """Biased sparse reward: with the defaults 0 on success and -1 otherwise."""
    return reward.success_reward * float(success) + reward.reward_bias
