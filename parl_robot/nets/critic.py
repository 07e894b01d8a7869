"""Q critic: an ensemble of heads (two by default) on one encoder, each MLP seeing the action at every
layer, with an optional HL-Gauss head."""

from __future__ import annotations

import torch
from torch import nn

from parl_robot.nets.activations import mish
from parl_robot.nets.encoders import ObservationSpec, build_encoder
from parl_robot.nets.mlp import mlp


class ActionConcatMLP(nn.Module):
    """MLP over [features, action] that concatenates the action again before every hidden layer."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = feature_dim
        for _ in range(layers):
            self.layers.append(nn.Linear(width + action_dim, hidden))
            self.norms.append(nn.LayerNorm(hidden))
            width = hidden
        self.output = nn.Linear(width + action_dim, out_dim)

    def forward(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        hidden = features
        for layer, norm in zip(self.layers, self.norms):
            hidden = mish(norm(layer(torch.cat([hidden, actions], dim=-1))))
        return self.output(torch.cat([hidden, actions], dim=-1))


class HLGauss(nn.Module):
    """Histogram loss with Gaussian smoothing (Imani & White 2018; Farebrother et al. 2024)."""

    def __init__(self, num_bins: int, value_min: float, value_max: float, sigma_ratio: float = 0.75):
        super().__init__()
        support = torch.linspace(value_min, value_max, num_bins + 1)
        self.register_buffer("support", support)
        self.register_buffer("centres", (support[:-1] + support[1:]) / 2)
        self.sigma = sigma_ratio * (value_max - value_min) / num_bins

    def expectation(self, logits: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(logits, dim=-1) * self.centres).sum(-1)

    def target_distribution(self, target: torch.Tensor) -> torch.Tensor:
        cdf = torch.special.erf((self.support - target.unsqueeze(-1)) / (self.sigma * 2**0.5))
        mass = cdf[..., 1:] - cdf[..., :-1]
        return mass / (cdf[..., -1:] - cdf[..., :1]).clamp_min(1e-8)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return -(self.target_distribution(target) * torch.log_softmax(logits, dim=-1)).sum(-1)


class TwinCritic(nn.Module):
    """`members` Q heads (2: the twin critic) on one observation encoder:
    ``q_values(features, actions) -> (members, batch[, n])``."""

    def __init__(
        self,
        spec: ObservationSpec,
        action_dim: int,
        observation: str = "state",
        hidden: int = 256,
        layers: int = 3,
        hl_gauss_bins: int = 0,
        value_range: tuple[float, float] = (-100.0, 10.0),
        members: int = 2,
    ):
        super().__init__()
        self.encoder = build_encoder(spec, observation, hidden)
        out_dim = hl_gauss_bins if hl_gauss_bins > 0 else 1
        self.heads = nn.ModuleList(
            [ActionConcatMLP(self.encoder.output_dim, action_dim, hidden, layers, out_dim) for _ in range(members)]
        )
        self.hl_gauss = HLGauss(hl_gauss_bins, *value_range) if hl_gauss_bins > 0 else None

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder(obs)

    def head_outputs(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Raw head outputs (members, batch[, n], out_dim); features (batch, F) broadcast over n candidates.

        All heads in one pass: each layer's weights stacked over the heads and applied with one batched
        matrix product (`baddbmm`), instead of one `linear` per head and layer — the same function as
        calling every `ActionConcatMLP` (tests/test_rl_core.py checks it), with a fraction of the
        operator calls (kernel launches on a GPU) when there are many heads."""
        if actions.dim() == features.dim() + 1:
            features = features.unsqueeze(-2).expand(*actions.shape[:-1], features.shape[-1])
        leading = actions.shape[:-1]
        members = len(self.heads)
        flat_actions = actions.reshape(1, -1, actions.shape[-1]).expand(members, -1, -1)  # (M, N, A)
        hidden = features.reshape(1, -1, features.shape[-1]).expand(members, -1, -1)  # (M, N, F)
        for index in range(len(self.heads[0].layers)):
            layers = [head.layers[index] for head in self.heads]
            norms = [head.norms[index] for head in self.heads]
            weight = torch.stack([layer.weight for layer in layers])  # (M, H, in + A)
            bias = torch.stack([layer.bias for layer in layers]).unsqueeze(1)  # (M, 1, H)
            pre = torch.baddbmm(bias, torch.cat([hidden, flat_actions], dim=-1), weight.transpose(1, 2))
            normalized = nn.functional.layer_norm(pre, (pre.shape[-1],), None, None, norms[0].eps)
            scale = torch.stack([norm.weight for norm in norms]).unsqueeze(1)
            shift = torch.stack([norm.bias for norm in norms]).unsqueeze(1)
            hidden = mish(normalized * scale + shift)
        weight = torch.stack([head.output.weight for head in self.heads])
        bias = torch.stack([head.output.bias for head in self.heads]).unsqueeze(1)
        outputs = torch.baddbmm(bias, torch.cat([hidden, flat_actions], dim=-1), weight.transpose(1, 2))  # (M, N, out)
        return outputs.reshape(members, *leading, outputs.shape[-1])

    def q_values(self, features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        outputs = self.head_outputs(features, actions)
        if self.hl_gauss is not None:
            return self.hl_gauss.expectation(outputs)
        return outputs.squeeze(-1)

    def forward(self, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> torch.Tensor:
        return self.q_values(self.encode(obs), actions)


class ValueNetwork(nn.Module):
    """State value V(s) for IQL's expectile regression."""

    def __init__(self, spec: ObservationSpec, observation: str = "state", hidden: int = 256, layers: int = 3):
        super().__init__()
        self.encoder = build_encoder(spec, observation, hidden)
        self.head = mlp(self.encoder.output_dim, hidden, 1, layers)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)
