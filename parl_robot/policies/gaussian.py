"""Tanh-squashed Gaussian policy; PA-RL distils into it with the NLL of optimized actions."""

from __future__ import annotations

import math

import torch
from torch import nn

from parl_robot.nets.encoders import ObservationSpec, build_encoder
from parl_robot.nets.mlp import mlp
from parl_robot.policies.base import Observation

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
ACTION_EPS = 1e-4


class TanhGaussianPolicy(nn.Module):
    def __init__(self, spec: ObservationSpec, action_dim: int = 7, observation: str = "state", hidden: int = 256, layers: int = 2):
        super().__init__()
        self.action_dim = action_dim
        self.encoder = build_encoder(spec, observation, hidden)
        self.head = mlp(self.encoder.output_dim, hidden, 2 * action_dim, layers)

    def distribution(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.encoder(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def rsample_with_log_prob(self, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized sample and its log-probability (for the SAC/Cal-QL actor baseline)."""
        mean, log_std = self.distribution(obs)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        action = torch.tanh(pre_tanh)
        log_prob = self._log_prob_pre_tanh(pre_tanh, mean, log_std) - torch.log1p(-action.pow(2) + 1e-6).sum(-1)
        return action, log_prob

    @staticmethod
    def _log_prob_pre_tanh(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        z = (pre_tanh - mean) / log_std.exp()
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def log_prob(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        mean, log_std = self.distribution(obs)
        clipped = actions.clamp(-1 + ACTION_EPS, 1 - ACTION_EPS)
        pre_tanh = torch.atanh(clipped)
        return self._log_prob_pre_tanh(pre_tanh, mean, log_std) - torch.log1p(-clipped.pow(2)).sum(-1)

    @torch.no_grad()
    def sample_with_log_prob(self, obs: Observation, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`num_samples` actions per state (batch, n, A) and their log-densities (batch, n), no gradient."""
        mean, log_std = self.distribution(obs)
        mean, log_std = mean.unsqueeze(1), log_std.unsqueeze(1)
        pre_tanh = mean + log_std.exp() * torch.randn(mean.shape[0], num_samples, self.action_dim, device=mean.device)
        action = torch.tanh(pre_tanh)
        log_prob = self._log_prob_pre_tanh(pre_tanh, mean, log_std) - torch.log1p(-action.pow(2) + 1e-6).sum(-1)
        return action, log_prob

    @torch.no_grad()
    def sample(self, obs: Observation, num_samples: int) -> torch.Tensor:
        mean, log_std = self.distribution(obs)  # (batch, A), encoded once
        noise = torch.randn(mean.shape[0], num_samples, self.action_dim, device=mean.device)
        return torch.tanh(mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise)

    def supervised_loss(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(obs, actions).mean()
