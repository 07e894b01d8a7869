"""One episode as arrays: what the sim rollouts and the learner produce, the store writes and the
replay buffers read. Lives in `data/` so storage does not depend on the learning code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EpisodeData:
    """Observations have one more entry than actions (the final state)."""

    states: np.ndarray  # (steps + 1, state_dim) float32
    actions: np.ndarray  # (steps, action_dim) float32
    rewards: np.ndarray  # (steps,) float32
    terminal: bool  # ended in success (no bootstrapping past the last step)
    images: np.ndarray | None = None  # (steps + 1, H, W, 3) uint8
    timestamps: np.ndarray | None = None  # (steps + 1,) wall-clock seconds, when loaded from a store
    # Who acted at each step (robot/executed): SOURCE_POLICY, SOURCE_INTERVENTION (the operator's action
    # was executed and is the stored action), SOURCE_NOT_EXECUTED (refused or held: the arm did not move).
    sources: np.ndarray | None = None  # (steps,) uint8; None = every step by the policy (older stores, sim)
    # The critic's Q(s_t, a_t) of each executed action when the learner stored the episode (the page's
    # episode replay shows it); None when not computed (demos, sim rollouts, older stores).
    q_values: np.ndarray | None = None  # (steps,) float32

    @property
    def intervention_steps(self) -> int:
        """Steps the operator drove (their executed actions are the stored ones)."""
        return 0 if self.sources is None else int(np.sum(self.sources == SOURCE_INTERVENTION))


SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED = 0, 1, 2
SOURCE_NAMES = {SOURCE_POLICY: "policy", SOURCE_INTERVENTION: "intervention", SOURCE_NOT_EXECUTED: "not_executed"}
