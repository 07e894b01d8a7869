"""The sparse success reward at its edges (issue 33): the target box is closed on every face, the
gripper rule is switchable, and the step reward is exactly success_reward * success + reward_bias."""

import itertools

import numpy as np
import pytest

from parl_robot.config import RewardConfig
from parl_robot.perception.success import is_success, object_in_target, step_reward

LOW, HIGH = np.array([0.25, 0.0625, 0.125]), np.array([0.375, 0.125, 0.25])  # exact in binary
REWARD = RewardConfig(target_low=LOW.tolist(), target_high=HIGH.tolist())


@pytest.mark.parametrize("axis", range(3))
def test_the_target_box_includes_its_faces_and_nothing_beyond(axis):
    centre = (LOW + HIGH) / 2
    for face, outward in ((LOW, -1.0), (HIGH, 1.0)):
        on_face = centre.copy()
        on_face[axis] = face[axis]
        assert object_in_target(on_face, REWARD)
        beyond = on_face.copy()
        beyond[axis] = np.nextafter(face[axis], face[axis] + outward)
        assert not object_in_target(beyond, REWARD)
        assert not is_success(beyond, True, REWARD)


def test_every_corner_is_inside_and_a_list_position_works():
    for corner in itertools.product(*zip(LOW, HIGH)):
        assert object_in_target(list(corner), REWARD) is True
    assert object_in_target([0.0, 0.0, 0.0], REWARD) is False


def test_the_gripper_must_be_open_only_when_required():
    inside = (LOW + HIGH) / 2
    assert is_success(inside, True, REWARD) is True and is_success(inside, False, REWARD) is False
    relaxed = RewardConfig(target_low=LOW.tolist(), target_high=HIGH.tolist(), require_gripper_open=False)
    assert is_success(inside, False, relaxed) is True and is_success(inside, True, relaxed) is True
    assert is_success(LOW - 0.01, True, relaxed) is False and is_success(LOW - 0.01, False, relaxed) is False


def test_step_reward_is_scaled_success_plus_bias():
    assert step_reward(True, REWARD) == 0.0 and step_reward(False, REWARD) == -1.0
    custom = RewardConfig(success_reward=3.0, reward_bias=0.5)
    assert step_reward(True, custom) == 3.5 and step_reward(False, custom) == 0.5
    assert isinstance(step_reward(True, custom), float)
