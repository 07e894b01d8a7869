"""One learner acting for several arms (issue 29): the cost of one control tick for N arms when the
learner computes their actions in one batched control step (`PARLAgent.act_batch`, what the learner
hub does with `arms:=N acting:=learner`) vs one control step per arm (`act` N times, what N separate
learners would do on one machine). PA-RL's control step as configured (k samples, m kept, T local
steps), the task's policy and critic, state and image observations.

    python benchmarks/batched_acting.py [--device cuda] [--arms 1 2 4 8] [--repeats 30] \
        [--overlay cpu_demo] [--out benchmarks/results/batched_acting.json]

Prints a table (p50 / p99 ms per tick for all N arms, and the batched speed-up) and writes JSON.
Weights are the untrained initialization: the control step's cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from parl_robot.config import load_config
from parl_robot.observation import STATE_DIM
from parl_robot.rl.agent import PARLAgent
from parl_robot.task_agent import agent_for
from parl_robot.version import code_version


def build_agent(task: str, overlay: str, observation: str, device: str) -> PARLAgent:
    """The agent the learner node builds for this task and overlay (parl_robot.task_agent.agent_for)."""
    return agent_for(load_config(task=task, overlays=[overlay] if overlay else [],
                                 overrides={"learner.observation": observation, "learner.device": device}))


def arm_observations(agent: PARLAgent, arms: int, rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    observations = []
    for _ in range(arms):
        obs = {"state": rng.normal(size=STATE_DIM).astype(np.float32)}
        if agent.spec.image_shape is not None:
            obs["image"] = rng.integers(0, 256, agent.spec.image_shape, dtype=np.uint8)
        observations.append(obs)
    return observations


def time_ticks(tick, repeats: int, device: torch.device) -> np.ndarray:
    for _ in range(3):  # warm-up: allocator, cuDNN algorithm choice, lazy initialization
        tick()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        tick()  # act/act_batch return numpy arrays: the tick ends with the device's results on the host
        times.append((time.perf_counter() - start) * 1e3)
    return np.asarray(times)


def measure(agent: PARLAgent, arms: int, repeats: int) -> dict:
    observations = arm_observations(agent, arms, np.random.default_rng(arms))
    batched = time_ticks(lambda: agent.act_batch(observations), repeats, agent.device)
    one_by_one = time_ticks(lambda: [agent.act(obs) for obs in observations], repeats, agent.device)
    row = {"arms": arms}
    for name, times in (("batched", batched), ("per_arm", one_by_one)):
        row[f"{name}_p50_ms"] = round(float(np.percentile(times, 50)), 2)
        row[f"{name}_p99_ms"] = round(float(np.percentile(times, 99)), 2)
    row["speedup_p50"] = round(row["per_arm_p50_ms"] / row["batched_p50_ms"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--task", default="cup_to_rack")
    parser.add_argument("--overlay", default="", help="config overlay ('' = the task file's paper sizes)")
    parser.add_argument("--observations", nargs="+", default=["state", "image"], choices=["state", "image"])
    parser.add_argument("--arms", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the learner node uses 1)")
    parser.add_argument("--out", default="benchmarks/results/batched_acting.json")
    args = parser.parse_args()
    if any(arms < 1 for arms in args.arms):
        raise SystemExit(f"--arms: each count must be >= 1, got {args.arms}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"{'obs':6} {'arms':>4} {'batched p50/p99 ms':>20} {'per arm p50/p99 ms':>20} {'speed-up':>9}")
    for observation in args.observations:
        agent = build_agent(args.task, args.overlay, observation, args.device)
        optimizer = agent.cfg.optimizer
        for arms in args.arms:
            row = {"observation": observation, **measure(agent, arms, args.repeats)}
            rows.append(row)
            print(f"{observation:6} {arms:>4} {row['batched_p50_ms']:>10.1f} / {row['batched_p99_ms']:<8.1f}"
                  f" {row['per_arm_p50_ms']:>10.1f} / {row['per_arm_p99_ms']:<8.1f} {row['speedup_p50']:>8.2f}x", flush=True)
    device = torch.device(args.device)
    result = {
        "benchmark": "batched_acting", "code_version": code_version(), "task": args.task, "overlay": args.overlay,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "threads": args.threads, "repeats": args.repeats,
        "optimizer": {"num_samples": optimizer.num_samples, "num_kept": optimizer.num_kept, "local_steps": optimizer.local_steps},
        "rows": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
