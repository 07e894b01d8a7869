"""When the agent's networks are in training mode: only inside a loss's forward pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def training_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """The given networks in training mode (dropout, image augmentation) for a loss's forward pass,
    back in evaluation mode after. Outside these passes every network of the agent stays in
    evaluation mode: actions, TD targets, the candidates the optimizer ranks and the action cache's
    samples are never augmented or dropped out (as the reference runs them, `train=False`), and
    acting or a cache rebuild on another thread never flips a mode an update relies on."""
    present = [module for module in modules if module is not None]
    for module in present:
        module.train()
    try:
        yield
    finally:
        for module in present:
            module.eval()
