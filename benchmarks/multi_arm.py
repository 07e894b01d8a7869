"""Several sim arms feeding one learner (issue 29): the whole ROS 2 graph with `arms:=N` (one sim
bridge, reward detector and episode manager per arm, one learner acting for all in a batch), in real
time (`lockstep:=false`: several sim bridges cannot share one /clock). Per run: success per arm per
block of 10 episodes (warm-up, then online), the transitions per second that reached the learner and
its online critic updates per second, and the wall time.

    python benchmarks/multi_arm.py [--arms 2] [--task cup_to_rack] [--overlay demo] [--episodes 30] \
        [--seed 0] [--out benchmarks/results/multi_arm.json]

`--arms 1 2` runs one arm and then two with the same per-arm episode count, seed and set-up, so the
table compares them. Each run records the overlay's demonstrations into a fresh store first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from parl_robot.config import load_config
from parl_robot.data.episode_store import EpisodeStore
from parl_robot.version import code_version

BLOCK = 10
STOP_GRACE_S = 120.0  # for the launcher to stop its nodes after Ctrl-C
UPDATES_LINE = re.compile(r"stored \S+: \w+, \d+ steps, policy v\d+, (\d+) online updates")


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "parl_robot.cli", *arguments]


def run_graph(arms: int, task: str, overlay: str, episodes: int, seed: int, store: Path, timeout_s: float) -> dict:
    store.mkdir(parents=True, exist_ok=True)
    log_path = store.parent / f"{store.name}.log"
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + arms), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    overrides = {"episodes.num_online_episodes": episodes, "sim.seed": seed, "learner.seed": seed}
    with open(log_path, "w") as log:
        subprocess.run(_cli("record-demos", f"task:={task}", f"overlay:={overlay}", f"store_dir:={store}", f"seed:={seed}"),
                       stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
        started = time.perf_counter()
        graph = subprocess.Popen(
            _cli("launch", "finetune", f"task:={task}", "sim:=true", f"arms:={arms}", "lockstep:=false",
                 f"overlay:={overlay}", f"store_dir:={store}", f"overrides:={json.dumps(overrides)}"),
            stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = graph.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            graph.send_signal(signal.SIGINT)  # the launcher stops its nodes (each in its own session)
            try:
                graph.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                graph.kill()
                graph.wait()
            code = "timeout"
    wall_s = time.perf_counter() - started
    arm_stores = [store / f"arm{arm}" for arm in range(arms)] if arms > 1 else [store]
    per_arm, stored = [], []
    for arm_store in arm_stores:
        records = sorted((r for r in EpisodeStore(arm_store).records() if r["kind"] == "online" and not r.get("aborted")),
                         key=lambda r: r["created"])
        stored += records
        outcomes = [int(r["success"]) for r in records]
        per_arm.append({
            "episodes": len(records), "warmup_success": [int(r["success"]) for r in records if r["phase"] == "warmup"],
            "success": outcomes,
            "blocks_of_10": [float(np.mean(outcomes[i:i + BLOCK])) for i in range(0, len(outcomes), BLOCK)],
        })
    stored.sort(key=lambda r: r["created"])
    span_s = stored[-1]["created"] - stored[0]["created"] if len(stored) > 1 else None
    updates = [int(m.group(1)) for m in UPDATES_LINE.finditer(log_path.read_text())]
    return {
        "arms": arms, "exit": code, "wall_s": round(wall_s, 1), "per_arm": per_arm,
        # Between the first and the last stored episode: the steps of every episode after the first.
        "transitions_per_s": round(sum(r["steps"] for r in stored[1:]) / span_s, 2) if span_s else None,
        "online_updates": updates[-1] if updates else None,
        "online_updates_per_s": round(updates[-1] / span_s, 2) if updates and span_s else None,
        "log": str(log_path),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", type=int, nargs="+", default=[2])
    parser.add_argument("--task", default="cup_to_rack")
    parser.add_argument("--overlay", default="demo")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per arm, warm-up included")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-min", type=float, default=90.0)
    parser.add_argument("--keep", default="", help="directory for the stores and logs [a temporary one, removed]")
    parser.add_argument("--out", default="benchmarks/results/multi_arm.json")
    args = parser.parse_args()
    warmup = load_config(task=args.task, overlays=[args.overlay]).learner.schedule.warmup_episodes
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="multi_arm_"))
    runs = []
    try:
        for arms in args.arms:
            run = run_graph(arms, args.task, args.overlay, args.episodes, args.seed, root / f"arms{arms}",
                            args.timeout_min * 60)
            runs.append(run)
            print(f"arms {arms}: exit {run['exit']}, {run['wall_s'] / 60:.1f} min, "
                  f"{run['transitions_per_s']} transitions/s, {run['online_updates_per_s']} online updates/s", flush=True)
            for index, arm in enumerate(run["per_arm"]):
                blocks = " / ".join(f"{100 * b:.0f}" for b in arm["blocks_of_10"])
                print(f"  arm {index}: {arm['episodes']} episodes, {sum(arm['success'])} successes; "
                      f"per block of {BLOCK}: {blocks} %", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {"runs": runs, "task": args.task, "overlay": args.overlay, "episodes_per_arm": args.episodes,
              "warmup_episodes_total": warmup, "seed": args.seed, "code_version": code_version(),
              "cpus": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
