"""The control step and the learner update on each compute path (`learner.compute_path`: eager,
static, compiled): latency and operator calls per call (issue 25).

    python benchmarks/compute_paths.py [--device cuda] [--paths eager,static,compiled]
        [--workloads control_state,control_image,update_state,update_image] [--batch 256] [--repeats 20]

Control step: diffusion policy, k=32 m=10 T=10, step size 1e-2 (local steps are accepted: the
expensive path), one state, 128x128 images for `control_image`. Learner update: one critic update and
one distillation update (`PARLAgent.update_critic` + `update_policy`), Cal-QL, task defaults.
"kernels" counts the kernels Inductor generated for the compiled path (each one dispatch, like an
operator); "fewer ops" compares top-level operators plus those kernels with eager's operators.
On a GPU the operator calls approximate kernel launches, which is what bounds these small networks;
on a CPU they are the figure to drive down (the compiled path's first call compiles: minutes here).
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_calls import enable_compiled_kernel_profile, operator_calls, synchronize  # noqa: E402

from parl_robot.config import load_config  # noqa: E402
from parl_robot.nets.encoders import ObservationSpec  # noqa: E402
from parl_robot.observation import STATE_DIM  # noqa: E402
from parl_robot.rl.agent import PARLAgent  # noqa: E402
from parl_robot.rl.losses import achievable_returns  # noqa: E402

IMAGE_SHAPE = (128, 128, 3)
GPU_GOALS = {"control_state": "p99 < 8 ms", "control_image": "p99 < 10 ms", "update_state": "-",
             "update_image": ">= 60 updates/s at batch 256"}  # issue 25, on an H200


def _agent(observation: str, path: str, device: str) -> PARLAgent:
    cfg = load_config(task="cup_to_rack", overrides={"learner.observation": observation, "learner.device": device,
                                                     "learner.compute_path": path})
    spec = ObservationSpec(STATE_DIM, IMAGE_SHAPE if observation == "image" else None)
    value_range = achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, cfg.learner.critic.discount)
    return PARLAgent(cfg.learner, spec, value_range=value_range)


def _batch(observation: str, size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batch = {"state": rng.normal(size=(size, STATE_DIM)).astype(np.float32),
             "next_state": rng.normal(size=(size, STATE_DIM)).astype(np.float32),
             "action": rng.uniform(-1, 1, (size, 7)).astype(np.float32), "reward": -np.ones(size, np.float32),
             "done": np.zeros(size, np.float32), "mc_return": np.full(size, -10.0, np.float32)}
    if observation == "image":
        batch["image"] = rng.integers(0, 255, (size, *IMAGE_SHAPE), dtype=np.uint8)
        batch["next_image"] = rng.integers(0, 255, (size, *IMAGE_SHAPE), dtype=np.uint8)
    return batch


def workload(name: str, path: str, device: torch.device, batch_size: int):
    """A no-argument function running one call of the workload on `path`."""
    kind, observation = name.split("_")
    agent = _agent(observation, path, str(device))
    if kind == "control":
        agent.optimizer_cfg = replace(agent.optimizer_cfg, step_size=1e-2)
        obs = {"state": torch.randn(1, STATE_DIM, device=device)}
        if observation == "image":
            obs["image"] = torch.randint(0, 255, (1, *IMAGE_SHAPE), dtype=torch.uint8, device=device)
        step = agent.control_step
        return lambda: step(obs)
    batch = _batch(observation, batch_size)

    def update() -> None:
        agent.update_critic(batch)
        agent.update_policy(batch)

    return update


def measure(name: str, path: str, device: torch.device, batch_size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    run = workload(name, path, device, batch_size)
    start = time.perf_counter()
    run()  # the compiled path compiles here
    synchronize(device)
    first_s = time.perf_counter() - start
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    calls = operator_calls(run)
    return {"workload": name, "path": path, "device": str(device), "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "first_call_s": first_s, "repeats": repeats,
            "operator_calls_top_level": calls["top_level"], "operator_calls_all": calls["all"],
            "compiled_kernels": calls["compiled_kernels"],
            "batch_size": batch_size if name.startswith("update") else 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--paths", default="eager,static,compiled")
    parser.add_argument("--workloads", default="control_state,control_image,update_state,update_image")
    parser.add_argument("--batch", type=int, default=256, help="learner update batch size")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default="benchmarks/results/compute_paths.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    enable_compiled_kernel_profile()
    device = torch.device(args.device)
    rows = []
    for name in args.workloads.split(","):
        for path in args.paths.split(","):
            rows.append(measure(name, path, device, args.batch, args.repeats if name.startswith("control") else max(3, args.repeats // 5)))
            print(json.dumps(rows[-1]), flush=True)
    eager = {row["workload"]: row for row in rows if row["path"] == "eager"}
    print(f"\nCompute paths on {device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} thread(s)); learner batch {args.batch}")
    print(f"{'workload':15s} {'path':9s} {'p50 ms':>9s} {'p99 ms':>9s} {'ops top':>8s} {'ops all':>8s} {'kernels':>8s} "
          f"{'fewer ops':>10s} {'calls/s':>8s} {'first call s':>12s}  goal on a GPU")
    for row in rows:
        reference = eager.get(row["workload"])
        calls = row["operator_calls_top_level"] + row["compiled_kernels"]  # dispatches: operators + generated kernels
        ratio = f"{reference['operator_calls_top_level'] / calls:.1f}x" if reference else ""
        print(f"{row['workload']:15s} {row['path']:9s} {row['p50_ms']:9.1f} {row['p99_ms']:9.1f} "
              f"{row['operator_calls_top_level']:8d} {row['operator_calls_all']:8d} {row['compiled_kernels']:8d} {ratio:>10s} "
              f"{1000 / row['p50_ms']:8.2f} {row['first_call_s']:12.1f}  {GPU_GOALS.get(row['workload'], '')}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__, "threads": args.threads,
                                          "machine": platform.machine(), "cpus": os.cpu_count()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
