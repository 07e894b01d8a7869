import math

import numpy as np
import pytest
import torch

from parl_robot.config import LearnerConfig, with_overrides
from parl_robot.data.episode import EpisodeData
from parl_robot.nets.critic import HLGauss, TwinCritic
from parl_robot.nets.encoders import ObservationSpec, ResNet18Encoder, random_shift
from parl_robot.policies import build_policy
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, optimize_actions
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.checkpoint import load_checkpoint, save_checkpoint
from parl_robot.rl.filtered_bc import filtered_bc_steps
from parl_robot.rl.losses import achievable_returns, calql_regularizer, discounted_returns, expectile_loss, td_loss
from parl_robot.rl.policy_updates import actor_step
from parl_robot.rl.replay_buffer import ReplayBuffer, sample_successful

SPEC = ObservationSpec(state_dim=3)


SMALL = {"policy_hidden": 64, "policy_blocks": 2, "transformer_layers": 2, "transformer_heads": 4, "action_bins": 32,
         "critic.hidden": 64, "critic.layers": 2, "optimizer.num_samples": 16, "optimizer.num_kept": 4,
         "optimizer.local_steps": 5, "optimizer.step_size": 0.05}


def small_cfg(changes: dict | None = None) -> LearnerConfig:
    """A small LearnerConfig; `changes`: dotted keys relative to it."""
    return with_overrides(LearnerConfig(), {**SMALL, **(changes or {})})


def test_optimizer_never_lowers_q_and_respects_bounds():
    critic = TwinCritic(SPEC, 2, hidden=32, layers=2)
    states = {"state": torch.randn(6, 3)}
    samples = torch.rand(6, 12, 2) * 2 - 1
    features = critic.encode(states)
    result = optimize_actions(critic, features, samples, ActionOptimizerConfig(num_kept=4, local_steps=20, step_size=0.5),
                              dataset_actions=torch.zeros(6, 2))
    assert result.candidates.shape == (6, 5, 2)
    assert torch.all(result.q_values >= result.initial_q_values - 1e-6)
    assert torch.all(result.q_values.max(1).values >= critic.q_values(features, samples).min(0).values.max(1).values - 1e-6)
    assert result.candidates.abs().max() <= 1.0
    recomputed = critic.q_values(features, result.actions).min(0).values
    assert torch.allclose(recomputed, result.q_values.max(1).values, atol=1e-5)


def test_optimizer_ranks_by_the_min_or_the_mean_of_the_twin_heads():
    class TwoHeads:  # head values per candidate: a = (0, 0), b = (-1, 3); min prefers a, mean prefers b
        def q_values(self, features, actions):
            return torch.stack([torch.where(actions[..., 0] > 0, -1.0, 0.0), torch.where(actions[..., 0] > 0, 3.0, 0.0)])

    samples = torch.tensor([[[-0.5], [0.5]]])  # candidate a, candidate b
    pick = lambda ensemble: optimize_actions(TwoHeads(), torch.zeros(1, 4), samples,  # noqa: E731
                                             ActionOptimizerConfig(num_kept=2, local_steps=0, ensemble=ensemble)).actions
    assert pick("min").item() == -0.5 and pick("mean").item() == 0.5


class GripperLovingCritic(torch.nn.Module):
    """Q rises with the gripper value (the last dimension) far more than with motion (the first)."""

    def encode(self, obs):
        return torch.zeros(obs["state"].shape[0], 1)

    def q_values(self, features, actions):
        q = actions[..., -1] + 0.1 * actions[..., 0]
        return torch.stack([q, q])


@pytest.mark.parametrize("gripper_from", ["critic", "policy"])
def test_gripper_from_policy_executes_the_critics_motion_with_the_policys_gripper(gripper_from):
    # Actions (x, y, gripper). Sample 0 closes the gripper (-1); the critic prefers sample 2, which opens
    # it. The critic ignores y, so the local steps leave each sample's y where it was.
    samples = torch.tensor([[[-0.5, 0.3, -1.0], [0.5, -0.2, -0.9], [-0.9, 0.7, 1.0]]])
    agent = PARLAgent(small_cfg({"policy": "diffusion", "optimizer.num_samples": 3, "optimizer.num_kept": 3,
                                 "optimizer.local_steps": 3, "policy_update.distill_selection": "argmax",
                                 "optimizer.gripper_from": gripper_from}),
                      SPEC, action_dim=3)
    agent.critic = GripperLovingCritic()
    agent.sampling_policy.sample = lambda obs, count: samples.expand(obs["state"].shape[0], -1, -1)
    action, _ = agent.act({"state": np.zeros(3, np.float32)})
    assert action[0] < -0.8 and action[1] == pytest.approx(0.7)  # either way the critic's pick (sample 2) moves the arm
    if gripper_from == "critic":  # PA-RL as published: its open gripper too
        assert action[2] > 0.99
    else:  # the gripper of the first policy sample
        assert action[2] == -1.0

    # Acting only: distillation targets stay the optimized actions, gripper included.
    targets = []
    original_loss = agent.policy.supervised_loss
    agent.policy.supervised_loss = lambda obs, actions: targets.append(actions.clone()) or original_loss(obs, actions)
    batch = {"state": np.zeros((4, 3), np.float32), "action": np.tile(np.array([[0.0, 0.0, -0.7]], np.float32), (4, 1))}
    agent.update_policy(batch)
    assert torch.all(targets[-1][:, 2] > 0.99)


def test_calql_regularizer_matches_hand_computation():
    q_policy = torch.tensor([[[1.0, -3.0]], [[0.0, 2.0]]])  # (2 heads, 1 state, 2 policy actions)
    q_random = torch.tensor([[[0.0]], [[-5.0]]])  # (2 heads, 1 state, 1 uniform action)
    q_data = torch.tensor([[0.5], [1.0]])
    mc_return = torch.tensor([-1.0])
    log_density = -math.log(2.0)  # uniform on [-1, 1]
    # head 1: policy Q clamped at V = -1 -> [1, -1]; random 0 + ln 2
    #   ln(e^1 + e^-1 + 2) - 0.5
    # head 2: policy [0, 2]; random -5 + ln 2 -> ln(1 + e^2 + 2 e^-5) - 1.0
    expected = (math.log(math.e + math.exp(-1) + 2) - 0.5) + (math.log(1 + math.exp(2) + 2 * math.exp(-5)) - 1.0)
    assert calql_regularizer(q_policy, q_data, mc_return, q_random, log_density).item() == pytest.approx(expected)
    # Without uniform actions, and the clamp is what lifts head 1's -3 to -1:
    without_random = (math.log(math.e + math.exp(-1)) - 0.5) + (math.log(1 + math.exp(2)) - 1.0)
    assert calql_regularizer(q_policy, q_data, mc_return).item() == pytest.approx(without_random)
    # Temperature: tau * logsumexp(q / tau); as tau -> 0 it becomes the max.
    assert calql_regularizer(q_policy, q_data, mc_return, temperature=1e-3).item() == pytest.approx(
        (1.0 - 0.5) + (2.0 - 1.0), abs=1e-2
    )
    assert td_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0])).item() == pytest.approx(1.0)
    assert expectile_loss(torch.tensor([2.0, -2.0]), 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 4) / 2)
    # Asymmetric: Q above V weighs the expectile, Q below V its complement (swapping them changes the value).
    assert expectile_loss(torch.tensor([2.0, -1.0]), 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 1) / 2)


def test_discounted_returns_terminal_and_truncated():
    assert discounted_returns([-1, -1, 0], 0.5, terminal=True) == pytest.approx([-1.5, -1.0, 0.0])
    # truncated: the last reward continues forever: -1 / (1 - 0.5) = -2 after the last step
    assert discounted_returns([-1, -1], 0.5, terminal=False) == pytest.approx([-2.0, -2.0])
    assert discounted_returns([], 0.5, terminal=True) == []
    # Undiscounted: a truncated tail cannot be summed forever, so it counts as nothing (no division by zero).
    assert discounted_returns([-1, -1, -1], 1.0, terminal=False) == pytest.approx([-3.0, -2.0, -1.0])
    assert discounted_returns([-1, 0], 0.0, terminal=False) == pytest.approx([-1.0, 0.0])


@pytest.mark.parametrize("success_reward, reward_bias", [(1.0, -1.0), (1.0, 0.0), (4.0, -2.0)])
def test_achievable_returns_bound_every_episode_and_are_tight(success_reward, reward_bias):
    discount = 0.9
    low, high = achievable_returns(success_reward, reward_bias, discount)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(200):
        steps = int(rng.integers(1, 60))
        success = bool(rng.random() < 0.5)
        rewards = [reward_bias] * steps
        rewards[-1] += success_reward * success
        seen += discounted_returns(rewards, discount, terminal=success)
    assert low - 1e-6 <= min(seen) and max(seen) <= high + 1e-6
    assert high == pytest.approx(max(seen), abs=1e-6)  # a one-step success reaches the top
    assert low == pytest.approx(min(reward_bias, 0.0) / (1 - discount))  # never-ending failure the bottom
    with pytest.raises(ValueError, match="discount"):
        achievable_returns(success_reward, reward_bias, 1.0)


@pytest.mark.parametrize("policy", ["diffusion", "gaussian", "transformer"])
def test_policy_loss_decreases_on_fixed_actions(policy):
    torch.manual_seed(0)
    model = build_policy(small_cfg({"policy": policy}), SPEC, action_dim=2)
    obs = {"state": torch.randn(64, 3)}
    actions = torch.tanh(obs["state"][:, :2])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        loss = model.supervised_loss(obs, actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]) or np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0
    samples = model.sample(obs, 5)
    assert samples.shape == (64, 5, 2) and samples.abs().max() <= 1.0


def test_hl_gauss_target_is_a_distribution_centred_on_value():
    head = HLGauss(51, -10.0, 10.0)
    target = head.target_distribution(torch.tensor([3.0]))
    assert target.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (target * head.centres).sum().item() == pytest.approx(3.0, abs=0.05)


def test_random_shift_and_resnet_encoder_shapes():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    shifted = random_shift(images, pad=2)
    assert shifted.shape == images.shape
    encoder = ResNet18Encoder(ObservationSpec(3, (32, 32, 3)), output_dim=16)
    features = encoder({"image": torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8), "state": torch.zeros(2, 3)})
    assert features.shape == (2, 16)


def test_networks_augment_only_inside_loss_passes_never_when_ranking_or_acting():
    """Image mode: the random shift (training mode) applies where a loss is computed; TD targets, the
    optimizer's candidates, the CQL term's policy samples and acting see the image as it is
    (evaluation mode), as the reference runs them (issue 31)."""
    spec = ObservationSpec(3, (32, 32, 3))
    agent = PARLAgent(small_cfg({"observation": "image", "policy": "diffusion", "critic.cql_alpha": 1.0,
                                 "policy_update.distill_states": "all"}), spec, action_dim=2)
    calls: list[tuple[str, bool]] = []
    networks = {"policy": agent.policy, "ema": agent.policy_ema, "critic": agent.critic, "target": agent.target_critic}
    for name, network in networks.items():
        for module in network.modules():
            if isinstance(module, ResNet18Encoder):
                module.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, m.training)))
    rng = np.random.default_rng(0)
    batch = {"state": rng.normal(size=(4, 3)).astype(np.float32), "next_state": rng.normal(size=(4, 3)).astype(np.float32),
             "image": rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
             "next_image": rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8),
             "action": rng.uniform(-1, 1, (4, 2)).astype(np.float32), "reward": -np.ones(4, np.float32),
             "done": np.zeros(4, np.float32), "mc_return": -np.ones(4, np.float32)}

    agent.update_critic(batch)
    assert ("critic", True) in calls and ("critic", False) in calls  # the loss; the TD target's a' = pi_opt(s')
    assert {mode for name, mode in calls if name in ("target", "ema")} == {False}
    assert calls[-1] == ("critic", True)  # the loss pass comes last, after every ranking pass
    calls.clear()
    agent.update_policy(batch)
    assert ("policy", True) in calls and {mode for name, mode in calls if name != "policy"} == {False}
    calls.clear()
    agent.act({"state": batch["state"][0], "image": batch["image"][0]})
    assert calls and {mode for _, mode in calls} == {False}
    assert not any(network.training for network in networks.values())  # every network back in evaluation mode


def test_cache_rebuild_samples_without_the_lock_and_drops_slots_overwritten_meanwhile():
    """Acting takes the lock while a (7B) policy re-samples the buffer; an episode added during the
    rebuild overwrites slots whose fresh samples would belong to the old transitions (issue 31)."""
    import threading

    from parl_robot.rl.action_cache import ActionCache

    buffer = ReplayBuffer(SPEC, 2, capacity=8, discount=0.9)
    episode = lambda value: EpisodeData(np.full((5, 3), value, np.float32), np.zeros((4, 2), np.float32),  # noqa: E731
                                        -np.ones(4, np.float32), False)
    buffer.add_episode(episode(1.0))
    buffer.add_episode(episode(2.0))  # slots 0-7 full
    cache = ActionCache(buffer.capacity, 3, 2)
    lock = threading.Lock()
    acted_during_sampling = []

    def sampler(batch, prefix, count):
        if prefix == "" and not acted_during_sampling:  # first chunk: another thread acts, then an episode lands
            acting = threading.Thread(target=lambda: acted_during_sampling.append(lock.acquire(timeout=30) and (lock.release() or True)))
            acting.start()
            acting.join()
            with lock:
                buffer.cache = cache  # the ROS thread adds an episode under the lock: slots 0-3 overwritten
                buffer.add_episode(episode(3.0))
                buffer.cache = None
        return np.repeat(batch[f"{prefix}state"][:, None, :2], count, axis=1)  # "samples" that say which state

    cache.rebuild(buffer, [sampler], chunk=8, progress=False, lock=lock)
    assert acted_during_sampling == [True]  # the lock was free while the policy sampled
    assert not cache.fresh[:4].any() and cache.fresh[4:].all()  # overwritten slots wait for their first use
    assert np.all(cache.samples[4:] == 2.0)
    buffer.attach_cache(cache, sampler)
    assert np.all(buffer.gather(np.arange(4))["policy_samples"] == 3.0)  # the new transitions, sampled on use


def bandit_buffer(spec, n=400, seed=0):
    """One-step bandit: actions from two modes; only the minority mode (+0.6) is rewarded."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(spec, 1, 2 * n, discount=0.0)
    for _ in range(n):
        good = rng.random() < 0.3
        action = np.array([[0.6 if good else -0.6]], np.float32) + rng.normal(0, 0.05, (1, 1)).astype(np.float32)
        reward = np.array([1.0 if good else 0.0], np.float32)
        buffer.add_episode(EpisodeData(np.zeros((2, spec.state_dim), np.float32), action, reward, terminal=True))
    return buffer


def test_parl_distillation_moves_mass_to_better_mode_while_bc_does_not():
    spec = ObservationSpec(state_dim=1)
    buffer = bandit_buffer(spec)
    rng = np.random.default_rng(0)
    cfg = small_cfg({"policy": "diffusion", "critic.cql_alpha": 0.0, "critic.discount": 0.0, "optimizer.num_samples": 16,
                     "optimizer.num_kept": 4, "optimizer.local_steps": 3, "schedule.batch_size": 128,
                     "optimizer.include_dataset_action": True, "policy_update.distill_lr": 3e-4})
    agent = PARLAgent(cfg, spec, action_dim=1)
    for _ in range(300):
        agent.behaviour_clone(buffer.gather(buffer.sample_indices(128, rng)))
    obs = {"state": torch.zeros(1, 1)}
    bc_good_fraction = (agent.policy.sample(obs, 400) > 0).float().mean().item()
    for _ in range(150):
        agent.update_critic(buffer.gather(buffer.sample_indices(128, rng)))
    for _ in range(150):
        agent.update_policy(buffer.gather(buffer.sample_indices(128, rng)))
    parl_good_fraction = (agent.policy.sample(obs, 400) > 0).float().mean().item()
    assert bc_good_fraction < 0.5  # BC imitates the data: mostly the unrewarded mode
    assert parl_good_fraction > 0.8  # PA-RL distils the optimized (rewarded) mode


def test_distillation_uses_only_states_of_successful_episodes_by_default():
    buffer = ReplayBuffer(SPEC, 2, 64, discount=0.9)
    for success in (True, False, True, False):
        states = np.full((4, 3), 1.0 if success else -1.0, np.float32)  # the state says which episode
        rewards = np.array([-1, -1, -1, 0 if success else -1], np.float32)
        buffer.add_episode(EpisodeData(states, np.zeros((3, 2), np.float32), rewards, terminal=success))
    assert buffer.gather(np.arange(12))["episode_success"].tolist() == [1.0] * 3 + [0.0] * 3 + [1.0] * 3 + [0.0] * 3
    agent = PARLAgent(small_cfg({"policy": "diffusion"}), SPEC, action_dim=2)
    distilled_states = []
    original_loss = agent.policy.supervised_loss
    agent.policy.supervised_loss = lambda obs, actions: distilled_states.append(obs["state"].clone()) or original_loss(obs, actions)
    agent.update_policy(buffer.gather(np.arange(12)))
    assert distilled_states[-1].shape[0] == 6 and torch.all(distilled_states[-1] == 1.0)

    before = [p.clone() for p in agent.policy.parameters()]
    failures = buffer.gather(np.array([3, 4, 5, 9, 10, 11]))
    assert math.isnan(agent.update_policy(failures))  # nothing to distil: no step
    assert agent.stats.policy_updates == 1 and all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))

    everything = PARLAgent(small_cfg({"policy": "diffusion", "policy_update.distill_states": "all"}), SPEC, action_dim=2)
    assert math.isfinite(everything.update_policy(failures)) and everything.stats.policy_updates == 1


def marked_buffer(*episodes, action_dim=1, capacity=256):
    """Episodes of 10 steps whose states carry a marker (where a row came from) and whose actions are
    the given constant."""
    buffer = ReplayBuffer(ObservationSpec(1), action_dim, capacity, discount=0.9)
    for marker, action, success in episodes:
        rewards = np.array([-1.0] * 9 + [0.0 if success else -1.0], np.float32)
        buffer.add_episode(EpisodeData(np.full((11, 1), marker, np.float32), np.full((10, action_dim), action, np.float32),
                                       rewards, success))
    return buffer


def test_filtered_bc_batch_mixes_successful_demos_and_online_episodes_only():
    demos = marked_buffer((1.0, 0.0, True), (9.0, 0.0, False))  # a failed demo is left out too
    online = marked_buffer((2.0, 0.0, True), (-1.0, 0.0, False), (-1.0, 0.0, False))
    batch = sample_successful(demos, online, 64, np.random.default_rng(0))
    markers = batch["state"][:, 0]
    assert 2 <= len(markers) <= 64 and set(np.unique(markers)) == {1.0, 2.0}
    assert 0.3 < (markers == 2.0).mean() < 0.7 and (markers[:32] == 2.0).any()  # both halves, shuffled
    failures_only = marked_buffer((9.0, 0.0, False))
    assert sample_successful(failures_only, marked_buffer((-1.0, 0.0, False)), 64, np.random.default_rng(0)) is None


def test_filtered_bc_steps_clone_successful_episodes_after_each_policy_update():
    # Successful demos and online episodes pushed +0.6; the failed online episodes pushed -0.6.
    demos = marked_buffer((1.0, 0.6, True), (1.0, 0.6, True), (1.0, -0.6, False), action_dim=2)
    online = marked_buffer((1.0, 0.6, True), (1.0, -0.6, False), (1.0, -0.6, False), (1.0, -0.6, False), action_dim=2)
    obs = {"state": torch.ones(1, 1)}

    off = PARLAgent(small_cfg({"policy": "diffusion", "schedule.batch_size": 64}), ObservationSpec(1), action_dim=2)
    before = [p.clone() for p in off.policy.parameters()]
    assert filtered_bc_steps(off, demos, online, np.random.default_rng(0)) == 0  # default 0: PA-RL as published
    assert all(torch.equal(a, b) for a, b in zip(before, off.policy.parameters()))

    agent = PARLAgent(small_cfg({"policy": "diffusion", "schedule.batch_size": 64, "policy_update.filtered_bc_steps": 3,
                                 "policy_lr": 3e-3}), ObservationSpec(1),
                      action_dim=2)
    cloned_actions = []
    original_loss = agent.policy.supervised_loss
    agent.policy.supervised_loss = lambda o, actions: cloned_actions.append(actions.clone()) or original_loss(o, actions)
    rng = np.random.default_rng(0)
    for _ in range(60):
        assert filtered_bc_steps(agent, demos, online, rng) == 3
    assert agent.stats.filtered_bc_updates == agent.stats.bc_updates == 180
    assert all(torch.all(actions == 0.6) for actions in cloned_actions)  # never a failed episode's action
    assert agent.policy.sample(obs, 200).mean().item() > 0.3  # the policy moved to the successful actions

    nothing = marked_buffer((1.0, -0.6, False), action_dim=2)
    assert filtered_bc_steps(agent, nothing, nothing, rng) == 0 and agent.stats.filtered_bc_updates == 180


def test_checkpoint_round_trip_reproduces_actions(tmp_path):
    cfg = small_cfg({"policy": "diffusion"})
    agent = PARLAgent(cfg, SPEC, action_dim=2)
    state = np.array([0.1, -0.2, 0.3], np.float32)
    batch = {"state": np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32), "action": np.full((8, 2), 0.5, np.float32)}
    for _ in range(3):  # the averaged sampling weights now differ from the trained ones
        agent.behaviour_clone(batch)
    save_checkpoint(tmp_path, {"agent": agent.state_dict()})
    torch.manual_seed(123)
    expected, _ = agent.act({"state": state})
    restored = PARLAgent(small_cfg({"policy": "diffusion", "seed": 7}), SPEC, action_dim=2)
    restored.load_state_dict(load_checkpoint(tmp_path)["agent"])
    torch.manual_seed(123)
    actual, _ = restored.act({"state": state})
    assert np.array_equal(expected, actual)


def test_actions_are_sampled_from_a_warmed_up_moving_average_of_the_policy():
    agent = PARLAgent(small_cfg({"policy": "diffusion", "policy_ema_rate": 0.5}), SPEC, action_dim=2)
    initial = [p.detach().clone() for p in agent.policy.parameters()]
    batch = {"state": np.ones((8, 3), np.float32), "action": np.full((8, 2), 0.5, np.float32)}
    agent.behaviour_clone(batch)
    assert agent.sampling_policy is agent.policy_ema
    decay = min(1 - 0.5, 1 / 10)  # the warm-up term wins on the first update
    for average, start, trained in zip(agent.policy_ema.parameters(), initial, agent.policy.parameters()):
        torch.testing.assert_close(average, decay * start + (1 - decay) * trained.detach())
    assert not any(p.requires_grad for p in agent.policy_ema.parameters())
    plain = PARLAgent(small_cfg({"policy": "diffusion", "policy_ema_rate": 0.0}), SPEC, action_dim=2)
    assert plain.policy_ema is None and plain.sampling_policy is plain.policy
    assert "policy_ema" not in plain.state_dict()


def _batch(rng, size=16, reward=-1.0):
    return {
        "state": rng.normal(size=(size, 3)).astype(np.float32), "next_state": rng.normal(size=(size, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (size, 2)).astype(np.float32), "reward": np.full(size, reward, np.float32),
        "done": np.zeros(size, np.float32), "mc_return": np.full(size, -5.0, np.float32),
    }


def test_nan_or_exploding_q_stops_the_update_and_keeps_the_weights():
    from parl_robot.rl.agent import Q_EXPLOSION_LIMIT, NumericalInstability

    rng = np.random.default_rng(0)
    agent = PARLAgent(small_cfg({"policy": "diffusion", "optimizer.local_steps": 0}), SPEC, action_dim=2)
    agent.update_critic(_batch(rng))
    before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    with pytest.raises(NumericalInstability, match="critic loss is nan; update skipped"):
        agent.update_critic(_batch(rng, reward=float("nan")))
    assert all(torch.equal(before[k], v) for k, v in agent.critic.state_dict().items())
    # Blow up the critic's output layer: |Q| beyond the limit is refused with the HL-Gauss hint.
    with torch.no_grad():
        for parameter in agent.critic.parameters():
            parameter.mul_(0).add_(Q_EXPLOSION_LIMIT)
    exploded = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    with pytest.raises(NumericalInstability, match="hl_gauss_bins"):
        agent.update_critic(_batch(rng))
    assert all(torch.equal(exploded[k], v) for k, v in agent.critic.state_dict().items())


def test_reparameterized_actor_baseline_climbs_q_and_leaves_the_critic_alone():
    rng = np.random.default_rng(0)
    agent = PARLAgent(small_cfg({"policy": "gaussian", "policy_update.rule": "reparameterized",
                                 "policy_update.entropy_alpha": 0.0}), SPEC, action_dim=2)
    batch = _batch(rng, size=64)
    obs = agent.observation_tensors(batch)

    def policy_q():
        with torch.no_grad():
            actions = agent.policy.sample(obs, 16)
            return agent.critic.q_values(agent.critic.encode(obs), actions).min(dim=0).values.mean().item()

    critic_before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    start = policy_q()
    for _ in range(60):
        actor_step(agent, batch)
    assert policy_q() > start
    assert all(torch.equal(critic_before[k], v) for k, v in agent.critic.state_dict().items())
    with pytest.raises(ValueError, match="needs the gaussian policy"):
        actor_step(PARLAgent(small_cfg({"policy": "diffusion", "policy_update.rule": "reparameterized"}), SPEC, action_dim=2), batch)


def test_losses_edge_values_mutation_testing_found_untested():
    # Uniform actions default to a log density of 0 (no correction) when none is given.
    q_policy, q_random = torch.tensor([[[1.0, -3.0]], [[0.0, 2.0]]]), torch.tensor([[[0.0]], [[-5.0]]])
    q_data, mc_return = torch.tensor([[0.5], [1.0]]), torch.tensor([-1.0])
    assert calql_regularizer(q_policy, q_data, mc_return, q_random).item() == pytest.approx(
        calql_regularizer(q_policy, q_data, mc_return, q_random, 0.0).item())
    # The expectile's switch is at a zero difference, also for small ones.
    assert expectile_loss(torch.tensor([0.5, -1.0]), 0.9).item() == pytest.approx((0.9 * 0.25 + 0.1 * 1.0) / 2)
    # Bounds with a positive step reward, with a success worth less than nothing, and at discount 0.
    assert achievable_returns(1.0, 0.5, 0.9) == pytest.approx((0.0, 0.5 * 10 + 1.5))
    assert achievable_returns(1.0, -2.0, 0.9) == pytest.approx((-2.0 * 10 - 1.0, 0.0))
    assert achievable_returns(1.0, -1.0, 0.0) == pytest.approx((-1.0, 0.0))


@pytest.mark.parametrize("members,bins,layers", [(2, 0, 3), (10, 0, 2), (3, 11, 1), (2, 0, 0)])
def test_all_heads_in_one_batched_pass_equal_each_head_module(members, bins, layers):
    """TwinCritic.head_outputs stacks the heads' weights into one baddbmm per layer; each head's own
    ActionConcatMLP.forward is the reference, for values and for the gradients of every weight."""
    torch.manual_seed(0)
    critic = TwinCritic(ObservationSpec(5), 3, "state", 16, layers, bins, (-10.0, 2.0), members=members)
    with torch.no_grad():
        for parameter in critic.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    features = critic.encode({"state": torch.randn(4, 5)}).detach()
    for actions in (torch.rand(4, 3), torch.rand(4, 6, 3)):
        expanded = features.unsqueeze(-2).expand(*actions.shape[:-1], 16) if actions.dim() == 3 else features
        reference = torch.stack([head(expanded, actions) for head in critic.heads])
        batched = critic.head_outputs(features, actions)
        assert batched.shape == reference.shape
        torch.testing.assert_close(batched, reference, rtol=1e-5, atol=1e-5)
        (batched ** 2).sum().backward()
        batched_grads = [parameter.grad.clone() for parameter in critic.heads.parameters()]
        critic.zero_grad()
        (reference ** 2).sum().backward()
        for parameter, gradient in zip(critic.heads.parameters(), batched_grads):
            torch.testing.assert_close(gradient, parameter.grad, rtol=1e-4, atol=1e-4)
        critic.zero_grad()
