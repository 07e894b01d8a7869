"""Image -> arm latency with the policy acting on the learner host vs on the robot host, over a slow link.

    sudo python benchmarks/acting_latency.py [--observation state|image] [--delays-ms 0 20 50] [--seconds 30]
        [--out benchmarks/results/acting_latency.json]

Two network namespaces play the robot PC and the GPU server: `role:=robot` (sim bridge, detectors,
and with `acting:=robot` the actor node) in one, `role:=learner` (learner, episode manager) in the
other, joined by `tests/netns_link.DelayedLink` (TUN devices and a relay that holds every packet for
the given one-way delay; the kernel here has no `tc netem`). Real time (`lockstep:=false`), the
diffusion policy with PA-RL action optimization at 5 Hz on the cpu_demo nets, state observations
(object poses detected in each camera frame; the default) or 128x128 image observations. An observer
in the robot namespace records when each action reaches the robot side and the acting node's
per-step timing (the capture stamp of the frame acted on, or that the poses came from; compute
time). Per row: image -> action at the robot side, p50 / p99 (capture stamp to the action's arrival,
which includes the frame's age when the tick fired: up to one camera period, at a phase between the
camera's and the control timer that is set at start-up, so it differs run to run); its parts: the
observation's way to the acting node (capture stamp -> arrival), the compute, the action's way to
the arm (publish -> arrival), and their sum (the pipeline, without the wait for the tick); what
crossed the link while measuring, and for the robot host the first weights' transfer.

Acting on the learner puts the link twice in every step (the frame or poses out, the action back);
acting on the robot host puts it nowhere in the loop (only weights, after each episode, and the step
records).
Needs root (network namespaces); prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("MUJOCO_GL", "egl")

RATE_HZ = 5.0


def overrides_for(observation: str) -> dict:
    return {"learner.observation": observation, "learner.policy": "diffusion", "control.rate_hz": RATE_HZ,
            "control.max_episode_steps": 30, "learner.schedule.warmup_episodes": 1000,
            "learner.schedule.offline_policy_steps": 5, "learner.schedule.offline_critic_steps": 5,
            "episodes.num_online_episodes": 1000}


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


def _first_weights_transfer(learner_log: Path, robot_log: Path) -> dict:
    """Size of the first published version and the time from its publication to the actor acting with it."""
    from netns_link import rclpy_log_times

    published = rclpy_log_times(learner_log.read_text(errors="replace"), "published policy v")[:1]
    loaded = rclpy_log_times(robot_log.read_text(errors="replace"), "acting with policy v")[:1]
    if not published or not loaded:
        return {}
    published, loaded = published[0], loaded[0]
    size = re.search(r"\(([\d.]+) MB in (\d+) chunks\)", published[1])
    return {"weights_mb": float(size.group(1)) if size else None, "weights_transfer_s": round(loaded[0] - published[0], 1)}


def pair_steps(records: list[dict]) -> list[dict]:
    """Per action that reached the robot side: the acting node's timing record of the same step that
    was ticked last before the arrival (steps restart every episode). Returns latency rows in ms."""
    timings = [r for r in records if r["topic"] == "learner/timing" and r["data"].get("observation_stamp")]
    rows = []
    for arrival in (r for r in records if r["topic"] == "robot/action"):
        step, t = arrival["data"]["step"], arrival["t"]
        candidates = [r["data"] for r in timings if r["data"]["step"] == step and 0 <= t - r["data"]["tick_time"] < 2.0]
        if candidates:
            timing = max(candidates, key=lambda d: d["tick_time"])
            observation_ms = (timing["observation_arrival"] - timing["observation_stamp"]) * 1e3 \
                if timing.get("observation_arrival") else np.nan
            action_ms = (t - timing["tick_time"]) * 1e3 - timing["compute_ms"]
            rows.append({"arrival": t, "image_to_action_ms": (t - timing["observation_stamp"]) * 1e3,
                         "compute_ms": timing["compute_ms"], "tick_to_action_ms": (t - timing["tick_time"]) * 1e3,
                         # The two legs the link can add to: the observation's way to the acting node
                         # (capture stamp -> arrival) and the action's way to the arm (publish -> arrival).
                         "observation_transport_ms": observation_ms, "action_transport_ms": action_ms,
                         # Capture -> action without the wait for the next control tick (whose phase
                         # against the camera's frames is set at start-up and differs run to run).
                         "pipeline_ms": observation_ms + timing["compute_ms"] + action_ms})
    return rows


def run(acting: str, delay_ms: float, seconds: float, work: Path, observation: str) -> dict:
    from netns_link import DelayedLink, start_in_namespace, stop_process_group
    from parl_robot.config import load_config
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.sim.record_demos import record_demos

    run_dir = work / f"{observation}_{acting}_{int(delay_ms)}ms"
    overrides = overrides_for(observation)
    run_dir.mkdir(parents=True)
    learner_store, robot_store = run_dir / "learner_store", run_dir / "robot_store"
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(learner_store), **overrides})
    record_demos(cfg, EpisodeStore(learner_store), 2, images=observation == "image", log=lambda *_: None)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "ROS_DOMAIN_ID": str(random.randint(1, 200)),
           "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}  # no shared memory
    env.pop("ROS_STATIC_PEERS", None)
    launch = ["-m", "parl_robot.cli", "launch", "finetune", "task:=cup_to_rack", "sim:=true", "overlay:=cpu_demo",
              "lockstep:=false", f"acting:={acting}", f"overrides:={json.dumps(overrides)}"]
    observed = run_dir / "observed.jsonl"
    link = DelayedLink(delay_ms / 1e3)
    processes = []
    measured_from = window = (time.time(), 0, 0, 0)  # (wall time, packets, bytes, dropped) at start / end
    try:
        processes.append(start_in_namespace(link.robot, [*launch, "role:=robot", f"store_dir:={robot_store}"], env, run_dir / "robot.log"))
        processes.append(start_in_namespace(link.learner, [*launch, "role:=learner", f"store_dir:={learner_store}"], env,
                                run_dir / "learner.log"))
        processes.append(start_in_namespace(link.robot, ["tests/netns_observer.py", str(observed)], env, run_dir / "observer.log"))
        # Start-up (pre-training) and, when the robot host acts, the first weights' transfer come first.
        deadline, measuring_until = time.monotonic() + 900 + seconds, None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if any(p.poll() is not None for p in processes[:2]):
                raise RuntimeError(f"a side exited early:\n{(run_dir / 'robot.log').read_text()[-2000:]}\n"
                                   f"{(run_dir / 'learner.log').read_text()[-2000:]}")
            if measuring_until is None and sum(r["topic"] == "robot/action" for r in _records(observed)) >= 5:
                measuring_until = time.monotonic() + seconds
                measured_from = (time.time(), link.packets, link.bytes, link.dropped)
            if measuring_until is not None and time.monotonic() > measuring_until:
                window = (time.time(), link.packets, link.bytes, link.dropped)
                break
    finally:
        for process in reversed(processes):
            stop_process_group(process, grace_s=30.0)
        link.close()
    rows = pair_steps(_records(observed))
    if not rows:
        raise RuntimeError(f"no actions measured ({acting}, {delay_ms} ms): see {run_dir}")
    rows = [r for r in rows if measured_from[0] <= r["arrival"] <= window[0]]
    elapsed = window[0] - measured_from[0]
    result = {"observation": observation, "acting": acting, "one_way_delay_ms": delay_ms, "actions": len(rows),
              # What crossed the link while measuring (both ways): images and actions when the learner
              # acts; step records, heartbeats, any weights still in flight when the robot host acts.
              "link_mbit_s": round((window[2] - measured_from[2]) * 8 / 1e6 / elapsed, 2),
              "link_packets_s": round((window[1] - measured_from[1]) / elapsed),
              "link_dropped": window[3] - measured_from[3]}
    if acting == "robot":
        result.update(_first_weights_transfer(run_dir / "learner.log", run_dir / "robot.log"))
    for key in ("image_to_action_ms", "compute_ms", "tick_to_action_ms", "observation_transport_ms",
                "action_transport_ms", "pipeline_ms"):
        values = np.array([r[key] for r in rows])
        result[f"{key}_p50"] = round(float(np.nanpercentile(values, 50)), 1)
        result[f"{key}_p99"] = round(float(np.nanpercentile(values, 99)), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delays-ms", type=float, nargs="+", default=[0.0, 20.0, 50.0])
    parser.add_argument("--acting", nargs="+", default=["learner", "robot"], choices=["learner", "robot"])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per row, after the first actions")
    parser.add_argument("--observation", default="state", choices=["state", "image"],
                        help="state: object poses detected in each camera frame (small nets, 0.4 MB of weights); "
                             "image: 128x128 frames cross the link when the learner acts (ResNet-18 encoders, 45 MB)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/acting_latency.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parl_acting_latency_"))
    results = []
    for delay_ms in args.delays_ms:
        for acting in args.acting:
            result = run(acting, delay_ms, args.seconds, work, args.observation)
            results.append(result)
            print(json.dumps(result), flush=True)
    print(f"\n{'acting on':<10} {'one-way delay':>13} {'actions':>8} {'image->action p50':>18} {'p99':>8} "
          f"{'obs. way p50':>13} {'compute p50':>12} {'action way p50':>15} {'pipeline p50':>13} {'p99':>8} "
          f"{'link Mbit/s':>12} {'weights (transfer)':>20}")
    for r in results:
        print(f"{r['acting']:<10} {r['one_way_delay_ms']:>10.0f} ms {r['actions']:>8} {r['image_to_action_ms_p50']:>15.1f} ms "
              f"{r['image_to_action_ms_p99']:>8.1f} {r['observation_transport_ms_p50']:>10.1f} ms "
              f"{r['compute_ms_p50']:>9.1f} ms {r['action_transport_ms_p50']:>12.1f} ms {r['pipeline_ms_p50']:>10.1f} ms "
              f"{r['pipeline_ms_p99']:>8.1f} {r['link_mbit_s']:>12.2f} "
              + (f"{r['weights_mb']:>8.1f} MB ({r['weights_transfer_s']:.0f} s)" if r.get("weights_mb") else f"{'-':>20}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "benchmark": "acting_latency", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rate_hz": RATE_HZ, "overrides": overrides_for(args.observation), "seconds_per_row": args.seconds, "results": results,
        "how": "two network namespaces joined by a TUN relay delaying each packet (tests/netns_link.DelayedLink)",
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
