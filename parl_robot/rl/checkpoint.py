"""Atomic checkpoints: write to a temporary file, fsync, rename; the previous one is kept.

A checkpoint is data: it is read with `weights_only=True` (tensors, numbers, strings and containers of
them; the agent's state is only these), so a file swapped into a store can never run code when the
learner loads it. It is read onto the CPU whatever device wrote it (a GPU learner's checkpoint on a
CPU-only machine); the agent moves it to its own device."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import torch

LATEST = "latest.pt"
PREVIOUS = "previous.pt"
# The learner checkpoints from its learning thread (every N updates) and after each saved episode:
# the latest -> previous -> latest rotation must not interleave (found by benchmarks/soak.py).
_SAVE_LOCK = threading.Lock()


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    latest = directory / LATEST
    temporary = directory / f".{LATEST}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    with _SAVE_LOCK:
        if latest.exists():
            os.replace(latest, directory / PREVIOUS)
        os.replace(temporary, latest)
    return latest


def load_checkpoint(directory: str | Path) -> dict | None:
    """The newest readable checkpoint in `directory`, falling back to the previous one; None if none."""
    directory = Path(directory)
    errors = []
    for name in (LATEST, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a torn, corrupted or foreign file: try the previous one
            errors.append(f"{path}: {err}")
    if errors:
        raise RuntimeError("no readable checkpoint: " + "; ".join(errors))
    return None
