"""Fully connected building blocks: LN-ResNet (IDQL/PA-RL diffusion backbone) and plain MLPs."""

from __future__ import annotations

import torch
from torch import nn

from parl_robot.nets.activations import Mish, mish


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int, layer_norm: bool = True) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        modules += [nn.Linear(width, hidden)]
        if layer_norm:
            modules += [nn.LayerNorm(hidden)]
        modules += [Mish()]
        width = hidden
    modules.append(nn.Linear(width, out_dim))
    return nn.Sequential(*modules)


class LNResNetBlock(nn.Module):
    def __init__(self, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.expand = nn.Linear(hidden, 4 * hidden)
        self.contract = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.contract(mish(self.expand(self.norm(self.dropout(x)))))


class LNResNet(nn.Module):
    """Residual MLP with pre-LayerNorm blocks (hidden 256, 3 blocks in the paper)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, blocks: int = 3, dropout: float = 0.0):
        super().__init__()
        self.input = nn.Linear(in_dim, hidden)
        self.blocks = nn.Sequential(*[LNResNetBlock(hidden, dropout) for _ in range(blocks)])
        self.output = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(mish(self.blocks(self.input(x))))
