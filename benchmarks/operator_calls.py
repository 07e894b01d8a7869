"""Operator calls per call of a function, from the torch profiler: the figure to drive down when a GPU
workload is launch-bound (issue 25). Each top-level ATen operator is one dispatch (on a GPU, one or
more kernel launches); a compiled graph shows up as the few operators it does not fuse (matrix
products, convolutions) plus its own entry.

    from operator_calls import operator_calls
    operator_calls(lambda: step(obs))  # {"top_level": 140, "all": 617}
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def operator_calls(function: Callable[[], object]) -> dict[str, int]:
    """ATen operator calls in one call of `function`: `top_level` (called from Python or a compiled
    graph) and `all` (including the operators those call internally)."""
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        function()
    aten = [event for event in profiler.events() if event.name.startswith("aten::")]
    top_level = [event for event in aten
                 if event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::")]
    return {"top_level": len(top_level), "all": len(aten)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
