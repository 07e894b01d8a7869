"""Latency of one PA-RL control step (sample k, keep m, T local steps), state vs image observations,
with the critic's state encoding shared across candidates and steps vs re-encoded for every Q call.

    python benchmarks/action_optimization.py [--device cuda] [--repeats 50] [--out results.json]

Prints a table and writes JSON. Goals (issue 3): shared encoder >= 5x faster than re-encoding on
images; GPU p99 < 20 ms for the image diffusion case.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from parl_robot.config import LearnerConfig
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.policies import build_policy
from parl_robot.nets.critic import TwinCritic
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, optimize_actions


class ReEncodingCritic(torch.nn.Module):
    """Baseline: a critic that encodes the observation again for every Q evaluation."""

    def __init__(self, critic: TwinCritic, obs: dict):
        super().__init__()
        self.critic, self.obs = critic, obs

    def q_values(self, features, actions):
        return self.critic.q_values(self.critic.encode(self.obs), actions)


def control_step(policy, critic, obs, cfg: ActionOptimizerConfig, num_samples: int, shared: bool):
    samples = policy.sample(obs, num_samples)
    if shared:
        with torch.no_grad():
            features = critic.encode(obs)
        return optimize_actions(critic, features, samples, cfg).actions
    return optimize_actions(ReEncodingCritic(critic, obs), _placeholder_features(obs), samples, cfg).actions


def _placeholder_features(obs):
    return torch.zeros(obs["state"].shape[0], 1, device=obs["state"].device)


def measure(device: torch.device, observation: str, shared: bool, repeats: int) -> dict:
    torch.manual_seed(0)
    image_shape = (128, 128, 3) if observation == "image" else None
    spec = ObservationSpec(7, image_shape)
    learner = LearnerConfig(observation=observation)
    policy = build_policy(learner, spec).to(device).eval()
    critic = TwinCritic(spec, 7, observation, learner.critic.hidden, learner.critic.layers).to(device).eval()
    obs = {"state": torch.randn(1, 7, device=device)}
    if image_shape:
        obs["image"] = torch.randint(0, 255, (1, *image_shape), dtype=torch.uint8, device=device)
    # step size large enough that local steps are accepted (the expensive path is exercised)
    cfg = ActionOptimizerConfig(num_kept=learner.optimizer.num_kept, local_steps=learner.optimizer.local_steps,
                                step_size=1e-2)
    times = []
    for i in range(repeats + 5):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        control_step(policy, critic, obs, cfg, learner.optimizer.num_samples, shared)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 5:
            times.append((time.perf_counter() - start) * 1000)
    return {
        "device": str(device), "observation": observation, "encoder": "shared" if shared else "re-encode",
        "p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/action_optimization.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [measure(device, obs, shared, args.repeats) for obs in ("state", "image") for shared in (True, False)]
    print(f"PA-RL control step, diffusion policy, k=32 m=10 T=10, {device} ({platform.processor() or platform.machine()})")
    print(f"{'observation':12s} {'encoder':10s} {'p50 ms':>9s} {'p99 ms':>9s}")
    for row in rows:
        print(f"{row['observation']:12s} {row['encoder']:10s} {row['p50_ms']:9.2f} {row['p99_ms']:9.2f}")
    image = {row["encoder"]: row for row in rows if row["observation"] == "image"}
    speedup = image["re-encode"]["p50_ms"] / image["shared"]["p50_ms"]
    print(f"image: shared encoder is {speedup:.1f}x faster than re-encoding (goal >= 5x)")
    import os

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump({"rows": rows, "image_speedup": speedup, "torch": torch.__version__}, handle, indent=2)


if __name__ == "__main__":
    main()
