"""Mish, x·tanh(softplus(x)): the activation of the PA-RL/IDQL networks (diffusion LN-ResNet, critic).

On CPU, PyTorch's own `mish` kernel costs ~9 ns per float32 element on one AVX2 core, forward and
backward about 2.5x more than the same function built from vectorized `exp`, `sigmoid` and
arithmetic; in the sim study it was a quarter of every critic update (`benchmarks/mish_speed.py`
measures both, per call and per critic update). So on CPU, for float32/float64, Mish is computed as

    tanh(softplus(x)) = e(e + 2) / (e(e + 2) + 2),  e = exp(min(x, 20))

(above 20 the ratio is 1 to float64 precision) with the derivative t + x·(1 − t²)·sigmoid(x). It
agrees with `torch.nn.functional.mish` to ~1e-6 in float32 (tests/test_activations.py). On CUDA and
for other dtypes (fp16/bf16, where e(e + 2) overflows) it is `torch.nn.functional.mish`, one fused
kernel: there the extra element-wise launches would cost more than they save.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

_EXP_CLAMP = 20.0  # tanh(softplus(20)) = 1 − 8.5e-18: 1 in float32 and float64
_FAST_DTYPES = (torch.float32, torch.float64)

use_vectorized_cpu_mish = True  # False: always PyTorch's kernel (the benchmark compares both)


def tanh_softplus(x: torch.Tensor) -> torch.Tensor:
    """tanh(softplus(x)) from one exp (Mish is x times this): e(e + 2) / (e(e + 2) + 2), e = exp(min(x, 20))."""
    ratio = x.clamp(max=_EXP_CLAMP).exp()  # e
    ratio = ratio * (ratio + 2.0)  # e(e + 2)
    return ratio / (ratio + 2.0)


def mish_slope(x: torch.Tensor, tanh_softplus_x: torch.Tensor) -> torch.Tensor:
    """d mish / dx = t + x·(1 − t²)·sigmoid(x), t = tanh(softplus(x))."""
    return tanh_softplus_x + x * (1.0 - tanh_softplus_x * tanh_softplus_x) * torch.sigmoid(x)


class _VectorizedMish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ratio = x.clamp(max=_EXP_CLAMP).exp_()  # e; in place: tanh_softplus without its temporaries
        ratio.mul_(ratio + 2.0)  # e(e + 2)
        ratio.div_(ratio + 2.0)  # tanh(softplus(x))
        ctx.save_for_backward(x, ratio)
        return x * ratio

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        x, tanh_softplus = ctx.saved_tensors
        slope = torch.sigmoid(x).mul_(x).mul_(1.0 - tanh_softplus * tanh_softplus).add_(tanh_softplus)
        return slope.mul_(grad_output)


def mish(x: torch.Tensor) -> torch.Tensor:
    if use_vectorized_cpu_mish and x.device.type == "cpu" and x.dtype in _FAST_DTYPES:
        return _VectorizedMish.apply(x)
    return nn.functional.mish(x)


class Mish(nn.Module):
    """`nn.Mish` with the CPU fast path above (no parameters: state dicts are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)
