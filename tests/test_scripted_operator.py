"""The scripted sim operator (parl_robot/sim/scripted_operator.py): takes over when the policy makes no
progress, drives the task forward, hands back, and the rollout records who acted."""

import numpy as np
import pytest

from parl_robot.config import load_config
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY
from parl_robot.sim.env import WidowXSimEnv
from parl_robot.sim.rollout import rollout
from parl_robot.sim.scripted_operator import OperatorConfig, ScriptedOperator


@pytest.fixture(scope="module")
def env():
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"])
    environment = WidowXSimEnv(cfg)
    yield cfg, environment
    environment.close()


def test_a_stalled_policy_is_taken_over_for_a_while_then_handed_back(env):
    cfg, environment = env
    operator = ScriptedOperator(cfg, OperatorConfig(stall_steps=4, takeover_steps=6, max_takeovers=1), seed=0)
    still = lambda obs: np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # noqa: E731  a policy that never moves
    episode = rollout(environment, still, max_steps=30, seed=3, operator=operator)
    sources = episode.sources.tolist()
    first = sources.index(SOURCE_INTERVENTION)
    assert sources[:first] == [SOURCE_POLICY] * first and first <= 5  # a stall of 4 steps (the first counts as progress)
    assert sources[first:first + 6] == [SOURCE_INTERVENTION] * 6  # then 6 steps of driving
    assert sources[first + 6:] == [SOURCE_POLICY] * (len(sources) - first - 6)  # handed back; one take-over at most
    # The operator's steps moved the arm toward the cup; the idle policy's steps did not.
    moved = np.linalg.norm(np.diff(episode.states[:, :3], axis=0), axis=1)
    assert moved[first:first + 6].mean() > 10 * max(moved[:first].mean(), 1e-6)
    np.testing.assert_array_equal(episode.actions[:first, :6], 0.0)


def test_a_policy_that_makes_progress_is_never_taken_over(env):
    cfg, environment = env
    operator = ScriptedOperator(cfg, OperatorConfig(stall_steps=4), seed=0)
    from parl_robot.sim.demonstrator import DemonstratorConfig, ScriptedDemonstrator

    expert = ScriptedDemonstrator(cfg, DemonstratorConfig(action_noise=0.0, grasp_offset_std_m=0.0,
                                                          side_approach_probability=0.0))
    episode = rollout(environment, lambda obs: expert.act(obs["state"]), max_steps=cfg.control.max_episode_steps,
                      seed=3, operator=operator)
    assert episode.terminal and set(episode.sources.tolist()) == {SOURCE_POLICY}


def test_the_operator_alone_completes_the_task_when_the_policy_never_moves(env):
    cfg, environment = env
    operator = ScriptedOperator(cfg, OperatorConfig(stall_steps=1, takeover_steps=200, max_takeovers=5), seed=1)
    still = lambda obs: np.array([0, 0, 0, 0, 0, 0, 1], np.float32)  # noqa: E731
    episode = rollout(environment, still, max_steps=cfg.control.max_episode_steps, seed=4, operator=operator)
    assert episode.terminal, "the scripted operator, driving, should finish the task"
    assert (episode.sources == SOURCE_INTERVENTION).mean() > 0.8


def test_bad_operator_settings_are_refused():
    with pytest.raises(ValueError, match="stall_steps"):
        OperatorConfig(stall_steps=0)
