"""Cached policy samples per replay slot (parl_robot/rl/action_cache.py): which slots are sampled on
first use and in which chunks, what invalidation marks stale, how a rebuild splits the slots between
one sampler per device. The lock-free rebuild under concurrent writes is in test_rl_core.py."""

import time

import numpy as np
import pytest

from parl_robot.data.episode import EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.action_cache import ActionCache
from parl_robot.rl.replay_buffer import ReplayBuffer

SPEC = ObservationSpec(state_dim=2)
ACTION_DIM = 3


def filled_buffer(transitions: int, capacity: int = 64) -> ReplayBuffer:
    """One episode whose state i is (i, i) and next state (i + 1, i + 1): a sample says its slot."""
    replay = ReplayBuffer(SPEC, ACTION_DIM, capacity, 0.9)
    states = np.repeat(np.arange(transitions + 1, dtype=np.float32)[:, None], 2, axis=1)
    replay.add_episode(EpisodeData(states, np.zeros((transitions, ACTION_DIM), np.float32),
                                   -np.ones(transitions, np.float32), False))
    return replay


def recording_sampler(calls: list, tag: float = 0.0):
    """Samples = the batch's (next) state's first coordinate + tag, in every action dimension."""

    def sample(batch, prefix, count):
        calls.append((prefix, batch[f"{prefix}state"][:, 0].tolist(), count))
        return np.repeat((batch[f"{prefix}state"][:, :1] + tag)[:, None, :], count, axis=1).repeat(ACTION_DIM, axis=2)

    return sample


def test_ensure_samples_only_the_missing_slots_once_each_in_chunks():
    replay = filled_buffer(10)
    cache = ActionCache(replay.capacity, size=4, action_dim=ACTION_DIM)
    calls: list = []
    cache.ensure(replay, np.array([3, 1, 3, 7, 1]), recording_sampler(calls))
    assert calls == [("", [1.0, 3.0, 7.0], 4), ("next_", [2.0, 4.0, 8.0], 4)]  # unique, both observations
    assert cache.fresh.tolist()[:10] == [i in (1, 3, 7) for i in range(10)]
    np.testing.assert_array_equal(cache.samples[3], np.full((4, ACTION_DIM), 3.0))
    np.testing.assert_array_equal(cache.next_samples[3], np.full((4, ACTION_DIM), 4.0))
    calls.clear()
    cache.ensure(replay, np.array([1, 3, 7]), recording_sampler(calls))
    assert calls == []  # all cached
    cache.ensure(replay, np.arange(10), recording_sampler(calls), chunk=3)
    assert [slots for prefix, slots, _ in calls if prefix == ""] == [[0.0, 2.0, 4.0], [5.0, 6.0, 8.0], [9.0]]


def test_invalidation_marks_slots_stale_and_bumps_their_generation():
    replay = filled_buffer(6)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    cache.ensure(replay, np.arange(6), recording_sampler([]))
    cache.invalidate(np.array([1, 4]))
    assert cache.fresh[:6].tolist() == [True, False, True, True, False, True]
    assert cache.generation[:6].tolist() == [0, 1, 0, 0, 1, 0]
    cache.invalidate(slice(2, 4))
    assert cache.generation[:6].tolist() == [0, 1, 1, 1, 1, 0]
    cache.invalidate()
    assert not cache.fresh.any() and cache.generation[:6].tolist() == [1, 2, 2, 2, 2, 1]


def test_rebuild_resamples_every_resident_slot_split_between_the_samplers():
    replay = filled_buffer(10)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    cache.ensure(replay, np.arange(10), recording_sampler([], tag=0.5))  # the old policy's samples
    first, second = [], []
    seconds = cache.rebuild(replay, [recording_sampler(first, 100.0), recording_sampler(second, 200.0)], chunk=3,
                            progress=False)
    assert seconds >= 0.0 and cache.rebuilds == 1 and cache.fresh[:10].all()
    # Chunks of 3 slots dealt round-robin: device 0 gets chunks 0 and 2, device 1 chunks 1 and 3.
    assert [slots for prefix, slots, _ in first if prefix == ""] == [[0.0, 1.0, 2.0], [6.0, 7.0, 8.0]]
    assert [slots for prefix, slots, _ in second if prefix == ""] == [[3.0, 4.0, 5.0], [9.0]]
    expected = [100.0 + i if (i // 3) % 2 == 0 else 200.0 + i for i in range(10)]
    np.testing.assert_array_equal(cache.samples[:10, 0, 0], expected)
    np.testing.assert_array_equal(cache.next_samples[:10, 1, 2], np.array(expected) + 1.0)
    # One sampler: every chunk through it, in order.
    calls: list = []
    cache.rebuild(replay, [recording_sampler(calls, 7.0)], chunk=4, progress=False)
    assert [slots for prefix, slots, _ in calls if prefix == ""] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
    assert cache.rebuilds == 2 and cache.samples[9, 0, 0] == 16.0


def test_rebuilding_an_empty_buffer_does_nothing():
    replay = ReplayBuffer(SPEC, ACTION_DIM, 8, 0.9)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    calls: list = []
    assert cache.rebuild(replay, [recording_sampler(calls)], progress=False) == 0.0
    assert calls == [] and cache.rebuilds == 0


def test_the_cache_holds_float32_samples_and_integer_generations():
    """What the batches read: float32 like every other batch array (a float64 cache of a 7B policy's
    samples over the whole buffer would double its memory), generations as exact counters."""
    cache = ActionCache(16, size=3, action_dim=ACTION_DIM)
    assert cache.samples.dtype == cache.next_samples.dtype == np.float32
    assert cache.samples.shape == cache.next_samples.shape == (16, 3, ACTION_DIM)
    assert cache.generation.dtype == np.int64 and not cache.fresh.any()


def test_default_chunks_are_64_states_per_sampler_call():
    """One sampler call per 64 states by default (a 7B policy's batch on one device), for first use and
    for a rebuild alike."""
    replay = filled_buffer(130, capacity=256)
    cache = ActionCache(replay.capacity, size=1, action_dim=ACTION_DIM)
    calls: list = []
    cache.ensure(replay, np.arange(130), recording_sampler(calls))
    assert [len(slots) for prefix, slots, _ in calls if prefix == ""] == [64, 64, 2]
    calls.clear()
    cache.rebuild(replay, [recording_sampler(calls)], progress=False)
    assert [len(slots) for prefix, slots, _ in calls if prefix == ""] == [64, 64, 2]


def test_a_rebuild_of_a_buffer_with_its_cache_attached_samples_each_slot_once():
    """The buffer reads its cache when it gathers a batch (sampling stale slots first); a rebuild gathers
    the transitions alone, so stale slots are not sampled twice (once by the buffer, once by the rebuild)
    and the sampler never sees the old samples."""
    replay = filled_buffer(10)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    calls: list = []
    seen_keys: list = []

    def sampler(batch, prefix, count):
        seen_keys.append(set(batch))
        return recording_sampler(calls)(batch, prefix, count)

    replay.attach_cache(cache, sampler)
    cache.invalidate()
    cache.rebuild(replay, [sampler], chunk=5, progress=False)
    assert [slots for prefix, slots, _ in calls if prefix == ""] == [[0.0, 1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0, 9.0]]
    assert all("policy_samples" not in keys and "next_policy_samples" not in keys for keys in seen_keys)
    calls.clear()
    cache.invalidate(np.array([2]))
    cache.ensure(replay, np.array([2, 3]), sampler)
    assert calls == [("", [2.0], 2), ("next_", [3.0], 2)] and "policy_samples" not in seen_keys[-1]


def test_a_rebuild_stores_each_chunk_under_the_callers_lock_and_reports_its_time():
    replay = filled_buffer(10)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    entered: list = []

    class CountingLock:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    started = time.perf_counter()
    seconds = cache.rebuild(replay, [recording_sampler([])], chunk=4, progress=False, lock=CountingLock())
    assert len(entered) == 3  # one per chunk of 4, 4, 2
    assert 0.0 <= seconds <= time.perf_counter() - started


@pytest.mark.parametrize("samplers", [1, 2])
def test_a_rebuild_shows_a_progress_bar_of_the_states_resampled(samplers, capsys, monkeypatch):
    pytest.importorskip("tqdm")
    from parl_robot.rl import action_cache

    bars = []
    real_progress = action_cache._progress
    monkeypatch.setattr(action_cache, "_progress", lambda total, label: bars.append(real_progress(total, label)) or bars[-1])
    replay = filled_buffer(10)
    cache = ActionCache(replay.capacity, size=2, action_dim=ACTION_DIM)
    cache.rebuild(replay, [recording_sampler([]) for _ in range(samplers)], chunk=3)
    (bar,) = bars
    assert (bar.total, bar.n, bar.desc, bar.unit, bar.leave) == (10, 10, "rebuilding action cache", "state", False)
    assert "rebuilding action cache" in capsys.readouterr().err  # on stderr, beside the node's log
    cache.rebuild(replay, [recording_sampler([])], chunk=3, label="samples of the target")
    assert bars[-1].desc == "rebuilding action samples of the target" and bars[-1].n == 10
    capsys.readouterr()
    cache.rebuild(replay, [recording_sampler([])], chunk=3, progress=False)
    assert len(bars) == 2 and capsys.readouterr().err == ""
