"""Cached policy samples for every state in a replay buffer (PA-RL Appendix E).

Sampling a 7B policy is the dominant cost, so for big policies each stored state s (and its next
state s') keeps `size` pre-drawn actions. Critic TD targets, the CQL term and the global step of the
action optimizer read them instead of sampling the policy. The cache is rebuilt after every
distillation epoch (the policy changed), in parallel over one sampler per device when there are
several; transitions added since the last rebuild are sampled on first use. A rebuild samples
without holding the caller's lock (acting goes on while a 7B policy re-samples the buffer) and takes
it only to store each chunk, dropping the slots that new transitions overwrote meanwhile. No torch here: a sampler
is any callable mapping (a replay batch, "" or "next_" for which observations, count) to
(batch, count, action_dim) actions.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Sampler = Callable[[dict[str, np.ndarray], str, int], np.ndarray]  # (batch, prefix, count) -> (batch, count, A)


class ActionCache:
    def __init__(self, capacity: int, size: int, action_dim: int):
        self.size = size
        self.samples = np.zeros((capacity, size, action_dim), np.float32)  # for states[i]
        self.next_samples = np.zeros((capacity, size, action_dim), np.float32)  # for next_states[i]
        self.fresh = np.zeros(capacity, bool)
        self.generation = np.zeros(capacity, np.int64)  # bumped whenever a slot's transition changes
        self.rebuilds = 0

    def invalidate(self, indices: np.ndarray | slice | None = None) -> None:
        """Slots overwritten by new transitions (or every slot when None) must be re-sampled."""
        where = slice(None) if indices is None else indices
        self.fresh[where] = False
        self.generation[where] += 1

    def ensure(self, buffer, indices: np.ndarray, sampler: Sampler, chunk: int = 64) -> None:
        """Sample the given slots that are not cached yet (new transitions since the last rebuild)."""
        missing = np.unique(np.asarray(indices)[~self.fresh[indices]])
        for start in range(0, len(missing), chunk):
            self._fill(buffer, missing[start : start + chunk], sampler)

    def _fill(self, buffer, slots: np.ndarray, sampler: Sampler) -> None:
        batch = buffer.gather(slots, with_cache=False)
        self.samples[slots] = sampler(batch, "", self.size)
        self.next_samples[slots] = sampler(batch, "next_", self.size)
        self.fresh[slots] = True

    def _refill(self, buffer, slots: np.ndarray, sampler: Sampler, lock: contextlib.AbstractContextManager) -> None:
        """`_fill` for a rebuild: sample outside `lock`, store under it only the slots whose transition
        did not change while sampling (a new episode may overwrite them; they are sampled on first use)."""
        generation = self.generation[slots].copy()
        batch = buffer.gather(slots, with_cache=False)
        samples, next_samples = sampler(batch, "", self.size), sampler(batch, "next_", self.size)
        with lock:
            unchanged = self.generation[slots] == generation
            kept = slots[unchanged]
            self.samples[kept] = samples[unchanged]
            self.next_samples[kept] = next_samples[unchanged]
            self.fresh[kept] = True

    def rebuild(self, buffer, samplers: Sequence[Sampler], chunk: int = 64, progress: bool = True, label: str = "cache",
                lock: contextlib.AbstractContextManager | None = None) -> float:
        """Re-sample every resident slot with the current policy; one thread per sampler (device).
        `lock` guards the buffer against the thread that adds episodes; it is held only while a chunk
        is stored, never while the policy samples. Returns the seconds it took."""
        lock = lock if lock is not None else contextlib.nullcontext()
        started = time.perf_counter()
        slots = np.arange(len(buffer))
        chunks = [slots[i : i + chunk] for i in range(0, len(slots), chunk)]
        if not chunks:
            return 0.0
        bar = _progress(len(slots), label) if progress else None
        if len(samplers) == 1:
            for part in chunks:
                self._refill(buffer, part, samplers[0], lock)
                bar and bar.update(len(part))
        else:
            def work(worker: int) -> None:
                for part in chunks[worker :: len(samplers)]:
                    self._refill(buffer, part, samplers[worker], lock)
                    bar and bar.update(len(part))

            with ThreadPoolExecutor(len(samplers)) as pool:
                list(pool.map(work, range(len(samplers))))
        bar and bar.close()
        self.rebuilds += 1
        return time.perf_counter() - started


def _progress(total: int, label: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the openvla extra; without it, no bar
        return None
    return tqdm(total=total, desc=f"rebuilding action {label}", unit="state", file=sys.stderr, leave=False)
