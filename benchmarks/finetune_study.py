"""Sim fine-tuning study: PA-RL against baselines and ablations on the MuJoCo tasks.

    python benchmarks/finetune_study.py [--task cup_to_rack] [--methods all] [--seeds 0 1 2]
        [--demos 10] [--warmup 20] [--online 100] [--workers 2] [--out benchmarks/results/finetune_study]
    python benchmarks/finetune_study.py --smoke      # seconds: the CI-sized version

Each run (method x seed) uses the learning core directly on `WidowXSimEnv` — the algorithm, not
the ROS plumbing (tests/test_integration_graph.py covers the graph):
  1. record `--demos` scripted noisy demonstrations (the offline data; same seed -> same demos);
  2. offline: fit state statistics, behaviour-clone the policy, pre-train the critic;
  3. `--warmup` episodes with the pre-trained agent, no updates (their success = the offline start);
     then `learner.warmup_critic_steps` critic updates on demos + warm-up episodes (the learner node
     does the same when its warm-up ends);
  4. `--online` episodes: every executed step adds `updates_per_step` critic + policy updates
     (50/50 offline/online batches), acting with the method's rule.
Success of every episode is recorded with wall-clock. Writes <out>.json (curves per method and
seed; success per block of 20 online episodes; per block, each PA-RL method's seed-paired difference
to each baseline and each ablation's to parl_diffusion, with a 95 % bootstrap interval) and <out>.png
(success vs episodes, moving average over 10), and prints a table.

Methods: parl_diffusion (PA-RL + Cal-QL, diffusion), parl_transformer (PA-RL, token transformer),
calql_gaussian (Cal-QL with a reparameterized tanh-Gaussian actor, the standard baseline),
rerank_only (IDQL-style: critic re-ranks policy samples, the policy is never updated online),
filtered_bc (behaviour cloning on demos + successful online episodes, no critic at act time).
Ablations (PA-RL diffusion): no_local (T = 0), no_global (k = 1), cem_random (CEM over random
actions under the same critic instead of policy samples), distill_all_states (distillation on every
replay state, failed online episodes included, instead of `learner.distill_states: successful`),
rank_by_mean_q (candidates ranked and optimized by the twin heads' mean Q instead of their min),
no_critic_catchup (no critic updates between warm-up and the first online episode).
Variants: parl_policy_gripper (PA-RL diffusion with `learner.gripper_from: policy`: the critic's pick
moves the arm, the executed gripper value comes from a policy sample; acting only);
parl_policy_gripper_plus_bc (parl_policy_gripper with `learner.filtered_bc_steps: 1`: a filtered BC
step after each distillation step; the study's best setting, docs/finetune_study.md).
Diagnostics: parl_offline_distill (online critic updates as usual, distillation batches from the demo
states only); parl_policy_gripper_no_distill (parl_policy_gripper without online policy updates: the
BC policy's samples, re-ranked and locally optimized by the online critic).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MUJOCO_GL", "egl")

METHODS: dict[str, dict] = {
    "parl_diffusion": {"policy": "diffusion"},
    "parl_transformer": {"policy": "transformer"},
    "calql_gaussian": {"policy": "gaussian", "policy_update": "reparameterized", "policy_ema_rate": 0.0,
                       "num_samples": 1, "num_kept": 1, "local_steps": 0, "include_dataset_action": False},
    "rerank_only": {"policy": "diffusion", "local_steps": 0, "_no_policy_updates": True},
    "filtered_bc": {"policy": "diffusion", "num_samples": 1, "num_kept": 1, "local_steps": 0, "_filtered_bc": True},
    "no_local": {"policy": "diffusion", "local_steps": 0},
    "no_global": {"policy": "diffusion", "num_samples": 1, "num_kept": 1},
    "cem_random": {"policy": "diffusion", "_cem": True},
    "parl_offline_distill": {"policy": "diffusion", "_distill_offline_only": True},
    "distill_all_states": {"policy": "diffusion", "distill_states": "all"},
    "rank_by_mean_q": {"policy": "diffusion", "q_ensemble": "mean"},
    "no_critic_catchup": {"policy": "diffusion", "warmup_critic_steps": 0},
    "parl_policy_gripper": {"policy": "diffusion", "gripper_from": "policy"},
    "parl_policy_gripper_no_distill": {"policy": "diffusion", "gripper_from": "policy", "_no_policy_updates": True},
    "parl_policy_gripper_plus_bc": {"policy": "diffusion", "gripper_from": "policy", "filtered_bc_steps": 1},
}
# Learner settings of the study on top of the cpu_demo profile (sessions 3-4, docs/finetune_study.md):
# with 10 demos the task file's CQL alpha of 5 over-regularizes, 150 critic pre-training steps leave
# the critic untrained, and the reference's local steps (T = 10, 3e-4) replace the demo's coarse ones;
# the critic catch-up after warm-up is the learner's default (session 6).
# `--set` overrides them; each method's own settings override both.
STUDY_SETTINGS: dict = {"cql_alpha": 0.1, "offline_critic_steps": 1000, "cql_num_actions": 4,
                        "local_steps": 10, "local_step_size": 3e-4, "warmup_critic_steps": 1000}
BASELINES = ("parl_diffusion", "parl_transformer", "calql_gaussian", "rerank_only", "filtered_bc")
ABLATIONS = ("no_local", "no_global", "cem_random", "no_critic_catchup", "distill_all_states")


def cem_action(agent, obs, iterations: int = 3, population: int = 32, elites: int = 6) -> np.ndarray:
    """Cross-entropy method from uniform random actions under the agent's critic (ablation)."""
    import torch

    with torch.no_grad():
        tensors = {"state": torch.as_tensor(obs["state"], dtype=torch.float32)[None]}
        features = agent.critic.encode(tensors)
        mean, std = torch.zeros(7), torch.ones(7)
        candidates = torch.rand(population, 7) * 2 - 1
        for _ in range(iterations):
            q = agent.critic.q_values(features, candidates[None]).min(dim=0).values[0]
            top = candidates[q.topk(elites).indices]
            mean, std = top.mean(0), top.std(0).clamp_min(0.05)
            candidates = (mean + std * torch.randn(population, 7)).clamp(-1, 1)
        return mean.clamp(-1, 1).numpy().astype(np.float32)


def run(task: str, method: str, seed: int, demos: int, warmup: int, online: int, profile: str,
        learner_overrides: dict | None = None) -> dict:
    import torch

    from parl_robot.config import load_config
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.observation import STATE_DIM
    from parl_robot.rl.agent import PARLAgent
    from parl_robot.rl.losses import achievable_returns
    from parl_robot.rl.replay_buffer import EpisodeData, ReplayBuffer, sample_mixed, sample_successful
    from parl_robot.sim.demonstrator import ScriptedDemonstrator
    from parl_robot.sim.env import WidowXSimEnv

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    options = METHODS[method]
    cfg = load_config(task=task, overlays=[profile] if profile else [])
    method_settings = {k: v for k, v in options.items() if not k.startswith("_")}
    learner = replace(cfg.learner, seed=seed, **{**(learner_overrides or {}), **method_settings})  # the method wins
    env = WidowXSimEnv(cfg)
    spec = ObservationSpec(STATE_DIM)
    offline = ReplayBuffer(spec, 7, learner.replay_capacity, learner.discount)
    online_buffer = ReplayBuffer(spec, 7, learner.replay_capacity, learner.discount)
    demonstrator = ScriptedDemonstrator(cfg, seed=seed)
    demo_successes = 0
    for index in range(demos):
        obs, _ = env.reset(seed=seed * 100_003 + index, options={"phase": "demo"})
        demonstrator.reset()
        states, actions, rewards, terminal = [obs["state"]], [], [], False
        for _ in range(cfg.control.max_episode_steps):
            action = demonstrator.act(obs["state"])
            obs, reward, terminal, truncated, _ = env.step(action)
            states.append(obs["state"]), actions.append(action), rewards.append(reward)
            if terminal or truncated:
                break
        demo_successes += int(terminal)
        offline.add_episode(EpisodeData(np.array(states, np.float32), np.array(actions, np.float32), np.array(rewards, np.float32), terminal))
    agent = PARLAgent(learner, spec, value_range=achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, learner.discount))
    agent.fit_state_normalization(offline.states[: len(offline)])
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    for _ in range(learner.offline_policy_steps):
        agent.behaviour_clone(offline.gather(offline.sample_indices(learner.batch_size, rng)))
    for _ in range(learner.offline_critic_steps):
        agent.update_critic(offline.gather(offline.sample_indices(learner.batch_size, rng)))
    offline_seconds = time.perf_counter() - started

    def act(obs) -> np.ndarray:
        if options.get("_cem"):
            return cem_action(agent, obs)
        return agent.act(obs)[0]

    curve, updates = [], 0
    for episode in range(warmup + online):
        phase = "warmup" if episode < warmup else "online"
        if episode == warmup:  # warm-up done: the critic catches up on demos + warm-up episodes
            for _ in range(learner.warmup_critic_steps):
                agent.update_critic(sample_mixed(offline, online_buffer, learner.batch_size, learner.online_fraction, rng))
        obs, _ = env.reset(seed=10_000_000 + seed * 10_007 + episode, options={"phase": phase})
        states, actions, rewards, terminal = [obs["state"]], [], [], False
        for _ in range(cfg.control.max_episode_steps):
            action = act(obs)
            obs, reward, terminal, truncated, _ = env.step(action)
            states.append(obs["state"]), actions.append(action), rewards.append(reward)
            if phase == "online" and len(online_buffer) > 0:
                for _ in range(max(1, round(learner.updates_per_step))):
                    batch = sample_mixed(offline, online_buffer, learner.batch_size, learner.online_fraction, rng)
                    agent.update_critic(batch)
                    if not options.get("_no_policy_updates"):
                        if options.get("_filtered_bc"):
                            successful = sample_successful(offline, online_buffer, learner.batch_size, rng)
                            if successful is not None:
                                agent.behaviour_clone(successful)
                        elif options.get("_distill_offline_only"):  # diagnostic: distil on demo states only
                            agent.update_policy(offline.gather(offline.sample_indices(learner.batch_size, rng)))
                        else:
                            agent.update_policy(batch)
                            agent.filtered_behaviour_clone(offline, online_buffer, rng)  # learner.filtered_bc_steps
                    updates += 1
            if terminal or truncated:
                break
        episode_data = EpisodeData(np.array(states, np.float32), np.array(actions, np.float32), np.array(rewards, np.float32), terminal)
        online_buffer.add_episode(episode_data)
        curve.append({"episode": episode, "phase": phase, "success": bool(terminal), "steps": len(actions),
                      "wall_clock_s": round(time.perf_counter() - started, 2), "updates": updates})
    env.close()
    warm = [c["success"] for c in curve if c["phase"] == "warmup"]
    last = [c["success"] for c in curve if c["phase"] == "online"][-20:]
    return {"method": method, "seed": seed, "task": task, "demo_success_rate": demo_successes / max(demos, 1),
            "setup": {"demos": demos, "warmup": warmup, "online": online, "profile": profile,
                      "learner_overrides": learner_overrides or {}},
            "offline_seconds": round(offline_seconds, 1), "offline_start": float(np.mean(warm)) if warm else None,
            "final_20": float(np.mean(last)) if last else None, "curve": curve}


def _report_progress(result: dict, started: float, runs_dir: Path) -> dict:
    """One line per finished run, and the run saved to <out>.runs/ at once: a full study takes hours
    on a CPU, and an interrupted one keeps every run it finished."""
    (runs_dir / f"{result['method']}_seed{result['seed']}.json").write_text(json.dumps(result))
    print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {result['method']} seed {result['seed']}: "
          f"offline start {result['offline_start']}, last 20 online {result['final_20']}", file=sys.stderr, flush=True)
    return result


def _parse_overrides(items: list[str]) -> dict:
    """KEY=VALUE strings -> typed LearnerConfig overrides (type taken from the field's default)."""
    from dataclasses import fields

    from parl_robot.config import LearnerConfig

    types = {f.name: type(f.default) for f in fields(LearnerConfig)}
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in types:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a learner field ({', '.join(sorted(types))})")
        kind = types[key]
        try:
            overrides[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
        except ValueError:
            raise SystemExit(f"--set {item!r}: {value!r} is not a valid {kind.__name__}") from None
    return overrides


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method in dict.fromkeys(r["method"] for r in results):
        runs = [np.array([c["success"] for c in r["curve"]], float) for r in results if r["method"] == method]
        length = min(len(x) for x in runs)
        mean = np.mean([x[:length] for x in runs], axis=0)
        smooth = np.convolve(mean, np.ones(10) / 10, mode="valid") if length >= 10 else mean
        ax.plot(np.arange(len(smooth)) + (length - len(smooth)), smooth, label=f"{method} ({len(runs)} seeds)")
    warmup = sum(1 for c in results[0]["curve"] if c["phase"] == "warmup")
    ax.axvline(warmup - 0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("episode (warm-up | online)")
    ax.set_ylabel("success (moving average over 10)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"{results[0]['task']}: sim fine-tuning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cup_to_rack")
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--online", type=int, default=100)
    parser.add_argument("--profile", default="cpu_demo", help="config overlay ('' = the task file's paper sizes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny CI version: 2 methods, 1 seed, a few episodes")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="learner config overrides for every method, e.g. cql_alpha=1.0 offline_critic_steps=1000")
    parser.add_argument("--out", default="benchmarks/results/finetune_study")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: rebuild <out>.json/.png from every run saved in <out>.runs/ "
                             "(an interrupted study, or seeds and methods added by later invocations)")
    args = parser.parse_args()
    overrides = {**STUDY_SETTINGS, **_parse_overrides(args.set)}
    if args.smoke:
        args.methods, args.seeds, args.demos, args.warmup, args.online = ["parl_diffusion", "calql_gaussian"], [0], 2, 1, 2
        if args.out == parser.get_default("out"):  # keep the committed study and its saved runs intact
            args.out = str(Path(tempfile.gettempdir()) / "finetune_study_smoke")
        overrides = {**overrides, "offline_policy_steps": 20, "offline_critic_steps": 10, "warmup_critic_steps": 10}
    if args.collect:
        results = collect_runs(Path(args.out).with_suffix(".runs"))
        write_report(results, list(dict.fromkeys(r["method"] for r in results)), Path(args.out),
                     {"collected": True, **results[0]["setup"]}, wall_clock_s=None)
        return
    methods = list(BASELINES + ABLATIONS) if args.methods == ["all"] else args.methods
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; known: {sorted(METHODS)}")
    jobs = [(args.task, m, s, args.demos, args.warmup, args.online, args.profile, overrides) for m in methods for s in args.seeds]
    out = Path(args.out)
    runs_dir = out.with_suffix(".runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(run, *job) for job in jobs]
            for future in as_completed(futures):
                _report_progress(future.result(), started, runs_dir)
            results = [future.result() for future in futures]  # job order, whatever finished first
    else:
        results = [_report_progress(run(*job), started, runs_dir) for job in jobs]
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    write_report(results, methods, out, settings, wall_clock_s=round(time.perf_counter() - started, 1))


def collect_runs(runs_dir: Path) -> list[dict]:
    """Every run saved in `runs_dir`; refuses a mix of set-ups (demos, episodes, profile, overrides)."""
    results = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*.json"))]
    if not results:
        raise SystemExit(f"--collect: no saved runs in {runs_dir}")
    setups = {json.dumps(r.get("setup"), sort_keys=True) for r in results}
    if len(setups) > 1:
        raise SystemExit(f"--collect: the runs in {runs_dir} come from different set-ups, not comparable: {sorted(setups)}")
    order = {method: index for index, method in enumerate(METHODS)}
    return sorted(results, key=lambda r: (order.get(r["method"], len(order)), r["seed"]))


BLOCK_EPISODES = 20


def online_successes(run: dict) -> list[bool]:
    """Success of each online episode of one run, in order (warm-up episodes left out)."""
    return [c["success"] for c in run["curve"] if c["phase"] == "online"]


def online_blocks(runs: list[dict], block: int = BLOCK_EPISODES) -> list[float]:
    """Success rate per block of `block` online episodes (1-20, 21-40, ...), pooled over the runs:
    methods compared at equal episodes, not only at the end. A last partial block is left out."""
    online = [online_successes(r) for r in runs]
    shortest = min((len(o) for o in online), default=0)
    return [float(np.mean([o[i:i + block] for o in online])) for i in range(0, shortest - block + 1, block)]


def paired_blocks(runs: list[dict], baseline_runs: list[dict], block: int = BLOCK_EPISODES,
                  resamples: int = 10_000) -> dict | None:
    """Seed-paired comparison at equal episodes: per block of `block` online episodes, the mean over
    the seeds both methods ran of (method's success - baseline's success) in points, a 95 % percentile
    bootstrap interval over those seeds, and how many seeds are ahead / equal / behind. Seed s sets
    the same demos, resets and initialization for every method, so pairing by seed removes the
    seed-to-seed spread (offline starts range 0-100 % across seeds). None when no seed is shared."""
    mine = {r["seed"]: online_successes(r) for r in runs}
    theirs = {r["seed"]: online_successes(r) for r in baseline_runs}
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    shortest = min(len(x) for x in [*(mine[s] for s in seeds), *(theirs[s] for s in seeds)])
    draws = np.random.default_rng(0).integers(0, len(seeds), size=(resamples, len(seeds)))
    blocks = []
    for start in range(0, shortest - block + 1, block):
        diff = np.array([np.mean(mine[s][start:start + block]) - np.mean(theirs[s][start:start + block]) for s in seeds])
        low, high = np.percentile(diff[draws].mean(axis=1), [2.5, 97.5])
        blocks.append({"online_episodes": f"{start + 1}-{start + block}", "difference_points": round(100 * float(diff.mean()), 1),
                       "ci95_points": [round(100 * float(low), 1), round(100 * float(high), 1)],
                       "seeds_ahead": int((diff > 0).sum()), "seeds_equal": int((diff == 0).sum()),
                       "seeds_behind": int((diff < 0).sum())})
    return {"seeds": seeds, "blocks": blocks}


def paired_against_baselines(results: list[dict], methods: list[str]) -> dict:
    """paired_blocks for every PA-RL method (parl_*) against every non-PA-RL baseline in `methods`."""
    runs = {m: [r for r in results if r["method"] == m] for m in methods}
    baselines = [m for m in methods if m in BASELINES and not m.startswith("parl_")]
    paired = {}
    for method in (m for m in methods if m.startswith("parl_")):
        for baseline in baselines:
            comparison = paired_blocks(runs[method], runs[baseline])
            if comparison is not None:
                paired.setdefault(method, {})[baseline] = comparison
    return paired


def paired_ablations(results: list[dict], methods: list[str]) -> dict:
    """paired_blocks for every ablation in `methods` against the full method, parl_diffusion."""
    full = [r for r in results if r["method"] == "parl_diffusion"]
    paired = {}
    for ablation in (m for m in methods if m in ABLATIONS):
        comparison = paired_blocks([r for r in results if r["method"] == ablation], full)
        if comparison is not None:
            paired[ablation] = comparison
    return paired


def _print_paired(method: str, other: str, comparison: dict) -> None:
    cells = " ".join(f"{b['difference_points']:+.1f} [{b['ci95_points'][0]:+.1f},{b['ci95_points'][1]:+.1f}]"
                     for b in comparison["blocks"])
    print(f"  {method} - {other} ({len(comparison['seeds'])} paired seeds), points per {BLOCK_EPISODES} "
          f"online [95% CI]: {cells}")


def write_report(results: list[dict], methods: list[str], out: Path, settings: dict, wall_clock_s: float | None) -> None:
    """Table on stdout, <out>.json (summary + every run) and <out>.png."""
    print(f"{'method':<18} {'seeds':>5} {'offline start':>13} {'last 20 online':>14} {'gain':>6} {'min/run':>8}")
    summary = {}
    for method in methods:
        runs = [r for r in results if r["method"] == method]
        start = float(np.mean([r["offline_start"] for r in runs if r["offline_start"] is not None] or [np.nan]))
        final = float(np.mean([r["final_20"] for r in runs if r["final_20"] is not None] or [np.nan]))
        minutes = np.mean([r["curve"][-1]["wall_clock_s"] for r in runs]) / 60
        blocks = online_blocks(runs)
        successes_per_seed = float(np.mean([sum(online_successes(r)) for r in runs]))
        summary[method] = {"offline_start": start, "final_20": final, "gain_points": 100 * (final - start),
                           "seeds": sorted(r["seed"] for r in runs), "online_blocks_20": blocks,
                           "online_successes_per_seed": successes_per_seed}
        print(f"{method:<18} {len(runs):>5} {100 * start:>12.0f}% {100 * final:>13.0f}% {100 * (final - start):>+5.0f} {minutes:>8.1f}"
              f"   per {BLOCK_EPISODES} online: {' '.join(f'{100 * b:.0f}%' for b in blocks)}")
    paired = paired_against_baselines(results, methods)
    for method, against in paired.items():
        for baseline, comparison in against.items():
            _print_paired(method, baseline, comparison)
    ablations = paired_ablations(results, methods)
    for ablation, comparison in ablations.items():
        _print_paired(ablation, "parl_diffusion", comparison)
    out.with_suffix(".json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "paired_vs_baselines": paired,
         "paired_ablations_vs_parl_diffusion": ablations, "runs": results, "wall_clock_s": wall_clock_s}, indent=1))
    try:
        plot(results, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
