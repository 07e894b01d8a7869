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


COMPILED_KERNEL_MARKS = ("cpp_fused", "triton_")  # in the names of Inductor's kernels (CPU C++, GPU Triton)


def operator_calls(function: Callable[[], object]) -> dict[str, int]:
    """Operator calls in one call of `function`: ATen operators at the `top_level` (called from Python
    or a compiled graph), `all` ATen operators (including those called inside others), and the
    `compiled_kernels` Inductor generated (listed only after `enable_compiled_kernel_profile()`; on a
    GPU each is a launch, as each top-level ATen operator is at least one)."""
    activities = [ProfilerActivity.CPU]
    with profile(activities=activities) as profiler:
        function()
    events = profiler.events()
    aten = [event for event in events if event.name.startswith("aten::")]
    top_level = [event for event in aten
                 if event.cpu_parent is None or not event.cpu_parent.name.startswith("aten::")]
    compiled = [event for event in events if any(mark in event.name for mark in COMPILED_KERNEL_MARKS)]
    return {"top_level": len(top_level), "all": len(aten), "compiled_kernels": len(compiled)}


def kept_activation_bytes(function: Callable[[], object], module: torch.nn.Module) -> tuple[int, int]:
    """(bytes, tensors) the autograd graph of one call of `function` keeps for its backward pass,
    `module`'s weights and buffers excluded, each storage counted once (views and expanded tensors
    share theirs): the activation memory of a training step, measurable on any device."""
    weights = {tensor.untyped_storage().data_ptr() for tensor in [*module.parameters(), *module.buffers()]}
    kept: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function()
    return sum(kept.values()), len(kept)


def enable_compiled_kernel_profile() -> None:
    """Have Inductor's CPU kernels record themselves in the profiler (before anything compiles)."""
    import torch._inductor.config

    torch._inductor.config.cpp.enable_kernel_profile = True


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
