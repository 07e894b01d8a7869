"""The low-dimensional observation vector, built identically in the sim env and the learner node."""

from __future__ import annotations

import numpy as np

STATE_DIM = 7  # ee xyz (3), gripper open (1), task object xyz (3)


def state_vector(ee_position: np.ndarray, gripper_open: bool, object_position: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.asarray(ee_position, np.float32), [np.float32(gripper_open)], np.asarray(object_position, np.float32)]
    ).astype(np.float32)
