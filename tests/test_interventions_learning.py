"""Learning from the operator's interventions: the replay buffer keeps who acted and drops steps that were
not executed; distillation takes the operator's executed actions as targets (weighted, switchable);
the trainer reports the intervention rate."""

import numpy as np
import pytest
import torch

from parl_robot.config import LearnerConfig, with_overrides
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED, SOURCE_POLICY, EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.losses import discounted_returns
from parl_robot.rl.replay_buffer import ReplayBuffer
from test_trainer import make_trainer, through_warmup

SPEC = ObservationSpec(state_dim=3)


def _episode(sources, success=False, action_dim=2) -> EpisodeData:
    steps = len(sources)
    states = np.arange((steps + 1) * 3, dtype=np.float32).reshape(steps + 1, 3)
    actions = np.stack([np.full(action_dim, t / 10, np.float32) for t in range(steps)])
    rewards = -1.0 - np.arange(steps, dtype=np.float32)  # distinct per step
    return EpisodeData(states, actions, rewards, success, sources=np.asarray(sources, np.uint8))


def test_steps_not_executed_never_enter_the_replay_buffer_and_sources_are_kept():
    buffer = ReplayBuffer(SPEC, 2, 100, discount=0.5)
    episode = _episode([SOURCE_POLICY, SOURCE_NOT_EXECUTED, SOURCE_INTERVENTION, SOURCE_POLICY])
    serial = buffer.add_episode(episode)
    assert len(buffer) == 3
    batch = buffer.gather(np.arange(3))
    # Steps 0, 2, 3: each transition goes from its own state to the next one, with its own action.
    np.testing.assert_array_equal(batch["state"], episode.states[[0, 2, 3]])
    np.testing.assert_array_equal(batch["next_state"], episode.states[[1, 3, 4]])
    np.testing.assert_array_equal(batch["action"], episode.actions[[0, 2, 3]])
    assert batch["source"].tolist() == [SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_POLICY]
    # Monte-Carlo returns count every step's reward, the one of the step that was not executed too.
    np.testing.assert_allclose(batch["mc_return"], np.asarray(discounted_returns(episode.rewards, 0.5, False))[[0, 2, 3]])
    # A label corrected by the operator reaches the resident steps; the last step becomes terminal.
    rewards = np.array([-1, -2, -1, 0], np.float32)
    assert buffer.relabel_episode(serial, rewards, terminal=True)
    batch = buffer.gather(np.arange(3))
    assert batch["reward"].tolist() == [-1, -1, 0] and batch["done"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(batch["mc_return"], np.asarray(discounted_returns(rewards, 0.5, True))[[0, 2, 3]])
    assert batch["episode_success"].tolist() == [1, 1, 1]
    # An episode with no executed step adds nothing.
    assert buffer.add_episode(_episode([SOURCE_NOT_EXECUTED] * 2)) == -1 and len(buffer) == 3


def _agent(weight: float) -> PARLAgent:
    cfg = with_overrides(LearnerConfig(), {
        "policy": "gaussian", "policy_hidden": 32, "policy_blocks": 1, "critic.hidden": 32, "critic.layers": 2,
        "optimizer.num_samples": 4, "optimizer.num_kept": 2, "optimizer.local_steps": 0,
        "policy_update.distill_lr": 3e-3, "policy_update.intervention_weight": weight, "policy_ema_rate": 0.0})
    torch.manual_seed(0)
    return PARLAgent(cfg, SPEC, action_dim=2)


def _operator_batch(size=32) -> dict:
    rng = np.random.default_rng(0)
    return {"state": rng.normal(size=(size, 3)).astype(np.float32), "next_state": rng.normal(size=(size, 3)).astype(np.float32),
            "action": np.tile(np.array([[0.6, -0.4]], np.float32), (size, 1)), "reward": np.full(size, -1, np.float32),
            "done": np.zeros(size, np.float32), "mc_return": np.full(size, -5, np.float32),
            "episode_success": np.zeros(size, np.float32), "source": np.full(size, SOURCE_INTERVENTION, np.uint8)}


def test_operator_actions_in_failed_episodes_are_distilled_and_the_policy_moves_toward_them():
    agent = _agent(weight=1.0)
    batch = _operator_batch()
    obs = agent.observation_tensors(batch)
    with torch.no_grad():
        before = agent.policy.sample(obs, 64).float().mean(dim=1)
    for _ in range(150):
        assert np.isfinite(agent.update_policy(batch))
    with torch.no_grad():
        after = agent.policy.sample(obs, 64).float().mean(dim=1)
    target = torch.tensor([0.6, -0.4])
    assert (after - target).norm(dim=1).mean() < 0.5 * (before - target).norm(dim=1).mean()
    assert agent.stats.intervention_targets == 150 * len(batch["action"])


def test_intervention_weight_zero_switches_it_off():
    agent = _agent(weight=0.0)
    batch = _operator_batch()
    # The states are of a failed episode and not distilled as interventions: nothing is left to distil.
    assert np.isnan(agent.update_policy(batch)) and agent.stats.policy_updates == 0
    assert agent.stats.intervention_targets == 0


def test_the_trainer_reports_the_last_episodes_intervention_rate():
    trainer, _ = make_trainer()
    through_warmup(trainer)
    episode = _episode([SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED])
    trainer.add_episode(episode, False)
    assert trainer.stats()["intervention_rate_last_episode"] == 0.5
