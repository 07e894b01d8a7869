"""OpenVLA-7B-shaped costs: peak GPU memory of one LoRA distillation step (bf16 and 4-bit NF4, with
and without gradient checkpointing; on a CPU the activations kept for the backward pass instead) and
the latency and operator calls of sampling 8 and 16 actions for one state, per decoding path
(`learner.compute_path` eager -> "dynamic": growing cache, multinomial; static -> "static":
preallocated cache, Gumbel-max; compiled -> "compiled": the whole sample call through torch.compile,
one CUDA graph on a GPU).

    python benchmarks/openvla.py --device cuda [--repeats 20] [--out benchmarks/results/openvla.json]
    python benchmarks/openvla.py --tiny          # CPU run with the tiny test model's shapes

The 7B model is built with random weights directly on the device (Llama-2-7B language model, DINOv2
ViT-L/14 + SigLIP SO400M/14 at 224 px), so no checkpoint is needed; costs do not depend on the
weights' values. Goals (issue 7): 4-bit LoRA step < 24 GB; 8 samples p99 < 300 ms on an H100.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_calls import enable_compiled_kernel_profile, kept_activation_bytes, operator_calls  # noqa: E402

from parl_robot.policies.openvla.action_tokens import BRIDGE_ORIG, ActionSpaceMap  # noqa: E402
from parl_robot.policies.openvla.lora import apply_lora, quantize_4bit  # noqa: E402
from parl_robot.policies.openvla.model import OpenVLAArchitecture, OpenVLAModel, rebuild_rotary_embedding  # noqa: E402
from parl_robot.policies.openvla.policy import OpenVLAPolicy  # noqa: E402

SCALE = [0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0]
PROMPT_LENGTH = 28  # BOS + "In: What action should the robot take to put the cup on the drying rack?\nOut:" + "▁"


def random_model(architecture: OpenVLAArchitecture, device: torch.device, dtype: torch.dtype) -> OpenVLAModel:
    """Allocate on the device without a CPU copy and fill with small random values."""
    with torch.device("meta"):
        model = OpenVLAModel(architecture)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "layernorm.weight", "scale_factor")):
                tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 0.02)
    rebuild_rotary_embedding(model, device)
    return model.eval()


def build(architecture, device, dtype, four_bit: bool, rank: int) -> OpenVLAPolicy:
    model = random_model(architecture, device, dtype)
    if four_bit:
        model = quantize_4bit(model, dtype, str(device))
    model = apply_lora(model, rank, 16.0, 0.0, "all-linear")
    prompt = [1] + [100 + i for i in range(PROMPT_LENGTH - 2)] + [29871]
    return OpenVLAPolicy(model, prompt, ActionSpaceMap(BRIDGE_ORIG, SCALE), temperature=1.0).to(device)


def set_decoding(policy: OpenVLAPolicy, decoding: str) -> None:
    policy.decoding, policy._static_sampler = decoding, None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def lora_step_memory(policy: OpenVLAPolicy, device: torch.device, batch: int) -> dict:
    policy.train()
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=5e-4)
    images = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8, device=device)
    actions = torch.rand(batch, 7, device=device) * 2 - 1
    times = []
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(3):  # the first step allocates the optimizer state
        started = time.perf_counter()
        loss = policy.supervised_loss({"image": images}, actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    return {"batch": batch, "peak_gib": round(peak, 2), "step_s": round(float(np.median(times[1:])), 3),
            "trainable_parameters": trainable, "kept_activation_mib": round(kept_activations(policy, images, actions), 2)}


def kept_activations(policy: OpenVLAPolicy, images: torch.Tensor, actions: torch.Tensor) -> float:
    """MiB the forward pass keeps for the backward pass, weights excluded (the same on any device)."""
    kept_bytes, _ = kept_activation_bytes(lambda: policy.supervised_loss({"image": images}, actions), policy)
    return kept_bytes / 2**20


def sampling_latency(policy: OpenVLAPolicy, device: torch.device, samples: int, repeats: int) -> dict:
    image = torch.randint(0, 256, (1, 224, 224, 3), dtype=torch.uint8, device=device)
    policy.eval()
    started = time.perf_counter()
    policy.sample({"image": image}, samples)  # compiles on the compiled path
    synchronize(device)
    first_call_s = time.perf_counter() - started
    for _ in range(2):
        policy.sample({"image": image}, samples)
    calls = operator_calls(lambda: policy.sample({"image": image}, samples))
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        policy.sample({"image": image}, samples)
        synchronize(device)
        times.append(1000 * (time.perf_counter() - started))
    return {"samples": samples, "p50_ms": round(float(np.percentile(times, 50)), 1),
            "p99_ms": round(float(np.percentile(times, 99)), 1), "repeats": repeats,
            "first_call_s": round(first_call_s, 1), "operator_calls_top_level": calls["top_level"],
            "operator_calls_all": calls["all"], "compiled_kernels": calls["compiled_kernels"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test model's shapes (CPU smoke run)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8, help="LoRA step batch size")
    parser.add_argument("--modes", nargs="+", default=["bf16", "4bit"], choices=["bf16", "4bit"])
    parser.add_argument("--decodings", nargs="+", default=["dynamic", "static", "compiled"],
                        choices=["dynamic", "static", "compiled"])
    parser.add_argument("--out", default="benchmarks/results/openvla.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    enable_compiled_kernel_profile()
    architecture = OpenVLAArchitecture.tiny() if args.tiny else OpenVLAArchitecture.openvla_7b()
    rows = []
    for mode in args.modes:
        torch.manual_seed(0)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        policy = build(architecture, device, torch.bfloat16, mode == "4bit", rank=32)
        row = {"mode": mode}
        for checkpointing in (False, True):
            policy.model.enable_gradient_checkpointing(checkpointing)
            row["lora_step_checkpointed" if checkpointing else "lora_step"] = lora_step_memory(policy, device, args.batch)
        row["sampling"] = []
        for decoding in args.decodings:
            set_decoding(policy, decoding)
            row["sampling"] += [dict(sampling_latency(policy, device, n, args.repeats), decoding=decoding) for n in (8, 16)]
        rows.append(row)
        del policy
    print(f"{'mode':<6} {'LoRA step peak GiB':>18} {'+ checkpointing':>15} {'kept MiB':>9} {'+ ckpt':>7} {'step s':>7}")
    for row in rows:
        plain, checkpointed = row["lora_step"], row["lora_step_checkpointed"]
        print(f"{row['mode']:<6} {plain['peak_gib']:>18} {checkpointed['peak_gib']:>15} {plain['kept_activation_mib']:>9}"
              f" {checkpointed['kept_activation_mib']:>7} {checkpointed['step_s']:>7}")
    print(f"{'mode':<6} {'decoding':<9} {'samples':>7} {'p50/p99 ms':>18} {'top-level ops':>13} {'kernels':>8} {'first s':>8}")
    for row in rows:
        for sampling in row["sampling"]:
            print(f"{row['mode']:<6} {sampling['decoding']:<9} {sampling['samples']:>7} "
                  f"{sampling['p50_ms']:>8} / {sampling['p99_ms']:<7} {sampling['operator_calls_top_level']:>13} "
                  f"{sampling['compiled_kernels']:>8} {sampling['first_call_s']:>8}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"device": device_name, "model": "tiny" if args.tiny else "openvla-7b shapes (random weights)",
              "torch": torch.__version__, "rows": rows}
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
