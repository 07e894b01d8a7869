"""Speed of the MuJoCo twin: state-only control steps (real-time factor) and camera rendering, per task.

    taskset -c 0 python benchmarks/sim_speed.py [--steps 400] [--out benchmarks/results/sim_speed.json]

One control step = IK + physics substeps for one 1/rate_hz period. `taskset -c 0` pins it to one
core, the issue's condition (EGL without a GPU renders with llvmpipe, which otherwise spreads over
all cores). Goals (issue 4): state-only >= 10x real time; rendering keeps up with 5 Hz on one core.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from parl_robot.config import TASKS, load_config  # noqa: E402
from parl_robot.sim.env import WidowXSimEnv  # noqa: E402


def measure_task(task: str, steps: int) -> dict:
    cfg = load_config(task=task)
    env = WidowXSimEnv(cfg)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    step_times = []
    for i in range(steps):
        action = rng.uniform(-1.0, 1.0, 7)
        start = time.perf_counter()
        _, _, terminal, truncated, _ = env.step(action)
        step_times.append(time.perf_counter() - start)
        if terminal or truncated:
            env.reset(seed=i)
    env.world.render()  # warm the renderer (context creation is not per-frame cost)
    render_times = []
    for _ in range(max(20, steps // 10)):
        start = time.perf_counter()
        env.world.render()
        render_times.append(time.perf_counter() - start)
    env.close()
    step_ms = np.array(step_times) * 1e3
    render_ms = np.array(render_times) * 1e3
    period_ms = 1e3 / cfg.control.rate_hz
    return {
        "task": task,
        "control_period_ms": period_ms,
        "step_ms_p50": float(np.percentile(step_ms, 50)),
        "step_ms_p99": float(np.percentile(step_ms, 99)),
        "real_time_factor": float(period_ms / step_ms.mean()),
        "render_size": f"{cfg.sim.camera_width}x{cfg.sim.camera_height}",
        "render_ms_p50": float(np.percentile(render_ms, 50)),
        "render_ms_p99": float(np.percentile(render_ms, 99)),
        "image_step_real_time_factor": float(period_ms / (step_ms.mean() + render_ms.mean())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", default="benchmarks/results/sim_speed.json")
    args = parser.parse_args()
    rows = [measure_task(task, args.steps) for task in TASKS]
    header = f"{'task':<18} {'step p50':>9} {'step p99':>9} {'x real time':>11} {'render p50':>11} {'render p99':>11} {'x rt w/ image':>13}"
    print(header)
    for r in rows:
        print(
            f"{r['task']:<18} {r['step_ms_p50']:>7.2f}ms {r['step_ms_p99']:>7.2f}ms {r['real_time_factor']:>10.0f}x "
            f"{r['render_ms_p50']:>9.1f}ms {r['render_ms_p99']:>9.1f}ms {r['image_step_real_time_factor']:>12.1f}x"
        )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"rows": rows, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                   "cores_used": len(os.sched_getaffinity(0)),
                   "mujoco_gl": os.environ.get("MUJOCO_GL")}, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
