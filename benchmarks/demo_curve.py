"""Does the README's demo show PA-RL learning? `parl-robot demo` (the full ROS 2 graph in sim: demos,
offline pre-training, warm-up, online fine-tuning) once per seed, each into its own store; per seed
the warm-up success (the offline policy), the first and last 10 online episodes and the wall time.

    python benchmarks/demo_curve.py [--seeds 0 1 2 3 4] [--overlay demo] [--episodes N] \
        [--out benchmarks/results/demo_curve.json]

Goal (issue 27): on average over >= 5 seeds, the last 10 online episodes >= 25 points above the
warm-up start, each run <= 10 min of wall time on 2 cores. Prints a table and writes JSON. Runs one
demo at a time by default (the wall-time goal is for one demo on the machine); `--parallel 2` runs
two at once (each in its own DDS domain) when only the learning curve is wanted: the JSON records
it. `--keep` keeps the stores and logs (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from parl_robot.data.episode_store import EpisodeStore
from parl_robot.data.learning_curve import curve_summary, success_curve
from parl_robot.version import code_version

GOAL_GAIN = 0.25
GOAL_MINUTES = 10.0
STOP_GRACE_S = 120.0  # for the launcher to stop its nodes after Ctrl-C


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def run_demo(seed: int, overlay: str, episodes: int | None, store: Path, timeout_s: float) -> dict:
    command = [sys.executable, "-m", "parl_robot.cli", "demo", f"seed:={seed}", f"overlay:={overlay}",
               f"store_dir:={store}"] + ([f"episodes:={episodes}"] if episodes else [])
    started = time.perf_counter()
    log_path = store.parent / f"{store.name}.log"
    # Its own DDS domain (localhost only): runs in parallel never hear each other.
    env = dict(os.environ, ROS_DOMAIN_ID=str(100 + seed % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    with open(log_path, "w") as log:
        demo = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = demo.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # Ctrl-C, as an operator would: the launcher stops its nodes (each in its own session, so
            # killing the demo process alone would leave them running).
            demo.send_signal(signal.SIGINT)
            try:
                demo.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                demo.kill()
                demo.wait()
            code = "timeout"
    wall_s = time.perf_counter() - started
    records = EpisodeStore(store).records() if store.exists() else []
    points = success_curve(records)["points"]
    return {"seed": seed, "exit": code, "wall_s": round(wall_s, 1), "code_version": code_version(), **curve_summary(records),
            "successes": {phase: [int(p["success"]) for p in points if p["phase"] == phase] for phase in ("warmup", "online")},
            "log": str(log_path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--overlay", default="demo")
    parser.add_argument("--episodes", type=int, default=None, help="online episodes [the overlay's]")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="a run that takes longer is stopped")
    parser.add_argument("--parallel", type=int, default=1, help="demos run at once (wall times then overlap)")
    parser.add_argument("--add-to", default="", help="a demo_curve JSON whose runs are kept (their seeds are not run again)")
    parser.add_argument("--keep", default="", help="directory for the stores and logs [a temporary one, removed]")
    parser.add_argument("--out", default="benchmarks/results/demo_curve.json")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="demo_curve_"))
    root.mkdir(parents=True, exist_ok=True)
    runs = json.loads(Path(args.add_to).read_text())["runs"] if args.add_to else []
    seeds = [seed for seed in args.seeds if seed not in {run["seed"] for run in runs}]
    print(f"{'seed':>4} {'exit':>7} {'min':>6} {'warm-up':>9} {'online 1-10':>12} {'last 10':>8} {'gain':>6}")

    def print_row(run: dict) -> None:
        gain = "–" if run["gain_points"] is None else f"{run['gain_points']:+.0f}"
        print(f"{run['seed']:>4} {str(run['exit']):>7} {run['wall_s'] / 60:>6.1f} {_percent(run['offline_start']):>9} "
              f"{_percent(run['first_online_block']):>12} {_percent(run['last_online_block']):>8} {gain:>6}", flush=True)

    for run in runs:
        print_row(run)
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            futures = [pool.submit(run_demo, seed, args.overlay, args.episodes, root / f"seed{seed}", args.timeout_min * 60)
                       for seed in seeds]
            for future in futures:
                run = future.result()
                runs.append(run)
                print_row(run)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    def mean(key: str, scale: float = 1.0) -> float | None:  # over the runs that have the figure
        values = [run[key] / scale for run in runs if run[key] is not None]
        return float(np.mean(values)) if values else None

    minutes = [r["wall_s"] / 60 for r in runs]
    mean_gain = mean("gain_points", 100.0)
    summary = {
        "seeds": len(runs), "completed": sum(r["exit"] == 0 for r in runs),
        "mean_offline_start": mean("offline_start"), "mean_last_online": mean("last_online_block"),
        "mean_gain": mean_gain, "mean_minutes": float(np.mean(minutes)) if minutes else None,
        "max_minutes": max(minutes, default=None),
        "goal_gain_met": mean_gain is not None and mean_gain >= GOAL_GAIN,
        # Only runs that finished count: a run stopped by the timeout met no time goal.
        "goal_minutes_met": bool(runs) and all(r["exit"] == 0 for r in runs) and max(minutes) <= GOAL_MINUTES,
    }
    print(f"mean: warm-up {_percent(summary['mean_offline_start'])} -> last 10 online "
          f"{_percent(summary['mean_last_online'])}, gain "
          f"{'–' if mean_gain is None else f'{100 * mean_gain:+.0f}'} points "
          f"(goal >= +{100 * GOAL_GAIN:.0f}: {'met' if summary['goal_gain_met'] else 'not met'}); "
          f"wall {summary['mean_minutes'] or 0:.1f} min mean, {summary['max_minutes'] or 0:.1f} max, "
          f"{summary['completed']} of {len(runs)} finished "
          f"(goal <= {GOAL_MINUTES:.0f}: {'met' if summary['goal_minutes_met'] else 'not met'})")
    result = {"summary": summary, "runs": runs, "overlay": args.overlay, "episodes": args.episodes,
              "parallel": args.parallel,
              "code_version": code_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
              "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
