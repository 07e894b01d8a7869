"""CPU cost of Mish: PyTorch's kernel vs the vectorized form in parl_robot/nets/activations.py, per
call and per critic update of the sim study's set-up (cup_to_rack, config/profiles/study.yaml:
diffusion policy, k = 8 samples, T = 10 local steps, CQL on 4 policy samples, batch 64).

    python benchmarks/mish_speed.py [--updates 40] [--threads 1] [--out benchmarks/results/mish_speed.json]

Prints a table and writes JSON. One thread by default, as the study and the learner node run torch.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from parl_robot.nets import activations


def _per_call(shape: tuple[int, int], repeats: int) -> dict:
    x = torch.randn(*shape).mul_(3.0).requires_grad_()
    row = {}
    for name, vectorized in (("torch", False), ("vectorized", True)):
        activations.use_vectorized_cpu_mish = vectorized
        for _ in range(20):
            activations.mish(x).sum().backward()
        started = time.perf_counter()
        for _ in range(repeats):
            activations.mish(x)
        forward_us = (time.perf_counter() - started) / repeats * 1e6
        started = time.perf_counter()
        for _ in range(repeats):
            activations.mish(x).sum().backward()
        row[name] = {"forward_us": round(forward_us, 1),
                     "forward_backward_us": round((time.perf_counter() - started) / repeats * 1e6, 1)}
    activations.use_vectorized_cpu_mish = True
    return row


def _study_batch(rng: np.random.Generator, batch: int) -> dict:
    from parl_robot.observation import STATE_DIM

    state = rng.normal(size=(batch, STATE_DIM)).astype(np.float32)
    return {"state": state, "next_state": state + 0.01, "action": rng.uniform(-1, 1, (batch, 7)).astype(np.float32),
            "reward": -np.ones(batch, np.float32), "done": np.zeros(batch, np.float32),
            "mc_return": -np.full(batch, 5.0, np.float32), "episode_success": np.ones(batch, np.float32)}


def _per_update(updates: int) -> dict:
    from parl_robot.config import load_config
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.observation import STATE_DIM
    from parl_robot.rl.agent import PARLAgent

    cfg = load_config(task="cup_to_rack", overlays=["study"])
    row = {}
    for name, vectorized in (("torch", False), ("vectorized", True)):
        activations.use_vectorized_cpu_mish = vectorized
        torch.manual_seed(0)
        agent = PARLAgent(cfg.learner, ObservationSpec(STATE_DIM))
        rng = np.random.default_rng(0)
        batches = [_study_batch(rng, cfg.learner.schedule.batch_size) for _ in range(updates + 3)]
        for batch in batches[:3]:
            agent.update_critic(batch)
        started = time.perf_counter()
        for batch in batches[3:]:
            agent.update_critic(batch)
        row[name] = {"critic_update_ms": round((time.perf_counter() - started) / updates * 1e3, 1)}
    activations.use_vectorized_cpu_mish = True
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=40, help="critic updates timed per implementation")
    parser.add_argument("--repeats", type=int, default=400, help="calls timed per shape")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/mish_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = {"critic hidden (64 x 8 candidates, 128)": (512, 128),
              "diffusion block (64 x 8 candidates, 4 x 128)": (512, 512)}
    calls = {label: _per_call(shape, args.repeats) for label, shape in shapes.items()}
    update = _per_update(args.updates)
    print(f"{'what':<46} {'torch':>12} {'vectorized':>12} {'speed-up':>9}")
    for label, row in calls.items():
        for key, unit in (("forward_us", "fwd µs"), ("forward_backward_us", "fwd+bwd µs")):
            torch_value, fast_value = row["torch"][key], row["vectorized"][key]
            print(f"{label + ', ' + unit:<46} {torch_value:>12.1f} {fast_value:>12.1f} {torch_value / fast_value:>8.2f}x")
    slow, fast = update["torch"]["critic_update_ms"], update["vectorized"]["critic_update_ms"]
    print(f"{'study critic update (TD target + CQL), ms':<46} {slow:>12.1f} {fast:>12.1f} {slow / fast:>8.2f}x")
    result = {"per_call": calls, "critic_update": update, "threads": args.threads,
              "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
