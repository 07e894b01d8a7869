"""Observation encoders: low-dimensional state MLP, and ResNet-18 from scratch for RGB images.

Observations travel as dicts of tensors: ``state`` (batch, state_dim) float32 and, for image
policies, ``image`` (batch, H, W, 3) uint8 as stored. An encoder maps one batch to features
(batch, output_dim); callers compute the features once per state and reuse them for every
candidate action and every local optimization step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from parl_robot.nets.mlp import mlp


@dataclass(frozen=True)
class ObservationSpec:
    state_dim: int
    image_shape: tuple[int, int, int] | None = None  # (H, W, 3) when images are used


class StateNormalizer(nn.Module):
    """Standardizes the low-dimensional state with dataset statistics (buffers: saved in checkpoints).

    Positions on the table vary by a few centimetres around ~0.3 m; without this the networks see
    nearly constant inputs and cannot resolve where the object is relative to the gripper."""

    def __init__(self, state_dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(state_dim))
        self.register_buffer("std", torch.ones(state_dim))

    def fit(self, states: torch.Tensor, min_std: float = 1e-2) -> None:
        states = torch.as_tensor(states, dtype=torch.float32, device=self.mean.device).reshape(-1, self.mean.shape[0])
        if len(states) < 2:
            raise ValueError(f"need at least 2 states to fit the normalizer, got {len(states)}")
        self.mean.copy_(states.mean(0))
        self.std.copy_(states.std(0).clamp_min(min_std))  # binary or constant dims stay well-scaled

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.mean) / self.std


class StateEncoder(nn.Module):
    def __init__(self, state_dim: int, hidden: int = 256, output_dim: int = 256):
        super().__init__()
        self.normalize = StateNormalizer(state_dim)
        self.net = mlp(state_dim, hidden, output_dim, layers=1)
        self.output_dim = output_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(self.normalize(obs["state"]))


def random_shift(images: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` px and crop back at a random offset per image."""
    batch, channels, height, width = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets_x = torch.randint(0, 2 * pad + 1, (batch,), device=images.device)
    offsets_y = torch.randint(0, 2 * pad + 1, (batch,), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :] + offsets_y[:, None]  # (batch, H)
    cols = torch.arange(width, device=images.device)[None, :] + offsets_x[:, None]  # (batch, W)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    shifted = padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]  # (batch, H, W, C)
    return shifted.permute(0, 3, 1, 2)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.GroupNorm(8, out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.relu(self.norm1(self.conv1(x)))
        return nn.functional.relu(self.norm2(self.conv2(out)) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """ResNet-18 (2-2-2-2 basic blocks) from scratch, GroupNorm instead of BatchNorm for RL.

    Images are scaled to [0, 1]; in training mode a ±4 px random shift is applied. The low-dim
    state is appended to the pooled image features.
    """

    def __init__(self, spec: ObservationSpec, output_dim: int = 256, shift_pad: int = 4):
        super().__init__()
        if spec.image_shape is None:
            raise ValueError("ResNet18Encoder needs ObservationSpec.image_shape")
        self.shift_pad = shift_pad
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.GroupNorm(8, 64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        stages, in_channels = [], 64
        for out_channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(in_channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1)]
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.normalize = StateNormalizer(spec.state_dim)
        self.project = nn.Sequential(nn.Linear(512 + spec.state_dim, output_dim), nn.LayerNorm(output_dim), nn.Tanh())
        self.output_dim = output_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        images = obs["image"].permute(0, 3, 1, 2).float() / 255.0  # (batch, 3, H, W)
        if self.training and self.shift_pad > 0:
            images = random_shift(images, self.shift_pad)
        pooled = self.stages(self.stem(images)).mean(dim=(2, 3))  # (batch, 512)
        return self.project(torch.cat([pooled, self.normalize(obs["state"])], dim=-1))


def build_encoder(spec: ObservationSpec, observation: str, hidden: int = 256) -> nn.Module:
    if observation == "image":
        return ResNet18Encoder(spec, output_dim=hidden)
    return StateEncoder(spec.state_dim, hidden=hidden, output_dim=hidden)
