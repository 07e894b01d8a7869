"""What PARLAgent hands to its pieces, checked where mutation testing found it unchecked (issue 33):
the conservative term's inputs (uniform actions on [-1, 1]^A, their log-density, the configured
temperature, cached policy samples when the batch has them), training mode in behaviour cloning,
the acting contract (dtypes, the best Q), state normalization for every network, and checkpoints
that carry the value network and the policy average."""

import math

import numpy as np
import pytest
import torch

import parl_robot.rl.agent as agent_module
from parl_robot.config import LearnerConfig, with_overrides
from parl_robot.nets.encoders import ObservationSpec, StateNormalizer
from parl_robot.rl.agent import PARLAgent

SPEC = ObservationSpec(state_dim=3)
SMALL = {"policy_hidden": 32, "policy_blocks": 2, "critic.hidden": 32, "critic.layers": 2, "optimizer.num_samples": 8,
         "optimizer.num_kept": 3, "optimizer.local_steps": 2, "optimizer.step_size": 0.05}


def _agent(changes: dict | None = None) -> PARLAgent:
    return PARLAgent(with_overrides(LearnerConfig(), {**SMALL, **(changes or {})}), SPEC, action_dim=2)


def _batch(size: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(size=(size, 3)).astype(np.float32), "next_state": rng.normal(size=(size, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, (size, 2)).astype(np.float32), "reward": -np.ones(size, np.float32),
            "done": np.zeros(size, np.float32), "mc_return": np.full(size, -5.0, np.float32)}


def _spy(monkeypatch, name: str) -> list[dict]:
    """Record the arguments of `parl_robot.rl.agent.<name>` (a loss function) and still compute it."""
    calls, original = [], getattr(agent_module, name)

    def spy(*args, **kwargs):
        calls.append({"args": args, "kwargs": kwargs})
        return original(*args, **kwargs)

    monkeypatch.setattr(agent_module, name, spy)
    return calls


def test_the_conservative_term_gets_uniform_actions_their_density_and_the_configured_temperature(monkeypatch):
    agent = _agent({"critic.cql_temperature": 2.5, "critic.cql_num_actions": 64})
    calls = _spy(monkeypatch, "calql_regularizer")
    scored = []
    q_values = agent.critic.q_values
    agent.critic.q_values = lambda features, actions: scored.append(actions.detach().clone()) or q_values(features, actions)
    agent.update_critic(_batch())
    q_policy, q_data, mc_returns, q_random, log_density, temperature = calls[0]["args"]
    assert temperature == 2.5 and log_density == pytest.approx(-2 * math.log(2.0))  # uniform density on [-1, 1]^2
    assert torch.equal(mc_returns, torch.full((6,), -5.0))
    uniform = next(actions for actions in scored if actions.dim() == 3 and actions.shape[1] == 64
                   and not torch.equal(actions, scored[-1]))
    assert uniform.min() >= -1.0 and uniform.max() <= 1.0
    assert uniform.min() < -0.9 and uniform.max() > 0.9 and abs(float(uniform.mean())) < 0.1  # all of [-1, 1]
    assert q_random.shape == (2, 6, 64) and q_policy.shape == (2, 6, 64)


def test_the_importance_sampled_term_gets_log_densities_and_the_temperature(monkeypatch):
    agent = _agent({"policy": "gaussian", "critic.cql_term": "importance_sampled", "critic.cql_temperature": 0.5,
                    "critic.cql_num_actions": 4})
    calls = _spy(monkeypatch, "calql_importance_sampled_regularizer")
    log_probs = []
    sample = agent.policy.sample_with_log_prob
    agent.policy.sample_with_log_prob = lambda obs, count: (lambda out: log_probs.append(out[1]) or out)(sample(obs, count))
    agent.update_critic(_batch())
    args, kwargs = calls[0]["args"], calls[0]["kwargs"]
    q_random, log_density, q_current, log_pi_current, q_next, log_pi_next = args[:6]
    assert log_density == pytest.approx(-2 * math.log(2.0))
    torch.testing.assert_close(log_pi_current, log_probs[0].float())  # the log-densities column, not an action's
    torch.testing.assert_close(log_pi_next, log_probs[1].float())
    assert (args[8] if len(args) > 8 else kwargs["temperature"]) == 0.5


def test_cached_policy_samples_are_used_when_the_batch_has_them(monkeypatch):
    for term in ("policy_samples", "optimized_actions"):
        agent = _agent({"critic.cql_term": term, "critic.cql_num_actions": 3})
        batch = _batch()
        batch["policy_samples"] = np.random.default_rng(1).uniform(-1, 1, (6, 8, 2)).astype(np.float32)
        batch["next_policy_samples"] = np.random.default_rng(2).uniform(-1, 1, (6, 8, 2)).astype(np.float32)

        def no_live_sampling(obs, count):
            raise AssertionError("sampled live although the batch carries cached samples")

        agent.sampling_policy.sample = no_live_sampling
        scored = []
        q_values = agent.critic.q_values
        agent.critic.q_values = lambda features, actions: scored.append(actions.detach().clone()) or q_values(features, actions)
        agent.update_critic(batch)
        if term == "policy_samples":  # 3 of the 8 cached samples per state, as they are
            cached = torch.as_tensor(batch["policy_samples"])
            picked = next(actions for actions in scored if actions.dim() == 3 and actions.shape[1] == 3
                          and all(any(torch.equal(row, c) for c in cached[i]) for i, state in enumerate(actions) for row in state))
            assert picked.shape == (6, 3, 2)


def test_behaviour_cloning_trains_the_policy_in_training_mode():
    agent = _agent({"policy_dropout": 0.5})
    modes = []
    loss = agent.policy.supervised_loss
    agent.policy.supervised_loss = lambda obs, actions: modes.append(agent.policy.training) or loss(obs, actions)
    agent.behaviour_clone(_batch())
    assert modes == [True] and not agent.policy.training  # back in evaluation mode after


def test_act_takes_float64_states_and_returns_a_float32_action_and_the_best_q():
    agent = _agent()
    state = np.random.default_rng(3).normal(size=3)  # float64, as a ROS message's values arrive
    torch.manual_seed(0)
    action, q = agent.act({"state": state})
    assert action.dtype == np.float32 and action.shape == (2,)
    torch.manual_seed(0)
    result = agent.control_step({"state": torch.as_tensor(state, dtype=torch.float32).unsqueeze(0)})
    assert isinstance(q, float) and q == pytest.approx(float(result.q_values.max()))


def test_every_network_gets_the_state_statistics_even_without_an_average_policy():
    agent = _agent({"policy_ema_rate": 0.0, "critic.kind": "iql"})  # policy_ema is None, value exists
    states = np.random.default_rng(4).normal(3.0, 2.0, size=(50, 3))
    agent.fit_state_normalization(states)
    normalizers = [module for network in (agent.policy, agent.critic, agent.target_critic, agent.value)
                   for module in network.modules() if isinstance(module, StateNormalizer)]
    assert len(normalizers) == 4
    for normalizer in normalizers:
        torch.testing.assert_close(normalizer.mean, torch.as_tensor(states.mean(0), dtype=torch.float32))


def test_checkpoints_carry_the_value_network_and_the_policy_average():
    agent = _agent({"critic.kind": "iql"})
    for _ in range(3):
        agent.behaviour_clone(_batch())
        agent.update_critic(_batch())
    state = agent.state_dict()
    assert {"value", "policy_ema"} <= set(state)
    restored = _agent({"critic.kind": "iql"})
    restored.load_state_dict(state)
    for mine, theirs in ((restored.value, agent.value), (restored.policy_ema, agent.policy_ema)):
        for (name, value), other in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(value, other), name
    # The average is not the policy: loading it from the policy's weights would be a different network.
    assert any(not torch.equal(a, b) for a, b in zip(agent.policy_ema.state_dict().values(),
                                                    agent.policy.state_dict().values()))


def _constant_losses(agent: PARLAgent, values: list[float]) -> list[tuple[bool, int]]:
    """Replace the policy's supervised loss by the given constants in call order (differentiable, so
    the step still runs); returns (training mode, number of states) per call."""
    calls = []
    parameter = next(agent.policy.parameters())

    def loss(obs, actions):
        calls.append((agent.policy.training, int(actions.shape[0])))
        return parameter.sum() * 0.0 + values[len(calls) - 1]

    agent.policy.supervised_loss = loss
    return calls


def test_distillation_weights_operator_targets_against_optimized_ones():
    """States where the operator intervened are distilled with the operator's action, weighted
    `intervention_weight` against the optimized targets of the other kept states, whatever the outcome."""
    agent = _agent({"policy_update.intervention_weight": 3.0, "policy_update.distill_states": "successful"})
    batch = _batch(size=6)
    batch["episode_success"] = np.array([1, 1, 1, 0, 0, 1], np.float32)
    batch["source"] = np.array([0, 1, 0, 0, 1, 0])  # interventions in a successful and a failed episode
    calls = _constant_losses(agent, [2.0, 5.0])
    loss = agent.update_policy(batch)
    assert calls == [(True, 3), (True, 2)]  # kept: successful and not intervened; then both interventions
    assert loss == pytest.approx((3 * 2.0 + 3.0 * 2 * 5.0) / (3 + 3.0 * 2)) and agent.stats.policy_loss == loss
    assert agent.stats.intervention_targets == 2
    assert np.isfinite(agent.stats.q_optimized) and np.isfinite(agent.stats.q_optimization_gain)


def test_distillation_candidates_include_the_dataset_action_and_cached_samples(monkeypatch):
    agent = _agent({"policy_update.distill_selection": "argmax", "optimizer.include_dataset_action": True})
    batch = _batch()
    batch["policy_samples"] = np.random.default_rng(5).uniform(-1, 1, (6, 8, 2)).astype(np.float32)
    seen = []
    original = agent.optimized_actions

    def spy(obs, dataset_actions=None, samples=None, optimizer_cfg=None):
        seen.append((dataset_actions, samples, optimizer_cfg))
        return original(obs, dataset_actions, samples, optimizer_cfg)

    agent.optimized_actions = spy
    agent.update_policy(batch)
    dataset_actions, samples, optimizer_cfg = seen[-1]
    torch.testing.assert_close(dataset_actions, torch.as_tensor(batch["action"]))
    assert samples is not None and samples.shape == (6, 8, 2)
    assert all(any(torch.equal(row, cached) for cached in torch.as_tensor(batch["policy_samples"])[i])
               for i, state in enumerate(samples) for row in state)  # the cache's, not fresh samples
    assert optimizer_cfg.selection == "argmax" and optimizer_cfg is agent.distill_optimizer_cfg
    agent = _agent({"optimizer.include_dataset_action": False})
    agent.optimized_actions = spy
    agent.update_policy(_batch())
    assert seen[-1][0] is None


def test_shared_distillation_optimizer_is_the_policy_optimizer():
    shared = _agent({"policy_update.distill_optimizer": "shared"})
    shared.update_policy(_batch())
    assert shared.distill_optimizer is None and shared.policy_optimizer.state
    fresh = _agent({"policy_update.distill_optimizer": "fresh"})
    fresh.update_policy(_batch())
    assert fresh.distill_optimizer is not None and not fresh.policy_optimizer.state


def test_non_finite_losses_name_the_update_that_was_skipped():
    from parl_robot.rl.agent import NumericalInstability

    agent = _agent()
    _constant_losses(agent, [float("nan"), float("nan")])
    with pytest.raises(NumericalInstability, match="^behaviour cloning loss is nan; update skipped"):
        agent.behaviour_clone(_batch())
    with pytest.raises(NumericalInstability, match="^distillation loss is nan; update skipped"):
        agent.update_policy(_batch())
    agent = _agent()
    with torch.no_grad():
        agent.critic.heads[0].output.bias.fill_(5e4)
    with pytest.raises(NumericalInstability, match=r"consider learner.critic.hl_gauss_bins > 0, the HL-Gauss critic\)$"):
        agent.update_critic(_batch())


def test_loading_restores_the_counters_and_ignores_an_entropy_weight_the_agent_does_not_tune():
    tuned = _agent({"policy": "gaussian", "policy_update.rule": "reparameterized", "policy_update.entropy_autotune": True})
    tuned.update_critic(_batch())
    state = tuned.state_dict()
    assert "log_entropy_alpha" in state
    plain = _agent({"policy": "gaussian", "policy_update.rule": "reparameterized"})
    plain.load_state_dict(state)
    assert plain.log_entropy_alpha is None and plain.stats.critic_updates == 1
