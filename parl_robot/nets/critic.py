"""Q critic: an ensemble of heads (two by default) on one encoder, each MLP seeing the action at every
layer, with an optional HL-Gauss head."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class StackedHeads:
    """The heads' weights stacked on a leading `members` axis: weights[i] (M, H, in_i + A),
    biases[i] (M, H), norm scales and shifts (M, H); the output layer (M, out, H + A), (M, out)."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    norm_scales: list[torch.Tensor]
    norm_shifts: list[torch.Tensor]
    norm_eps: list[float]
    output_weight: torch.Tensor
    output_bias: torch.Tensor
    action_dim: int
    hl_gauss_centres: torch.Tensor | None


def stack_heads(critic: "TwinCritic") -> StackedHeads:
    """Stacked views of the critic's current weights (a copy: re-stack after the weights change, or
    call this inside the captured step so that it reads them every time)."""
    heads = critic.heads
    first = heads[0]
    depth = len(first.layers)
    action_dim = first.output.in_features - first.layers[-1].out_features if depth else first.output.in_features

    def stacked(get) -> torch.Tensor:
        return torch.stack([get(head) for head in heads])

    return StackedHeads(
        weights=[stacked(lambda head, i=i: head.layers[i].weight) for i in range(depth)],
        biases=[stacked(lambda head, i=i: head.layers[i].bias) for i in range(depth)],
        norm_scales=[stacked(lambda head, i=i: head.norms[i].weight) for i in range(depth)],
        norm_shifts=[stacked(lambda head, i=i: head.norms[i].bias) for i in range(depth)],
        norm_eps=[float(norm.eps) for norm in first.norms],
        output_weight=stacked(lambda head: head.output.weight),
        output_bias=stacked(lambda head: head.output.bias),
        action_dim=action_dim,
        hl_gauss_centres=critic.hl_gauss.centres if critic.hl_gauss is not None else None,
    )


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
        heads = stack_heads(self)
        members = heads.output_weight.shape[0]
        flat_actions = actions.reshape(1, -1, actions.shape[-1]).expand(members, -1, -1)  # (M, N, A)
        hidden = features.reshape(1, -1, features.shape[-1]).expand(members, -1, -1)  # (M, N, F)
        for index, weight in enumerate(heads.weights):  # (M, H, in + A)
            pre = torch.baddbmm(heads.biases[index].unsqueeze(1), torch.cat([hidden, flat_actions], dim=-1),
                                weight.transpose(1, 2))
            normalized = nn.functional.layer_norm(pre, (pre.shape[-1],), None, None, heads.norm_eps[index])
            hidden = mish(normalized * heads.norm_scales[index].unsqueeze(1) + heads.norm_shifts[index].unsqueeze(1))
        outputs = torch.baddbmm(heads.output_bias.unsqueeze(1), torch.cat([hidden, flat_actions], dim=-1),
                                heads.output_weight.transpose(1, 2))  # (M, N, out)
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
