"""Sampling from a softmax with the Gumbel-max trick, from uniform noise drawn up front.

argmax(scores / T + G) with G = -log(-log U), U ~ Uniform(0, 1), is distributed as softmax(scores / T).
Drawing U before a static-shape computation (a compiled or CUDA-graphed step) keeps the random draw
outside it; the action optimizer's softmax selection and OpenVLA's static token decoding both use this.
"""

from __future__ import annotations

import torch


def gumbel_from_uniform(uniform: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise from uniform noise (clamped away from 0 and 1, where the logs diverge)."""
    return -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))


def gumbel_max(scores: torch.Tensor, noise: torch.Tensor, temperature: float, dim: int = -1,
               keepdim: bool = False) -> torch.Tensor:
    """Indices along `dim` drawn from softmax(scores / temperature) given Gumbel `noise`; argmax at temperature 0."""
    if temperature > 0:
        return (scores / temperature + noise).argmax(dim=dim, keepdim=keepdim)
    return scores.argmax(dim=dim, keepdim=keepdim)
