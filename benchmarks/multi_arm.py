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
    (store.parent / f"{store.name}.exit.json").write_text(json.dumps({"exit": code, "wall_s": wall_s}))
    return summarize(arms, store)


def summarize(arms: int, store: Path) -> dict:
    """The figures of a finished run from its stores and log (also for a kept run: --summarize)."""
    log_path = store.parent / f"{store.name}.log"
    ended = json.loads((store.parent / f"{store.name}.exit.json").read_text())
    code, wall_s = ended["exit"], ended["wall_s"]
    arm_stores = [store / f"arm{arm}" for arm in range(arms)] if arms > 1 else [store]
    per_arm, stored = [], []
    for arm_store in arm_stores:
        records = sorted((r for r in EpisodeStore(arm_store).records() if r["kind"] == "online" and not r.get("aborted")),
                         key=lambda r: r["created"])
        stored += records
        warmup = [int(r["success"]) for r in records if r["phase"] == "warmup"]
        online = [int(r["success"]) for r in records if r["phase"] != "warmup"]
        per_arm.append({
            "episodes": len(records), "warmup_success": warmup, "online_success": online,
            "online_blocks_of_10": [float(np.mean(online[i:i + BLOCK])) for i in range(0, len(online), BLOCK)],
        })
    stored.sort(key=lambda r: r["created"])
    # Transitions into the learner while the arms ran online (after the critic's catch-up hold): the
    # steps of every online episode after the first, over the time between the first and the last.
    online_records = [r for r in stored if r["phase"] != "warmup"]
    span_s = online_records[-1]["created"] - online_records[0]["created"] if len(online_records) > 1 else None
    updates = [int(m.group(1)) for m in UPDATES_LINE.finditer(log_path.read_text())]
    first_online_updates = next((int(m.group(1)) for m in UPDATES_LINE.finditer(log_path.read_text())
                                 if int(m.group(1)) > 0), 0)
    return {
        "arms": arms, "exit": code, "wall_s": round(wall_s, 1), "per_arm": per_arm,
        "online_span_s": round(span_s, 1) if span_s else None,
        "transitions_per_s": round(sum(r["steps"] for r in online_records[1:]) / span_s, 2) if span_s else None,
        "online_updates": updates[-1] if updates else None,
        "online_updates_per_s": round((updates[-1] - first_online_updates) / span_s, 2) if updates and span_s else None,
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
    parser.add_argument("--summarize", default="", help="run nothing: summarize the kept runs in this --keep directory")
    args = parser.parse_args()
    warmup = load_config(task=args.task, overlays=[args.overlay]).learner.schedule.warmup_episodes
    root = Path(args.summarize or args.keep) if (args.summarize or args.keep) else Path(tempfile.mkdtemp(prefix="multi_arm_"))
    runs = []
    try:
        for arms in args.arms:
            run = summarize(arms, root / f"arms{arms}") if args.summarize else \
                run_graph(arms, args.task, args.overlay, args.episodes, args.seed, root / f"arms{arms}", args.timeout_min * 60)
            runs.append(run)
            print(f"arms {arms}: exit {run['exit']}, {run['wall_s'] / 60:.1f} min, "
                  f"{run['transitions_per_s']} transitions/s, {run['online_updates_per_s']} online updates/s", flush=True)
            for index, arm in enumerate(run["per_arm"]):
                blocks = " / ".join(f"{100 * b:.0f}" for b in arm["online_blocks_of_10"])
                print(f"  arm {index}: warm-up {sum(arm['warmup_success'])}/{len(arm['warmup_success'])}, online "
                      f"{sum(arm['online_success'])}/{len(arm['online_success'])}; online per block of {BLOCK}: {blocks} %",
                      flush=True)
    finally:
        if not (args.keep or args.summarize):
            shutil.rmtree(root, ignore_errors=True)
    result = {"runs": runs, "task": args.task, "overlay": args.overlay, "episodes_per_arm": args.episodes,
              "warmup_episodes_total": warmup, "seed": args.seed, "code_version": code_version(),
              "cpus": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
