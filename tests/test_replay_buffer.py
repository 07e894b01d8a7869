"""The replay buffer's contracts below the learning tests: relabelling an episode (and refusing when it
cannot), how a mixed batch splits between the offline and online buffers, cached samples served with
a batch or not, and the filtered behaviour-cloning batch."""

import numpy as np
import pytest

from parl_robot.data.episode import EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.action_cache import ActionCache
from parl_robot.rl.losses import discounted_returns
from parl_robot.rl.replay_buffer import ReplayBuffer, sample_mixed, sample_successful

SPEC = ObservationSpec(state_dim=2)
DISCOUNT = 0.9


def episode(steps: int, success: bool, first_state: float = 0.0) -> EpisodeData:
    states = np.stack([np.full(2, first_state + t, np.float32) for t in range(steps + 1)])
    rewards = np.full(steps, -1.0, np.float32)
    if success:
        rewards[-1] = 0.0
    return EpisodeData(states, np.zeros((steps, 3), np.float32), rewards, success)


def buffer(*episodes: EpisodeData, capacity: int = 100) -> ReplayBuffer:
    replay = ReplayBuffer(SPEC, 3, capacity, DISCOUNT)
    for item in episodes:
        replay.add_episode(item)
    return replay


def test_relabel_sets_rewards_done_and_returns_of_a_success_and_of_a_failure():
    replay = buffer(episode(4, success=False))
    assert replay.relabel_episode(0, [-1, -1, -1, 0], terminal=True)
    np.testing.assert_array_equal(replay.rewards[:4], [-1, -1, -1, 0])
    np.testing.assert_array_equal(replay.dones[:4], [0, 0, 0, 1])
    np.testing.assert_allclose(replay.mc_returns[:4], discounted_returns([-1, -1, -1, 0], DISCOUNT, True), rtol=1e-6)
    np.testing.assert_array_equal(replay.episode_success[:4], 1.0)
    assert replay.relabel_episode(0, [-1, -1, -1, -1], terminal=False)  # back to a failure: the tail bootstraps
    np.testing.assert_allclose(replay.mc_returns[:4], discounted_returns([-1] * 4, DISCOUNT, False), rtol=1e-6)
    assert replay.mc_returns[3] == pytest.approx(-1 / (1 - DISCOUNT))
    np.testing.assert_array_equal(replay.dones[:4], 0.0)


def test_relabel_refuses_unknown_short_and_overwritten_episodes_and_changes_nothing():
    replay = buffer(episode(4, success=False), episode(3, success=False), capacity=8)
    before = (replay.rewards.copy(), replay.mc_returns.copy(), replay.dones.copy())
    assert replay.relabel_episode(-1, [0, 0, 0, 0], True) is False  # an episode with nothing stored
    assert replay.relabel_episode(7, [0, 0, 0, 0], True) is False  # never added
    assert replay.relabel_episode(0, [-1, -1, 0], True) is False  # fewer rewards than its steps
    assert replay.relabel_episode(1, [-1, -1], True) is False  # one short: its last step has none
    replay.add_episode(episode(2, success=False))  # 4 + 3 + 2 > 8: overwrites episode 0's first step
    assert replay.relabel_episode(0, [-1, -1, -1, 0], True) is False  # partly overwritten
    np.testing.assert_array_equal(replay.rewards[1:7], before[0][1:7])
    np.testing.assert_array_equal(replay.mc_returns[1:7], before[1][1:7])
    np.testing.assert_array_equal(replay.dones[1:7], before[2][1:7])
    assert replay.relabel_episode(1, [-1, -1, 0], True) is True  # the intact one still can be


def test_a_positive_success_reward_is_not_bootstrapped_after_a_success_relabel():
    """With a success reward of +1 the terminal flag decides the tail: a success ends there (return 1 at
    the last step), a truncated episode would keep earning 1 / (1 - discount)."""
    replay = buffer(episode(3, success=False))
    assert replay.relabel_episode(0, [0.0, 0.0, 1.0], terminal=True)
    np.testing.assert_allclose(replay.mc_returns[:3], [DISCOUNT**2, DISCOUNT, 1.0], rtol=1e-6)
    assert replay.relabel_episode(0, [0.0, 0.0, 1.0], terminal=False)
    assert replay.mc_returns[2] == pytest.approx(1.0 / (1 - DISCOUNT))


def test_gathered_batches_hold_float32_transitions_and_each_steps_frames():
    spec = ObservationSpec(state_dim=2, image_shape=(4, 4, 3))
    replay = ReplayBuffer(spec, 3, 10, DISCOUNT)
    frames = np.arange(4 * 48, dtype=np.uint8).reshape(4, 4, 4, 3)  # one distinct frame per observation
    replay.add_episode(EpisodeData(np.zeros((4, 2), np.float32), np.zeros((3, 3), np.float32), np.full(3, -1.0, np.float32),
                                   False, images=frames))
    batch = replay.gather(np.array([2, 0]))
    np.testing.assert_array_equal(batch["image"], frames[[2, 0]])
    np.testing.assert_array_equal(batch["next_image"], frames[[3, 1]])
    for key in ("state", "next_state", "action", "reward", "done", "mc_return", "episode_success"):
        assert batch[key].dtype == np.float32, key  # what the networks take, at half of float64's memory
    with pytest.raises(ValueError, match="^cannot sample from an empty replay buffer$"):
        ReplayBuffer(spec, 3, 10, DISCOUNT).sample_indices(1, np.random.default_rng(0))


def counting_sampler(calls: list):
    def sample(batch, prefix, count):
        calls.append(len(batch["state"]))
        return np.full((len(batch["state"]), count, 3), 0.5, np.float32)

    return sample


def test_mixed_batches_split_between_buffers_and_serve_cached_samples_by_default():
    offline, online = buffer(episode(1, success=True, first_state=100.0)), buffer(episode(5, success=False))
    rng = np.random.default_rng(0)
    batch = sample_mixed(offline, online, 8, 0.25, rng)
    assert len(batch["state"]) == 8
    assert (batch["state"][:6, 0] == 100.0).all() and (batch["state"][6:, 0] < 100.0).all()  # a one-transition offline buffer counts
    everything_online = sample_mixed(buffer(), online, 6, 0.25, rng)  # no demonstrations: all from online
    assert len(everything_online["state"]) == 6 and (everything_online["state"][:, 0] < 100.0).all()
    everything_offline = sample_mixed(offline, buffer(), 6, 0.5, rng)  # nothing online yet
    assert (everything_offline["state"][:, 0] == 100.0).all()
    calls: list = []
    for replay in (offline, online):
        replay.attach_cache(ActionCache(replay.capacity, 4, 3), counting_sampler(calls))
    cached = sample_mixed(offline, online, 8, 0.5, rng)
    assert cached["policy_samples"].shape == (8, 4, 3) and (cached["next_policy_samples"] == 0.5).all()
    assert calls  # missing slots were sampled on first use
    uncached = sample_mixed(offline, online, 8, 0.5, rng, with_cache=False)
    assert "policy_samples" not in uncached and "next_policy_samples" not in uncached
    assert "policy_samples" not in sample_mixed(buffer(), online, 4, 0.5, rng, with_cache=False)  # online part too


def test_filtered_bc_batch_draws_twice_the_size_half_from_each_buffer_and_keeps_successes(monkeypatch):
    offline = buffer(episode(3, success=True, first_state=100.0), episode(3, success=False, first_state=200.0))
    online = buffer(episode(3, success=True), episode(3, success=False, first_state=50.0))
    calls: list = []
    offline.attach_cache(ActionCache(offline.capacity, 4, 3), counting_sampler(calls))
    requested: list = []
    original = ReplayBuffer.sample_indices

    def recording(self, batch_size, rng):
        requested.append((self is offline, batch_size))
        return original(self, batch_size, rng)

    monkeypatch.setattr(ReplayBuffer, "sample_indices", recording)
    batch = sample_successful(offline, online, 10, np.random.default_rng(1))
    assert sorted(requested) == [(False, 10), (True, 10)]  # 2 x 10, half from each buffer
    assert batch is not None and 2 <= len(batch["state"]) <= 10 and (batch["episode_success"] == 1.0).all()
    assert set(batch["state"][:, 0]) <= {100.0, 101.0, 102.0, 0.0, 1.0, 2.0}  # only successful episodes' states
    assert "policy_samples" not in batch and calls == []  # behaviour cloning needs no policy samples
    successes_only = buffer(episode(2, success=True))
    exactly_two = sample_successful(successes_only, buffer(), 2, np.random.default_rng(2))
    assert exactly_two is not None and len(exactly_two["state"]) == 2  # two successful transitions are enough
    assert sample_successful(successes_only, buffer(), 1, np.random.default_rng(2)) is None  # one is not
    assert sample_successful(buffer(episode(4, success=False)), buffer(), 8, np.random.default_rng(3)) is None
