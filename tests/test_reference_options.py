"""The PA-RL reference's choices, each an option beside this project's (issue 31), checked against
hand-computed cases: TD loss form, the reference conservative term, sampled ensemble members,
best-iterate local steps, the dataset action replacing the worst candidate, distillation's own
optimizer with a warm-up, the critic optimizer reset, DDPM dropout; and config/profiles/paper.yaml
turning all of them on."""

import math

import numpy as np
import pytest
import torch

from parl_robot.config import ConfigError, LearnerConfig, load_config, with_overrides
from parl_robot.data.episode import EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, optimize_actions
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.losses import calql_importance_sampled_regularizer, calql_reference_regularizer, td_loss
from parl_robot.rl.replay_buffer import ReplayBuffer
from parl_robot.rl.trainer import Trainer

SPEC = ObservationSpec(state_dim=3)
SMALL = {"policy_hidden": 32, "policy_blocks": 1, "critic.hidden": 32, "critic.layers": 1, "optimizer.num_samples": 4,
         "optimizer.num_kept": 2, "optimizer.local_steps": 2, "schedule.batch_size": 8}


def agent_with(**changes) -> PARLAgent:
    return PARLAgent(with_overrides(LearnerConfig(), {**SMALL, **changes}), SPEC, action_dim=2, value_range=(-10.0, 1.0))


def batch(rng, size=8) -> dict:
    return {"state": rng.normal(size=(size, 3)).astype(np.float32), "next_state": rng.normal(size=(size, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, (size, 2)).astype(np.float32), "reward": -np.ones(size, np.float32),
            "done": np.zeros(size, np.float32), "mc_return": -np.full(size, 5.0, np.float32),
            "episode_success": np.ones(size, np.float32)}


def test_td_loss_forms():
    q = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # (heads, batch)
    y = torch.tensor([0.0, 1.0])
    # errors (1, 1) and (3, -1): half_mse = ½·mean(1, 1) + ½·mean(9, 1) = 0.5 + 2.5; mse = mean(1, 1, 9, 1) = 3
    assert td_loss(q, y, "half_mse").item() == pytest.approx(3.0)
    assert td_loss(q, y, "mse").item() == pytest.approx(3.0)
    q3 = torch.tensor([[2.0], [0.0], [1.0]])  # three heads, one state, target 0: errors 4, 0, 1
    assert td_loss(q3, torch.zeros(1), "half_mse").item() == pytest.approx(2.5)
    assert td_loss(q3, torch.zeros(1), "mse").item() == pytest.approx(5 / 3)
    assert td_loss(q, y, "sum_mse").item() == pytest.approx(1.0 + 5.0)  # mean(1, 1) + mean(9, 1): twice half_mse
    assert td_loss(q3, torch.zeros(1), "sum_mse").item() == pytest.approx(5.0)


def test_reference_conservative_term_by_hand():
    # One head, one state: 1 uniform action Q = 0, pi_opt(s), pi_opt(s') Q = -4 and -1 (the MC return
    # -2 lifts the first), Q(s, a_D) = 1. N = 4 values: (0, -2, -1, 1).
    q_optimized = torch.tensor([[[-4.0, -1.0]]])
    q_random = torch.tensor([[[0.0]]])
    q_data = torch.tensor([[1.0]])
    expected = math.log(math.exp(0) + math.exp(-2) + math.exp(-1) + math.exp(1)) - math.log(4) - 1.0
    value = calql_reference_regularizer(q_optimized, q_random, q_data, torch.tensor([-2.0]))
    assert value.item() == pytest.approx(expected)
    # The uniform actions carry no density correction and no Cal-QL bound: a low uniform Q stays low.
    low_random = calql_reference_regularizer(q_optimized, torch.tensor([[[-9.0]]]), q_data, torch.tensor([-2.0]))
    assert low_random.item() == pytest.approx(math.log(math.exp(-9) + math.exp(-2) + math.exp(-1) + math.exp(1)) - math.log(4) - 1)
    # Temperature 2: 2·(logsumexp(x / 2) − log N) − Q(s, a_D).
    hot = calql_reference_regularizer(q_optimized, q_random, q_data, torch.tensor([-2.0]), temperature=2.0)
    assert hot.item() == pytest.approx(2 * (math.log(sum(math.exp(x / 2) for x in (0, -2, -1, 1))) - math.log(4)) - 1)


def test_reference_term_scores_pi_opt_of_s_and_s_prime_repeated_with_as_many_uniform_actions(monkeypatch):
    import parl_robot.rl.agent as agent_module

    agent = agent_with(**{"critic.cql_term": "optimized_actions", "critic.cql_num_actions": 3, "critic.cql_alpha": 1.0,
                          "critic.members": 4, "critic.sampled_members": 2})
    seen = {}
    original = agent_module.calql_reference_regularizer
    monkeypatch.setattr(agent_module, "calql_reference_regularizer",
                        lambda qo, qr, qd, mc, t: seen.update(qo=qo, qr=qr, qd=qd) or original(qo, qr, qd, mc, t))
    picks, pushed_down = [], []
    optimized, policy_actions = agent.optimized_actions, agent._calql_policy_actions
    agent.optimized_actions = lambda *args, **kwargs: picks.append(optimized(*args, **kwargs).actions) or optimized_result(picks)
    agent._calql_policy_actions = lambda *args: pushed_down.append(policy_actions(*args)) or pushed_down[-1]

    def optimized_result(picks):
        class Result:  # the optimizer's result carrying the action just recorded
            actions = picks[-1]
        return Result

    assert math.isfinite(agent.update_critic(batch(np.random.default_rng(0))))
    next_pick, here_pick = picks  # the TD target's pi_opt(s'), then pi_opt(s): nothing else optimized
    expected = torch.stack([next_pick, here_pick], 1).repeat_interleave(3, 1)  # (8, 6, 2): each repeated 3 times
    assert torch.equal(pushed_down[0], expected) and not torch.equal(next_pick, here_pick)
    # Two sampled heads of four; 3 uniform actions beside the 6 policy ones (N = 3 + 6 + 1).
    assert seen["qo"].shape == (2, 8, 6) and seen["qr"].shape == (2, 8, 3) and seen["qd"].shape == (2, 8)


def test_sampled_members_draw_the_td_targets_min_from_two_heads_with_replacement():
    agent = agent_with(**{"critic.members": 4, "critic.sampled_members": 2, "critic.discount": 0.5})
    heads = -torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None].expand(4, 8)  # head i says Q' = -(i + 1) everywhere
    agent.target_critic.forward = lambda obs, actions: heads

    class NoOptimization:  # a' does not matter here (the heads ignore it); skip the optimizer's cost
        actions = torch.zeros(8, 2)

    agent.optimized_actions = lambda *args, **kwargs: NoOptimization
    rng = np.random.default_rng(0)
    data = batch(rng)
    data["reward"][:] = 0.0
    targets = [agent._td_target(data, agent.observation_tensors(data, "next_"))[0][0].item() / 0.5 for _ in range(4000)]
    counts = {value: targets.count(value) / len(targets) for value in (-1.0, -2.0, -3.0, -4.0)}
    # min of two draws with replacement from {-1, -2, -3, -4}: P(-4) = 7/16, P(-3) = 5/16, P(-2) = 3/16, P(-1) = 1/16
    for value, probability in zip((-4.0, -3.0, -2.0, -1.0), (7, 5, 3, 1)):
        assert counts[value] == pytest.approx(probability / 16, abs=0.03)
    every = agent_with(**{"critic.members": 4, "critic.discount": 0.5})
    every.target_critic.forward = lambda obs, actions: heads
    every.optimized_actions = lambda *args, **kwargs: NoOptimization
    assert every._td_target(data, every.observation_tensors(data, "next_"))[0][0].item() == pytest.approx(-2.0)


class Wavy(torch.nn.Module):
    """Q(a) = sin(6 a) + 0.5 a on the first action dimension, the same for both heads."""

    def q_values(self, features, actions):
        q = torch.sin(6 * actions[..., 0]) + 0.5 * actions[..., 0]
        return torch.stack([q, q])


def test_best_iterate_takes_every_step_and_keeps_the_best_while_accepted_only_stops_at_a_worse_step():
    start = torch.zeros(1, 1, 1)
    q = lambda a: math.sin(6 * a) + 0.5 * a  # noqa: E731
    iterates, a = [0.0], 0.0
    for _ in range(5):  # hand iteration: a <- clip(a + 0.1 Q'(a)), Q'(a) = 6 cos(6 a) + 0.5
        a = max(-1.0, min(1.0, a + 0.1 * (6 * math.cos(6 * a) + 0.5)))
        iterates.append(a)
    best = max(iterates, key=q)
    assert q(iterates[1]) < q(0.0) < q(best)  # the first step lowers Q, a later one raises it
    cfg = ActionOptimizerConfig(num_kept=1, local_steps=5, step_size=0.1)
    stopped = optimize_actions(Wavy(), torch.zeros(1, 4), start, cfg)
    assert stopped.actions.item() == 0.0
    kept = optimize_actions(Wavy(), torch.zeros(1, 4), start, ActionOptimizerConfig(num_kept=1, local_steps=5, step_size=0.1,
                                                                                     local_search="best_iterate"))
    assert kept.actions.item() == pytest.approx(best, abs=1e-5) and kept.q_values.item() == pytest.approx(q(best), abs=1e-5)


def test_dataset_action_replaces_the_worst_kept_sample_or_joins_them():
    samples = torch.tensor([[[0.2], [0.05], [0.25], [-0.3]]])  # Q: 0.2 and 0.25 best, then 0.05
    dataset = torch.tensor([[-0.9]])
    extra = optimize_actions(Wavy(), torch.zeros(1, 4), samples, ActionOptimizerConfig(num_kept=3, local_steps=0), dataset)
    worst = optimize_actions(Wavy(), torch.zeros(1, 4), samples,
                             ActionOptimizerConfig(num_kept=3, local_steps=0, dataset_action_slot="replace_worst"), dataset)
    assert extra.candidates[0, :, 0].tolist() == pytest.approx([0.25, 0.2, 0.05, -0.9])
    assert worst.candidates[0, :, 0].tolist() == pytest.approx([0.25, 0.2, -0.9])


def test_fresh_distillation_optimizer_warms_up_from_zero_and_leaves_the_shared_one_alone():
    agent = agent_with(**{"policy_update.distill_optimizer": "fresh", "policy_update.distill_warmup_steps": 4,
                          "policy_update.distill_lr": 1e-3, "policy_update.distill_states": "all"})
    rng = np.random.default_rng(0)
    agent.behaviour_clone(batch(rng))
    shared_state = {k: v["exp_avg"].clone() for k, v in enumerate(agent.policy_optimizer.state.values())}
    before = [p.clone() for p in agent.policy.parameters()]
    agent.update_policy(batch(rng))  # warm-up step 0: rate 0, the weights do not move
    assert agent.distill_optimizer is not None and agent.distill_optimizer.param_groups[0]["lr"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    rates = []
    for _ in range(5):
        agent.update_policy(batch(rng))
        rates.append(agent.distill_optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    assert all(torch.equal(shared_state[k], v["exp_avg"]) for k, v in enumerate(agent.policy_optimizer.state.values()))
    restored = agent_with(**{"policy_update.distill_optimizer": "fresh", "policy_update.distill_warmup_steps": 4})
    restored.load_state_dict(agent.state_dict())  # the distillation optimizer travels in checkpoints
    assert restored.distill_optimizer.state_dict()["state"].keys() == agent.distill_optimizer.state_dict()["state"].keys()


@pytest.mark.parametrize("reset", [False, True])
def test_critic_optimizer_reset_when_offline_pretraining_ends(reset):
    cfg = with_overrides(LearnerConfig(), {**SMALL, "critic.reset_optimizer_online": reset, "schedule.offline_policy_steps": 2,
                                           "schedule.offline_critic_steps": 3})
    agent = PARLAgent(cfg, SPEC, action_dim=2, value_range=(-10.0, 1.0))
    offline = ReplayBuffer(SPEC, 2, 100, cfg.critic.discount)
    rng = np.random.default_rng(0)
    for _ in range(3):
        offline.add_episode(EpisodeData(rng.normal(size=(5, 3)).astype(np.float32), rng.uniform(-1, 1, (4, 2)).astype(np.float32),
                                        np.array([-1, -1, -1, 0], np.float32), True))
    trainer = Trainer(agent, offline, ReplayBuffer(SPEC, 2, 100, cfg.critic.discount), cfg)
    assert trainer.pretrain()
    assert agent.stats.critic_updates == 3
    assert (len(agent.critic_optimizer.state) == 0) == reset


def test_diffusion_dropout_is_active_in_training_mode_only():
    agent = agent_with(**{"policy": "diffusion", "policy_dropout": 0.1})
    dropouts = [m for m in agent.policy.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.1 for m in dropouts) and not any(m.training for m in dropouts)


def test_paper_profile_is_the_reference_robot_configuration():
    learner = load_config(task="cup_to_rack", overlays=["paper"]).learner
    critic, optimizer, update, schedule = learner.critic, learner.optimizer, learner.policy_update, learner.schedule
    assert (critic.cql_alpha, critic.discount, critic.td_loss, critic.cql_term, critic.cql_num_actions) == (
        0.01, 0.99, "mse", "optimized_actions", 4)
    assert (critic.members, critic.sampled_members, critic.hidden, critic.layers, critic.reset_optimizer_online) == (
        10, 2, 512, 3, True)
    assert (optimizer.num_samples, optimizer.num_kept, optimizer.local_steps, optimizer.step_size) == (32, 10, 10, 3e-4)
    assert (optimizer.q_ensemble, optimizer.local_search, optimizer.dataset_action_slot, optimizer.gripper_from) == (
        "mean", "best_iterate", "replace_worst", "critic")
    assert (update.distill_states, update.distill_optimizer, update.distill_warmup_steps, update.distill_lr,
            update.distill_selection, update.filtered_bc_steps) == ("all", "fresh", 2000, 5e-5, "softmax", 0)
    assert (learner.policy_dropout, learner.policy_ema_rate, learner.diffusion_steps) == (0.1, 0.002, 5)
    assert (schedule.updates_per_step, schedule.batch_size, schedule.online_fraction, schedule.warmup_critic_steps) == (
        1.0, 256, 0.5, 0)


# ----- the Cal-QL reference's Gaussian baseline -------------------------------------------------------
def test_importance_sampled_conservative_term_by_hand():
    # One head, one state, one action of each kind; d = 1: uniform density 1/2, log p = -log 2.
    q_random, q_current, q_next = torch.tensor([[[0.5]]]), torch.tensor([[[-3.0]]]), torch.tensor([[[1.0]]])
    log_pi_current, log_pi_next = torch.tensor([[0.2]]), torch.tensor([[-0.4]])
    q_data, mc = torch.tensor([[2.0]]), torch.tensor([-1.0])  # the MC return lifts Q(s, a_pi) from -3 to -1
    values = [0.5 + math.log(2), -1.0 - 0.2, 1.0 + 0.4]
    expected = math.log(sum(math.exp(v) for v in values)) - 2.0
    value = calql_importance_sampled_regularizer(q_random, -math.log(2), q_current, log_pi_current, q_next, log_pi_next,
                                                 q_data, mc)
    assert value.item() == pytest.approx(expected)
    twin = calql_importance_sampled_regularizer(q_random.expand(2, 1, 1), -math.log(2), q_current.expand(2, 1, 1), log_pi_current,
                                                q_next.expand(2, 1, 1), log_pi_next, q_data.expand(2, 1), mc)
    assert twin.item() == pytest.approx(2 * expected)  # summed over the heads, as qf1_loss + qf2_loss
    tau = 0.5  # tau * logsumexp(values / tau)
    tempered = calql_importance_sampled_regularizer(q_random, -math.log(2), q_current, log_pi_current, q_next, log_pi_next,
                                                    q_data, mc, temperature=tau)
    assert tempered.item() == pytest.approx(tau * math.log(sum(math.exp(v / tau) for v in values)) - 2.0)


def gaussian_agent(**changes) -> PARLAgent:
    return agent_with(**{"policy": "gaussian", "policy_update.rule": "reparameterized", "policy_ema_rate": 0.0,
                         "optimizer.num_samples": 1, "optimizer.num_kept": 1, "optimizer.local_steps": 0,
                         "optimizer.include_dataset_action": False, **changes})


def test_importance_sampled_term_draws_policy_actions_at_s_and_s_prime():
    agent = gaussian_agent(**{"critic.cql_term": "importance_sampled", "critic.cql_num_actions": 5, "critic.cql_alpha": 1.0})
    drawn = []
    original = agent.policy.sample_with_log_prob
    agent.policy.sample_with_log_prob = lambda obs, n: drawn.append((obs["state"].clone(), n)) or original(obs, n)
    data = batch(np.random.default_rng(0))
    assert math.isfinite(agent.update_critic(data))
    assert [n for _, n in drawn] == [5, 5]
    assert np.allclose(drawn[0][0].numpy(), data["state"]) and np.allclose(drawn[1][0].numpy(), data["next_state"])
    with pytest.raises(ConfigError, match="critic.cql_term.*gaussian"):
        with_overrides(LearnerConfig(), {"critic.cql_term": "importance_sampled"})


def test_entropy_weight_tunes_toward_the_target_entropy():
    from parl_robot.rl.policy_updates import actor_step

    narrow = gaussian_agent(**{"policy_update.entropy_autotune": True, "policy_update.entropy_lr": 0.05})
    with torch.no_grad():  # log std pinned at its floor: entropy far below -action_dim, the weight must grow
        narrow.policy.head[-1].bias[2:] = -20.0
        narrow.policy.head[-1].weight[2:] = 0.0
    wide = gaussian_agent(**{"policy_update.entropy_autotune": True, "policy_update.entropy_lr": 0.05})
    with torch.no_grad():  # tanh(N(0, 1)) per dimension, entropy ~ +0.55 nats each: above -2, the weight must shrink
        wide.policy.head[-1].bias[:] = 0.0
        wide.policy.head[-1].weight[:] = 0.0
    rng = np.random.default_rng(0)
    for _ in range(5):
        data = batch(rng)
        actor_step(narrow, data)
        actor_step(wide, data)
    assert narrow.log_entropy_alpha.item() > 0.1 and wide.log_entropy_alpha.item() < -0.1
    assert narrow.stats.entropy_alpha > 1.0 > wide.stats.entropy_alpha
    fixed = gaussian_agent(**{"policy_update.entropy_alpha": 0.01})
    actor_step(fixed, batch(rng))
    assert fixed.log_entropy_alpha is None and fixed.stats.entropy_alpha == 0.01
    restored = gaussian_agent(**{"policy_update.entropy_autotune": True})
    restored.load_state_dict(narrow.state_dict())
    assert restored.log_entropy_alpha.item() == narrow.log_entropy_alpha.item()


def test_pretrain_actor_trains_the_actor_with_every_offline_critic_step():
    cfg = with_overrides(LearnerConfig(), {**SMALL, "policy": "gaussian", "policy_update.rule": "reparameterized",
                                           "policy_ema_rate": 0.0, "optimizer.num_samples": 1, "optimizer.num_kept": 1,
                                           "optimizer.local_steps": 0, "policy_update.pretrain_actor": True,
                                           "schedule.offline_policy_steps": 2, "schedule.offline_critic_steps": 3})
    agent = PARLAgent(cfg, SPEC, action_dim=2, value_range=(-10.0, 1.0))
    offline = ReplayBuffer(SPEC, 2, 100, cfg.critic.discount)
    rng = np.random.default_rng(0)
    offline.add_episode(EpisodeData(rng.normal(size=(5, 3)).astype(np.float32), rng.uniform(-1, 1, (4, 2)).astype(np.float32),
                                    np.array([-1, -1, -1, 0], np.float32), True))
    assert Trainer(agent, offline, ReplayBuffer(SPEC, 2, 100, cfg.critic.discount), cfg).pretrain()
    assert (agent.stats.bc_updates, agent.stats.critic_updates, agent.stats.policy_updates) == (2, 3, 3)
    with pytest.raises(ConfigError, match="pretrain_actor"):
        with_overrides(LearnerConfig(), {"policy_update.rule": "none", "policy_update.pretrain_actor": True})


@pytest.mark.parametrize("changes, key", [
    ({"policy_update.pretrain_actor": True}, "pretrain_actor"),  # distill: no reparameterized actor
    ({"policy_update.entropy_autotune": True}, "entropy_autotune"),
    ({"policy": "gaussian", "policy_dropout": 0.1}, "policy_dropout"),
    ({"critic.hl_gauss_bins": 51, "critic.td_loss": "mse"}, "td_loss"),
    ({"optimizer.dataset_action_slot": "replace_worst", "optimizer.num_kept": 1}, "dataset_action_slot"),
])
def test_options_that_would_be_ignored_or_misapplied_are_refused(changes, key):
    with pytest.raises(ConfigError, match=key):
        with_overrides(LearnerConfig(), changes)


def test_a_fresh_distillation_optimizer_in_a_checkpoint_never_loads_into_the_shared_one():
    fresh = agent_with(**{"policy_update.distill_optimizer": "fresh", "policy_update.distill_states": "all"})
    rng = np.random.default_rng(0)
    fresh.behaviour_clone(batch(rng))
    fresh.update_policy(batch(rng))
    shared = agent_with()
    shared.load_state_dict(fresh.state_dict())
    assert shared.distill_optimizer is None
    loaded, saved = shared.policy_optimizer.state_dict()["state"], fresh.policy_optimizer.state_dict()["state"]
    distilled = fresh.distill_optimizer.state_dict()["state"]
    assert not torch.equal(saved[0]["exp_avg"], distilled[0]["exp_avg"])  # the two Adams differ ...
    assert all(torch.equal(loaded[k]["exp_avg"], saved[k]["exp_avg"]) for k in saved)  # ... and BC's is the one kept
