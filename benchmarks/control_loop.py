"""Control-loop latency through the ROS graph and learner update throughput.

    python benchmarks/control_loop.py [--device cpu|cuda] [--seconds 40] [--out benchmarks/results/control_loop.json]

Part 1 (graph, real processes over Fast DDS, 128x128 image observations): the sim bridge publishes
camera frames, the learner acts on a timer at the control rate (diffusion at 5 Hz, token transformer
at 3 Hz) with PA-RL action optimization, the control node executes. An observer node records, per
action: compute time in the learner (tick -> publish), the action's arrival (tick -> received, i.e.
plus DDS transport), and image -> command latency (camera stamp of the image used -> action received;
includes the frame's age when the timer fired, which is up to one camera period).
Part 2 (in process): learner updates per second, one update = critic + distillation, batch 256,
128x128 images, ResNet-18 encoders. Prints a table and writes JSON.

Goals (issue 9): CPU control p99 < 200 ms with the sim-size nets (cpu_demo profile); GPU control
p99 < 60 ms; GPU learner >= 300 updates/s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("MUJOCO_GL", "egl")


def graph_latency(policy: str, rate_hz: float, seconds: float, device: str) -> dict:
    import rclpy
    from std_msgs.msg import Float32MultiArray, String

    from graph_harness import isolated_ros_env
    from parl_robot.config import load_config
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.graph import finetune_graph
    from parl_robot.launcher import start_node, stop_nodes
    from parl_robot.nodes import common
    from parl_robot.sim.record_demos import record_demos

    work = Path(tempfile.mkdtemp(prefix="parl_loop_"))
    overrides = {"learner.observation": "image", "learner.policy": policy, "learner.device": device,
                 "control.rate_hz": rate_hz, "control.max_episode_steps": 30, "learner.schedule.warmup_episodes": 1000,
                 "learner.schedule.offline_policy_steps": 5, "learner.schedule.offline_critic_steps": 5,
                 "episodes.num_online_episodes": 1000}
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(work), **overrides})
    record_demos(cfg, EpisodeStore(work), 2, images=True, log=lambda *_: None)
    specs = finetune_graph({"task": "cup_to_rack", "sim": "true", "overlay": "cpu_demo", "store_dir": str(work),
                            "policy": policy, "overrides": json.dumps(overrides)})
    domain_id, env = isolated_ros_env()
    context = rclpy.context.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("loop_benchmark", namespace=common.NAMESPACE, context=context)
    arrivals: list[tuple[int, float]] = []  # (step id, wall-clock arrival) of every action, in order
    timing: list[dict] = []
    node.create_subscription(Float32MultiArray, common.ROBOT_ACTION,
                             lambda m: arrivals.append((m.layout.data_offset, time.time())), common.COMMAND_QOS)
    node.create_subscription(String, common.LEARNER_TIMING, lambda m: timing.append(json.loads(m.data)), common.COMMAND_QOS)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    log = io.StringIO()
    nodes = [start_node(spec, i, env, log, threading.Lock(), colour=False) for i, spec in enumerate(specs)]
    rows = []
    try:
        deadline = time.monotonic() + 120 + seconds
        measuring_until = None
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if measuring_until is None and len(timing) > 5:
                measuring_until = time.monotonic() + seconds
            if measuring_until is not None and time.monotonic() > measuring_until:
                break
            if any(n.process.poll() is not None for n in nodes):
                raise RuntimeError(f"a node died:\n{log.getvalue()[-3000:]}")
    finally:
        stop_nodes(nodes)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    # Both topics are published in the same order by the learner: pair them in order, checking step ids.
    for record, (step, arrival) in zip(timing, arrivals):
        if record["step"] != step:
            raise RuntimeError(f"action/timing streams out of step: {record['step']} vs {step}")
        rows.append({"compute_ms": record["compute_ms"], "tick_to_received_ms": (arrival - record["tick_time"]) * 1e3,
                     "image_to_command_ms": (arrival - record["image_stamp"]) * 1e3 if record["image_stamp"] else np.nan})
    if not rows:
        raise RuntimeError(f"no actions measured:\n{log.getvalue()[-3000:]}")
    table = {key: np.array([r[key] for r in rows]) for key in rows[0]}
    result = {"policy": policy, "rate_hz": rate_hz, "actions": len(rows)}
    for key, values in table.items():
        result[f"{key}_p50"] = float(np.nanpercentile(values, 50))
        result[f"{key}_p99"] = float(np.nanpercentile(values, 99))
    return result


def learner_throughput(device: str, updates: int) -> dict:
    import torch

    from parl_robot.config import load_config
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.observation import STATE_DIM
    from parl_robot.rl.agent import PARLAgent
    from parl_robot.rl.losses import achievable_returns

    cfg = load_config(task="cup_to_rack", overrides={"learner.observation": "image", "learner.device": device})
    spec = ObservationSpec(STATE_DIM, (128, 128, 3))
    value_range = achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, cfg.learner.critic.discount)
    agent = PARLAgent(cfg.learner, spec, value_range=value_range)
    rng = np.random.default_rng(0)
    batch_size = cfg.learner.schedule.batch_size
    batch = {
        "state": rng.normal(size=(batch_size, STATE_DIM)).astype(np.float32),
        "next_state": rng.normal(size=(batch_size, STATE_DIM)).astype(np.float32),
        "image": rng.integers(0, 255, (batch_size, 128, 128, 3), dtype=np.uint8),
        "next_image": rng.integers(0, 255, (batch_size, 128, 128, 3), dtype=np.uint8),
        "action": rng.uniform(-1, 1, (batch_size, 7)).astype(np.float32),
        "reward": -np.ones(batch_size, np.float32), "done": np.zeros(batch_size, np.float32),
        "mc_return": -np.ones(batch_size, np.float32) * 10,
    }
    agent.update_critic(batch)
    agent.update_policy(batch)  # warm-up (allocations, cuDNN autotune)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(updates):
        agent.update_critic(batch)
        agent.update_policy(batch)
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {"device": device, "batch_size": batch_size, "updates": updates, "updates_per_s": updates / elapsed,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/control_loop.json")
    args = parser.parse_args()
    loops = [graph_latency("diffusion", 5.0, args.seconds, args.device), graph_latency("transformer", 3.0, args.seconds, args.device)]
    throughput = learner_throughput(args.device, args.updates)
    print(f"{'policy':<12} {'Hz':>4} {'n':>4} {'compute p50/p99 ms':>20} {'tick->arm p50/p99 ms':>22} {'image->arm p50/p99 ms':>23}")
    for r in loops:
        print(f"{r['policy']:<12} {r['rate_hz']:>4.0f} {r['actions']:>4} {r['compute_ms_p50']:>9.1f} /{r['compute_ms_p99']:>7.1f}"
              f" {r['tick_to_received_ms_p50']:>11.1f} /{r['tick_to_received_ms_p99']:>7.1f}"
              f" {r['image_to_command_ms_p50']:>12.1f} /{r['image_to_command_ms_p99']:>7.1f}")
    print(f"learner ({throughput['device']}, batch {throughput['batch_size']}, 128x128 images): "
          f"{throughput['updates_per_s']:.2f} updates/s (critic + distillation)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"control_loop": loops, "learner": throughput, "cpus": os.cpu_count(),
                                          "machine": platform.machine()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
