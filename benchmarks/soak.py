"""Soak: run the sim graph (real processes over Fast DDS) for many episodes and record memory and
disk growth per process, to show nothing grows beyond the replay buffer's configured bound.

    python benchmarks/soak.py [--episodes 200] [--rate 20] [--capacity 3000] [--out benchmarks/results/soak.json]

The control rate is raised (default 20 Hz, short episodes) so 200 episodes take minutes, not an
hour; everything else is the production code path: sim bridge, reward detector, learner (acting,
online updates, checkpoints, episode saving), episode manager. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from parl_robot.config import load_config  # noqa: E402
from parl_robot.data.episode_store import EpisodeStore  # noqa: E402
from parl_robot.graph import finetune_graph  # noqa: E402
from parl_robot.launcher import start_node, stop_nodes  # noqa: E402
from parl_robot.sim.record_demos import record_demos  # noqa: E402


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def disk_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--steps", type=int, default=12, help="max steps per episode")
    parser.add_argument("--capacity", type=int, default=3000, help="learner.schedule.replay_capacity (transitions)")
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="parl_soak_"))
    store_dir = work / "store"
    overrides = {
        "episodes.num_online_episodes": args.episodes, "control.rate_hz": args.rate, "control.max_episode_steps": args.steps,
        "learner.schedule.warmup_episodes": 2, "learner.schedule.replay_capacity": args.capacity,
        "learner.schedule.offline_policy_steps": 100, "learner.schedule.offline_critic_steps": 50,
        "learner.schedule.updates_per_step": 0.25, "learner.schedule.checkpoint_every_updates": 200,
    }
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(store_dir), **overrides})
    store = EpisodeStore(store_dir)
    record_demos(cfg, store, 10, log=lambda *_: None)
    specs = finetune_graph({"task": "cup_to_rack", "sim": "true", "overlay": "cpu_demo", "store_dir": str(store_dir),
                            "overrides": json.dumps(overrides)})
    env = dict(os.environ, ROS_DOMAIN_ID=str(150 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    log = io.StringIO()
    nodes = [start_node(spec, i, env, log, threading.Lock(), colour=False) for i, spec in enumerate(specs)]
    samples, started = [], time.monotonic()
    manager = next(n for n in nodes if n.spec.name == "episode_manager")
    try:
        while manager.process.poll() is None:
            if any(n.process.poll() is not None for n in nodes):
                break
            online = sum(1 for r in store.records() if r.get("kind") == "online")
            samples.append({"t_s": round(time.monotonic() - started, 1), "episodes": online,
                            "disk_mib": round(disk_mib(store_dir), 2),
                            **{f"rss_mib_{n.spec.name}": round(rss_mib(n.process.pid), 1) for n in nodes}})
            time.sleep(5.0)
    finally:
        stop_nodes(nodes)
    episodes_done = sum(1 for r in store.records() if r.get("kind") == "online")
    failed = [n.spec.name for n in nodes if n.process.returncode not in (0, -2, -15, 130)]

    def at(count: int) -> dict:
        return next((s for s in samples if s["episodes"] >= count), samples[-1])

    early, late = at(min(50, args.episodes // 4)), samples[-1]
    state_bytes = (7 * 2 + 7 + 3) * 4  # states, next states, action, reward/done/return (float32)
    summary = {
        "episodes": episodes_done, "wall_clock_s": round(time.monotonic() - started, 1),
        "replay_capacity": args.capacity, "replay_bound_mib": round(2 * args.capacity * state_bytes / 2**20, 3),
        "learner_rss_growth_mib_after_early": round(late["rss_mib_learner"] - early["rss_mib_learner"], 1),
        "sim_bridge_rss_growth_mib_after_early": round(late["rss_mib_sim_bridge"] - early["rss_mib_sim_bridge"], 1),
        "disk_mib_per_episode": round((late["disk_mib"] - early["disk_mib"]) / max(late["episodes"] - early["episodes"], 1), 4),
        "early_sample": early, "late_sample": late, "nodes_failed": failed,
    }
    print(f"{'episodes':>8} {'t (s)':>7} {'disk MiB':>9} " + " ".join(f"{n.spec.name[:14]:>14}" for n in nodes))
    for s in samples[:: max(1, len(samples) // 15)] + [samples[-1]]:
        print(f"{s['episodes']:>8} {s['t_s']:>7} {s['disk_mib']:>9} " + " ".join(f"{s['rss_mib_' + n.spec.name]:>14}" for n in nodes))
    print(json.dumps({k: v for k, v in summary.items() if not k.endswith("sample")}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "samples": samples, "overrides": overrides}, indent=1))
    if failed:
        print(log.getvalue()[-3000:])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
