"""Fixed-capacity transition storage filled one episode at a time (so Monte-Carlo returns exist).

Each slot keeps who acted (`source`: the policy or the operator's intervention, parl_robot/data/episode.py).
Steps that were not executed (refused, or held by the control node) never enter: the arm did not
do the stored action, so (state, action, next state) would be a false transition. They still count
in the episode's Monte-Carlo returns (its rewards are what happened, step by step)."""

from __future__ import annotations

import numpy as np

from parl_robot.data.episode import SOURCE_NOT_EXECUTED, SOURCE_POLICY, EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.losses import discounted_returns


class ReplayBuffer:
    def __init__(self, spec: ObservationSpec, action_dim: int, capacity: int, discount: float):
        self.capacity = capacity
        self.discount = discount
        self.states = np.zeros((capacity, spec.state_dim), np.float32)
        self.next_states = np.zeros((capacity, spec.state_dim), np.float32)
        self.images = np.zeros((capacity, *spec.image_shape), np.uint8) if spec.image_shape else None
        self.next_images = np.zeros((capacity, *spec.image_shape), np.uint8) if spec.image_shape else None
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.dones = np.zeros(capacity, np.float32)
        self.mc_returns = np.zeros(capacity, np.float32)
        self.episode_success = np.zeros(capacity, np.float32)  # 1 where the slot's episode succeeded
        self.owner = np.full(capacity, -1, np.int64)  # serial of the episode each slot holds
        self.step_index = np.zeros(capacity, np.int64)  # the slot's step within its episode
        self.sources = np.full(capacity, SOURCE_POLICY, np.uint8)  # who acted (SOURCE_*)
        self._resident_steps: dict[int, int] = {}  # serial -> transitions it wrote (to see partial overwrites)
        self.size = 0
        self.cursor = 0
        self.episodes_added = 0
        self.cache = None  # an ActionCache with its sampler, see attach_cache
        self.cache_sampler = None

    def __len__(self) -> int:
        return self.size

    def add_episode(self, episode: EpisodeData) -> int:
        """Append an episode's executed transitions (overwriting the oldest when full); returns its
        serial (-1 when it has none)."""
        steps = len(episode.actions)
        sources = np.full(steps, SOURCE_POLICY, np.uint8) if episode.sources is None else np.asarray(episode.sources)
        executed = [t for t in range(steps) if sources[t] != SOURCE_NOT_EXECUTED]
        if not executed:
            return -1
        serial = self.episodes_added
        returns = discounted_returns(episode.rewards, self.discount, episode.terminal)
        for t in executed:
            i = self.cursor
            self.states[i] = episode.states[t]
            self.next_states[i] = episode.states[t + 1]
            if self.images is not None:
                self.images[i] = episode.images[t]
                self.next_images[i] = episode.images[t + 1]
            self.actions[i] = episode.actions[t]
            self.rewards[i] = episode.rewards[t]
            self.dones[i] = float(episode.terminal and t == steps - 1)
            self.mc_returns[i] = returns[t]
            self.episode_success[i] = float(episode.terminal)
            self.owner[i] = serial
            self.step_index[i] = t
            self.sources[i] = sources[t]
            if self.cache is not None:
                self.cache.invalidate(i)
            self.cursor = (self.cursor + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)
        self.episodes_added += 1
        self._resident_steps[serial] = len(executed)
        return serial

    def relabel_episode(self, serial: int, rewards: np.ndarray, terminal: bool) -> bool:
        """Replace a resident episode's rewards and terminal flag (an operator's corrected label; `rewards`
        has one entry per step of the episode, executed or not), recomputing its Monte-Carlo returns.
        False when it was never added or has been (partly) overwritten."""
        rewards = np.asarray(rewards, np.float32)
        slots = np.flatnonzero(self.owner[: self.size] == serial)
        if serial < 0 or len(slots) == 0:
            return False
        steps = self.step_index[slots]
        if steps.max() >= len(rewards) or len(np.unique(steps)) != len(slots):
            return False
        if self._resident_steps.get(serial) != len(slots):
            return False
        returns = np.asarray(discounted_returns(rewards, self.discount, terminal))
        self.rewards[slots] = rewards[steps]
        self.dones[slots] = np.where(steps == len(rewards) - 1, float(terminal), 0.0)
        self.mc_returns[slots] = returns[steps]
        self.episode_success[slots] = float(terminal)
        return True

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return rng.integers(0, self.size, batch_size)

    def attach_cache(self, cache, sampler) -> None:
        """Serve cached policy samples (`policy_samples`, `next_policy_samples`) with every batch."""
        self.cache, self.cache_sampler = cache, sampler

    def gather(self, indices: np.ndarray, with_cache: bool = True) -> dict[str, np.ndarray]:
        batch = {
            "state": self.states[indices],
            "next_state": self.next_states[indices],
            "action": self.actions[indices],
            "reward": self.rewards[indices],
            "done": self.dones[indices],
            "mc_return": self.mc_returns[indices],
            "episode_success": self.episode_success[indices],
            "source": self.sources[indices],
        }
        if self.images is not None:
            batch["image"] = self.images[indices]
            batch["next_image"] = self.next_images[indices]
        if with_cache and self.cache is not None:
            self.cache.ensure(self, indices, self.cache_sampler)
            batch["policy_samples"] = self.cache.samples[indices]
            batch["next_policy_samples"] = self.cache.next_samples[indices]
        return batch


def sample_mixed(
    offline: ReplayBuffer,
    online: ReplayBuffer,
    batch_size: int,
    online_fraction: float,
    rng: np.random.Generator,
    with_cache: bool = True,
) -> dict[str, np.ndarray]:
    """A batch with `online_fraction` from the online buffer (all offline while it is empty)."""
    online_count = int(round(batch_size * online_fraction)) if len(online) else 0
    if len(offline) == 0:
        online_count = batch_size
    parts = []
    if batch_size - online_count:
        parts.append(offline.gather(offline.sample_indices(batch_size - online_count, rng), with_cache))
    if online_count:
        parts.append(online.gather(online.sample_indices(online_count, rng), with_cache))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def sample_successful(
    offline: ReplayBuffer, online: ReplayBuffer, batch_size: int, rng: np.random.Generator
) -> dict[str, np.ndarray] | None:
    """A filtered behaviour-cloning batch: up to `batch_size` transitions of successful episodes
    (successful demos and online episodes), kept from a mixed batch twice that size drawn half from
    each buffer (so both keep their weight as the online buffer grows), in random order. None when
    fewer than two successful transitions were drawn: nothing to clone, never a failure."""
    batch = sample_mixed(offline, online, batch_size * 2, 0.5, rng, with_cache=False)
    kept = rng.permutation(np.flatnonzero(batch["episode_success"] > 0.5))[:batch_size]
    if len(kept) < 2:
        return None
    return {key: value[kept] for key, value in batch.items()}
