"""The one protocol every PA-RL policy class follows.

PA-RL never back-propagates the critic into the policy: it only needs to *sample* candidate
actions and to *fit* given (optimized) actions with the policy's own supervised loss. Any model
that offers these two operations, plus torch state dicts for checkpoints, can be fine-tuned.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

Observation = dict[str, torch.Tensor]


@runtime_checkable
class Policy(Protocol):
    action_dim: int

    def sample(self, obs: Observation, num_samples: int) -> torch.Tensor:
        """Actions (batch, num_samples, action_dim) in [-1, 1]; the observation is encoded once."""

    def supervised_loss(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        """Scalar imitation loss of `actions` (batch, action_dim) under the policy."""

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict, strict: bool = True):
        ...

    def parameters(self):
        ...


def repeat_features(features: torch.Tensor, num_samples: int) -> torch.Tensor:
    """(batch, F) -> (batch * num_samples, F) with samples of one state adjacent."""
    return features.repeat_interleave(num_samples, dim=0)
