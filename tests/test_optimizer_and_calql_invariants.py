"""Action optimization and Cal-QL checked on hand-made critics whose answers are known (issue 33):
a gradient step that overshoots the peak is rejected and the candidate stops there; the agent's
conservative term pushes Q on out-of-distribution actions down relative to data actions."""

import numpy as np
import pytest
import torch

from parl_robot.config import CriticConfig, LearnerConfig, OptimizerConfig
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, optimize_actions
from parl_robot.rl.agent import PARLAgent


class HandCritic:
    """Twin heads given by a function of the action (batch, c, A) -> (batch, c); counts its calls."""

    def __init__(self, q_of_action, second_head_offset=0.0):
        self.q_of_action, self.offset, self.calls = q_of_action, second_head_offset, 0

    def q_values(self, features, actions):
        self.calls += 1
        q = self.q_of_action(actions)
        return torch.stack([q, q + self.offset])  # (2, batch, c)


def peak_at_half(actions):  # a tent: slope ±1, so the step length is step_size whatever the distance
    return -(actions[..., 0] - 0.5).abs()


def run(critic, samples, dataset_actions=None, **config):
    samples = torch.tensor(samples, dtype=torch.float32)
    config = {"num_kept": samples.shape[1], "local_steps": 10, "step_size": 0.3, **config}
    return optimize_actions(critic, torch.zeros(samples.shape[0], 1), samples, ActionOptimizerConfig(**config),
                            dataset_actions=dataset_actions)


def test_a_step_that_overshoots_the_peak_is_rejected_and_the_candidate_stops():
    critic = HandCritic(peak_at_half)
    result = run(critic, [[[0.0], [0.9]]])
    # 0.9 -> 0.6 accepted, 0.6 -> 0.3 rejected; 0.0 -> 0.3 -> 0.6 accepted, 0.6 -> 0.3 rejected.
    torch.testing.assert_close(result.candidates, torch.tensor([[[0.6], [0.6]]]))
    torch.testing.assert_close(result.q_values, torch.tensor([[-0.1, -0.1]]))
    torch.testing.assert_close(result.initial_q_values, torch.tensor([[-0.4, -0.5]]))  # ranked best first
    # Ranking (1 call) + three steps of gradient and trial (2 calls each); then nothing is active.
    assert critic.calls == 1 + 3 * 2


def test_a_step_that_only_ties_is_rejected():
    critic = HandCritic(lambda a: -(a[..., 0] - 0.5) ** 2)
    result = run(critic, [[[0.0]]], step_size=1.0)  # gradient 1: 0.0 -> 1.0, the same Q (-0.25)
    assert result.candidates.item() == 0.0 and result.q_values.item() == -0.25 and critic.calls == 3


def test_steps_are_clamped_to_the_action_bounds_and_go_uphill_on_either_side():
    rising = run(HandCritic(lambda a: a[..., 0]), [[[0.9]]], step_size=0.5, local_steps=1)
    falling = run(HandCritic(lambda a: -a[..., 0]), [[[-0.9]]], step_size=0.5, local_steps=1)
    assert rising.candidates.item() == 1.0 and rising.q_values.item() == 1.0 and rising.actions.item() == 1.0
    assert falling.candidates.item() == -1.0 and falling.q_values.item() == 1.0


def test_no_local_steps_keeps_the_ranked_samples():
    critic = HandCritic(peak_at_half)
    result = run(critic, [[[0.0], [0.9]]], local_steps=0)
    torch.testing.assert_close(result.candidates, torch.tensor([[[0.9], [0.0]]]))  # best first
    assert critic.calls == 1 and result.actions.item() == pytest.approx(0.9)


def test_global_step_keeps_the_top_m_and_appends_the_dataset_action():
    samples = [[[-0.9], [0.45], [0.1], [0.7]], [[0.3], [-0.5], [0.5], [0.2]]]
    result = run(HandCritic(peak_at_half), samples, num_kept=2, local_steps=0,
                 dataset_actions=torch.tensor([[0.4], [-1.0]]))
    torch.testing.assert_close(result.candidates[..., 0], torch.tensor([[0.45, 0.7, 0.4], [0.5, 0.3, -1.0]]))
    torch.testing.assert_close(result.q_values, torch.tensor([[-0.05, -0.2, -0.1], [0.0, -0.2, -1.5]]))
    torch.testing.assert_close(result.actions[:, 0], torch.tensor([0.45, 0.5]))
    assert run(HandCritic(peak_at_half), samples, num_kept=10).candidates.shape == (2, 4, 1)  # m > k keeps all k


def test_the_dataset_action_is_chosen_when_it_is_best():
    result = run(HandCritic(peak_at_half), [[[-0.8], [0.95]]], num_kept=1, local_steps=0,
                 dataset_actions=torch.tensor([[0.5]]))
    assert result.actions.item() == 0.5 and result.candidates.shape == (1, 2, 1)


def test_q_is_the_min_of_the_heads_unless_mean_is_asked_for():
    critic = HandCritic(peak_at_half, second_head_offset=-1.0)
    torch.testing.assert_close(run(critic, [[[0.0]]], local_steps=0).q_values, torch.tensor([[-1.5]]))
    torch.testing.assert_close(run(critic, [[[0.0]]], local_steps=0, ensemble="mean").q_values, torch.tensor([[-1.0]]))


def test_mean_ensemble_and_state_features_reach_every_q_evaluation_with_2d_actions():
    class SlopedHeads:  # heads a0 + f and 3 a0 - 1 + f, with f the state feature: min and mean differ
        def q_values(self, features, actions):
            state_value = features[:, :1]  # (batch, 1), broadcast over the candidates
            return torch.stack([actions[..., 0] + state_value, 3 * actions[..., 0] - 1 + state_value])

    samples = torch.tensor([[[0.0, 0.7]], [[0.0, -0.7]]])  # (batch 2, k 1, A 2)
    result = optimize_actions(SlopedHeads(), torch.tensor([[0.0], [10.0]]), samples,
                              ActionOptimizerConfig(num_kept=1, local_steps=1, step_size=0.1, ensemble="mean"),
                              dataset_actions=torch.tensor([[0.0, 0.1], [0.0, -0.1]]))
    torch.testing.assert_close(result.initial_q_values, torch.tensor([[-0.5, -0.5], [9.5, 9.5]]))
    # d(mean)/d(a0) = 2: every candidate moves 0.2 along a0 and keeps its a1.
    torch.testing.assert_close(result.candidates, torch.tensor([[[0.2, 0.7], [0.2, 0.1]], [[0.2, -0.7], [0.2, -0.1]]]))
    torch.testing.assert_close(result.q_values, torch.tensor([[-0.1, -0.1], [9.9, 9.9]]))


def test_softmax_selection_samples_in_proportion_to_exp_q_over_temperature():
    rows = 4000
    samples = torch.tensor([[[0.5], [-0.5]]]).expand(rows, -1, -1)  # Q = 0 and -1
    torch.manual_seed(0)
    for temperature, expected in [(1.0, 1 / (1 + np.exp(-1.0))), (0.5, 1 / (1 + np.exp(-2.0)))]:
        chosen = optimize_actions(HandCritic(peak_at_half), torch.zeros(rows, 1), samples,
                                  ActionOptimizerConfig(num_kept=2, local_steps=0, selection="softmax",
                                                        temperature=temperature)).actions
        assert (chosen[:, 0] == 0.5).float().mean().item() == pytest.approx(expected, abs=0.03)


# ----- Cal-QL, at the agent ---------------------------------------------------------------------------

SPEC = ObservationSpec(state_dim=3)


def calql_gap(cql_alpha, updates=40):
    """Mean Q on the data actions minus mean Q on uniform actions, after `updates` critic steps on a
    batch whose data actions all sit in one corner of the action box."""
    cfg = LearnerConfig(policy="diffusion", policy_hidden=32, policy_blocks=1, seed=3,
                        critic=CriticConfig(hidden=64, layers=2, cql_alpha=cql_alpha, cql_num_actions=8),
                        optimizer=OptimizerConfig(num_samples=4, num_kept=2, local_steps=0))
    agent = PARLAgent(cfg, SPEC, action_dim=2)
    rng = np.random.default_rng(0)
    size = 32
    batch = {"state": rng.normal(size=(size, 3)).astype(np.float32),
             "next_state": rng.normal(size=(size, 3)).astype(np.float32),
             "action": np.tile(np.float32([0.8, -0.8]), (size, 1)), "reward": np.full(size, -1.0, np.float32),
             "done": np.zeros(size, np.float32), "mc_return": np.full(size, -40.0, np.float32)}

    def gap():
        with torch.no_grad():
            obs = agent.observation_tensors(batch)
            features = agent.critic.encode(obs)
            q_data = agent.critic.q_values(features, torch.as_tensor(batch["action"])).min(0).values  # (batch,)
            uniform = torch.rand(size, 64, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
            q_uniform = agent.critic.q_values(features, uniform).min(0).values  # (batch, 64)
        return (q_data - q_uniform.mean(1)).mean().item()

    before = gap()
    for _ in range(updates):
        agent.update_critic(batch)
    return gap() - before


def test_calql_pushes_q_on_out_of_distribution_actions_below_data_actions():
    with_calql, without = calql_gap(cql_alpha=1.0), calql_gap(cql_alpha=0.0)
    assert with_calql > 0.5, with_calql
    assert with_calql > without + 0.5, (with_calql, without)
    assert abs(without) < 0.5 * with_calql, (with_calql, without)


def test_softmax_selection_draws_from_the_given_generator():
    samples = torch.tensor([[[0.5], [-0.5], [0.0]]]).expand(256, -1, -1)
    draws = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global stream differs; the generator alone decides
        draws.append(optimize_actions(HandCritic(peak_at_half), torch.zeros(256, 1), samples,
                                      ActionOptimizerConfig(num_kept=3, local_steps=0, selection="softmax"),
                                      generator=torch.Generator().manual_seed(7)).actions)
    assert torch.equal(draws[0], draws[1]) and len(set(draws[0][:, 0].tolist())) == 3


def test_optimizer_defaults_are_the_papers():
    cfg = ActionOptimizerConfig()
    assert (cfg.num_kept, cfg.local_steps, cfg.step_size) == (10, 10, 3e-4)
    assert (cfg.selection, cfg.temperature, cfg.ensemble) == ("argmax", 1.0, "min")
