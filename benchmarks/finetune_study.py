"""Sim fine-tuning study: PA-RL against baselines and ablations on the MuJoCo tasks.

    python benchmarks/finetune_study.py [--task cup_to_rack] [--methods all] [--seeds 0 1 2]
        [--demos 10] [--warmup 20] [--online 100] [--profile study] [--set KEY=VALUE ...]
        [--workers 2] [--out benchmarks/results/finetune_study]
    python benchmarks/finetune_study.py --smoke      # seconds: the CI-sized version

Each run (method x seed) drives the product's learning schedule, `parl_robot.rl.trainer.Trainer`
(the learner node's, without ROS: tests/test_integration_graph.py covers the graph), on
`WidowXSimEnv`:
  1. record `--demos` scripted noisy demonstrations (the offline data; same seed -> same demos);
  2. `Trainer.pretrain`: fit state statistics, behaviour-clone the policy, pre-train the critic;
  3. `--warmup` episodes with the pre-trained agent, no updates (their success = the offline start);
     then the trainer's critic catch-up on demos + warm-up episodes;
  4. `--online` episodes: after each action the trainer runs the updates its budget allows
     (`learner.schedule.updates_per_step` per executed step; each a critic and a policy step on two
     mixed batches), acting with the method's rule.
Configuration: the task file, the `--profile` overlay (config/profiles/study.yaml: the study's
shared set-up), `--set` dotted overrides (`learner.critic.cql_alpha=1.0`), then the method's own settings.
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
replay state, failed online episodes included, instead of `policy_update.distill_states: successful`),
rank_by_mean_q (candidates ranked and optimized by the twin heads' mean Q instead of their min),
no_critic_catchup (no critic updates between warm-up and the first online episode).
Variants: parl_policy_gripper (PA-RL diffusion with `optimizer.gripper_from: policy`: the critic's pick
moves the arm, the executed gripper value comes from a policy sample; acting only);
parl_policy_gripper_plus_bc (parl_policy_gripper with `policy_update.filtered_bc_steps: 1`: a filtered BC
step after each distillation step; the study's best setting, config/profiles/recommended.yaml).
With interventions: parl_interventions (PA-RL diffusion; the scripted sim operator takes over online
episodes where the policy makes no progress, parl_robot/sim/scripted_operator.py; its steps are
distilled as targets; each curve entry counts `intervention_steps`).
Reference algorithms (issue 31), at the study's sizes: parl_paper (PA-RL as the reference code runs it:
config/profiles/paper.yaml's algorithmic choices, PAPER_ALGORITHM below) and calql_gaussian_reference
(the Cal-QL reference: actor trained offline with the critic, tuned entropy weight, importance-sampled
conservative term over actions at s and s', summed twin MSE). Rows are labelled by what they run
(METHOD_LABELS): parl_diffusion distils on successful episodes' states only, not the paper's every state.
Diagnostic: parl_policy_gripper_no_distill (parl_policy_gripper without online policy updates: the
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MUJOCO_GL", "egl")

# The PA-RL reference's algorithmic choices (config/profiles/paper.yaml without its network and batch
# sizes): what `parl_paper` adds to the study's set-up.
PAPER_ALGORITHM: dict[str, object] = {
    "critic.members": 10, "critic.sampled_members": 2, "critic.td_loss": "mse", "critic.cql_term": "optimized_actions",
    "critic.cql_alpha": 0.01, "critic.cql_num_actions": 4, "critic.discount": 0.99, "critic.reset_optimizer_online": True,
    "optimizer.local_search": "best_iterate", "optimizer.dataset_action_slot": "replace_worst",
    "optimizer.q_ensemble": "mean", "policy_update.distill_states": "all", "policy_update.distill_optimizer": "fresh",
    "policy_update.distill_warmup_steps": 2000, "policy_dropout": 0.1, "policy_ema_rate": 0.002,
    "schedule.updates_per_step": 1.0, "schedule.warmup_critic_steps": 0,
}

# Each method's learner settings (dotted keys under `learner`) over the profile and --set
# ("_cem": the study's own acting rule).
METHODS: dict[str, dict] = {
    "parl_diffusion": {"policy": "diffusion"},
    "parl_transformer": {"policy": "transformer"},
    "calql_gaussian": {"policy": "gaussian", "policy_update.rule": "reparameterized", "policy_ema_rate": 0.0,
                       "optimizer.num_samples": 1, "optimizer.num_kept": 1, "optimizer.local_steps": 0,
                       "optimizer.include_dataset_action": False},
    "rerank_only": {"policy": "diffusion", "optimizer.local_steps": 0, "policy_update.rule": "none"},
    "filtered_bc": {"policy": "diffusion", "optimizer.num_samples": 1, "optimizer.num_kept": 1, "optimizer.local_steps": 0,
                    "policy_update.rule": "filtered_bc"},
    "no_local": {"policy": "diffusion", "optimizer.local_steps": 0},
    "no_global": {"policy": "diffusion", "optimizer.num_samples": 1, "optimizer.num_kept": 1},
    "cem_random": {"policy": "diffusion", "_cem": True},
    "distill_all_states": {"policy": "diffusion", "policy_update.distill_states": "all"},
    "rank_by_mean_q": {"policy": "diffusion", "optimizer.q_ensemble": "mean"},
    "no_critic_catchup": {"policy": "diffusion", "schedule.warmup_critic_steps": 0},
    "parl_policy_gripper": {"policy": "diffusion", "optimizer.gripper_from": "policy"},
    "parl_policy_gripper_no_distill": {"policy": "diffusion", "optimizer.gripper_from": "policy", "policy_update.rule": "none"},
    "parl_policy_gripper_plus_bc": {"policy": "diffusion", "optimizer.gripper_from": "policy",
                                    "policy_update.filtered_bc_steps": 1},
    # PA-RL diffusion with the scripted sim operator taking over stalled online episodes (issue 24):
    # its steps are executed, flagged, and distilled (policy_update.intervention_weight).
    "parl_interventions": {"policy": "diffusion", "_operator": True},
    # The reference implementations' algorithms at the study's sizes (issue 31; config/profiles/paper.yaml
    # holds the full-size robot configuration, a GPU's worth: ~90 s per update on one CPU core).
    "parl_paper": {"policy": "diffusion", **PAPER_ALGORITHM},
    "calql_gaussian_reference": {"policy": "gaussian", "policy_update.rule": "reparameterized", "policy_ema_rate": 0.0,
                                 "optimizer.num_samples": 1, "optimizer.num_kept": 1, "optimizer.local_steps": 0,
                                 "optimizer.include_dataset_action": False, "critic.cql_term": "importance_sampled",
                                 "critic.cql_num_actions": 10, "critic.td_loss": "sum_mse",
                                 "policy_update.entropy_autotune": True, "policy_update.pretrain_actor": True,
                                 "policy_lr": 1e-4},
}
# What each method runs, for tables and plots: the keys stay as the saved runs name them.
METHOD_LABELS: dict[str, str] = {
    "parl_diffusion": "PA-RL + success-filtered distillation",
    "parl_policy_gripper_plus_bc": "PA-RL + success-filtered distillation + policy gripper + filtered BC steps",
    "parl_policy_gripper": "PA-RL + success-filtered distillation + policy gripper",
    "parl_paper": "PA-RL (paper algorithm, study sizes)",
    "parl_transformer": "PA-RL + success-filtered distillation (token transformer)",
    "calql_gaussian": "Cal-QL tanh-Gaussian (simplified: BC offline, fixed entropy, no importance sampling)",
    "calql_gaussian_reference": "Cal-QL tanh-Gaussian (reference)",
    "rerank_only": "re-ranking only (IDQL-style)",
    "filtered_bc": "filtered BC",
}
BASELINES = ("parl_diffusion", "parl_transformer", "calql_gaussian", "rerank_only", "filtered_bc")
ABLATIONS = ("no_local", "no_global", "cem_random", "no_critic_catchup", "distill_all_states")
SMOKE_OVERRIDES = {"learner.schedule.offline_policy_steps": 20, "learner.schedule.offline_critic_steps": 10,
                   "learner.schedule.warmup_critic_steps": 10}


def online_reset_seed(seed: int, episode: int) -> int:
    return 10_000_000 + seed * 10_007 + episode


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


def study_config(task: str, method: str, seed: int, warmup: int, profile: str, overrides: dict | None = None):
    """The run's validated TaskConfig: task file, profile, `overrides` (dotted keys), then the method."""
    from parl_robot.config import load_config

    method_settings = {f"learner.{key}": value for key, value in METHODS[method].items() if not key.startswith("_")}
    return load_config(task=task, overlays=[profile] if profile else [], overrides={
        **(overrides or {}), **method_settings, "learner.seed": seed, "learner.schedule.warmup_episodes": warmup})


def run(task: str, method: str, seed: int, demos: int, warmup: int, online: int, profile: str,
        overrides: dict | None = None, success_model: str | None = None) -> dict:
    """One method x seed. With `success_model` (a saved success classifier) the warm-up and online
    episodes are rewarded and ended by the classifier on rendered frames, as the reward node does
    with `reward.detector: classifier` (parl_robot/sim/classifier_reward.py); each curve entry then
    also says whether the simulator saw a true success (`true_success`) and the classifier's highest
    score. Demonstrations keep the simulator's truth (the demonstrator's own label)."""
    import torch

    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.observation import STATE_DIM
    from parl_robot.rl.agent import PARLAgent
    from parl_robot.rl.losses import achievable_returns
    from parl_robot.rl.replay_buffer import ReplayBuffer
    from parl_robot.rl.trainer import Trainer
    from parl_robot.sim.demonstrator import ScriptedDemonstrator
    from parl_robot.sim.env import WidowXSimEnv
    from parl_robot.sim.record_demos import demo_seed
    from parl_robot.sim.rollout import rollout
    from parl_robot.sim.scripted_operator import ScriptedOperator
    from parl_robot.version import code_version

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    cfg = study_config(task, method, seed, warmup, profile, overrides)
    learner, max_steps = cfg.learner, cfg.control.max_episode_steps
    env = demo_env = WidowXSimEnv(cfg, render_images=success_model is not None)
    if success_model is not None:
        from parl_robot.perception.success_classifier import load_classifier
        from parl_robot.sim.classifier_reward import ClassifierRewardEnv

        env = ClassifierRewardEnv(demo_env, load_classifier(success_model))
    spec = ObservationSpec(STATE_DIM)
    value_range = achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, learner.critic.discount)
    agent = PARLAgent(learner, spec, value_range=value_range)
    trainer = Trainer(agent, ReplayBuffer(spec, 7, learner.schedule.replay_capacity, learner.critic.discount),
                      ReplayBuffer(spec, 7, learner.schedule.replay_capacity, learner.critic.discount), learner)
    demonstrator = ScriptedDemonstrator(cfg, seed=seed)
    demo_successes = 0
    for index in range(demos):
        demonstrator.reset()
        episode = rollout(demo_env, lambda obs: demonstrator.act(obs["state"]), max_steps, seed=demo_seed(seed, index),
                          phase="demo")
        episode.images = None  # rendered only for the classifier; the state policy stores none
        demo_successes += int(episode.terminal)
        trainer.add_demo(episode)
    started = time.perf_counter()
    trainer.pretrain()
    offline_seconds = time.perf_counter() - started
    choose = (lambda obs: cem_action(agent, obs)) if METHODS[method].get("_cem") else (lambda obs: agent.act(obs)[0])

    def act(obs) -> np.ndarray:
        action = choose(obs)
        trainer.online_updates(new_transitions=1)  # as in the learner node: the budget grows with each action
        return action

    operator = ScriptedOperator(cfg, seed=seed) if METHODS[method].get("_operator") else None
    curve = []
    for index in range(warmup + online):
        if trainer.catching_up:  # the learner node holds the next episode meanwhile
            trainer.catch_up()
        phase = trainer.phase
        episode = rollout(env, act, max_steps, seed=online_reset_seed(seed, index), phase=phase,
                          operator=operator if phase == "online" else None)  # the warm-up measures the offline start
        trainer.add_episode(episode, episode.terminal)
        entry = {"episode": index, "phase": phase, "success": episode.terminal, "steps": len(episode.actions),
                 "intervention_steps": episode.intervention_steps, "wall_clock_s": round(time.perf_counter() - started, 2),
                 "updates": agent.stats.critic_updates_online}
        if success_model is not None:
            entry.update(true_success=env.true_success_seen, detector_score=round(env.max_score, 4))
        curve.append(entry)
    env.close()
    warm = [c["success"] for c in curve if c["phase"] == "warmup"]
    last = [c["success"] for c in curve if c["phase"] == "online"][-20:]
    return {"method": method, "seed": seed, "task": task, "demo_success_rate": demo_successes / max(demos, 1),
            "setup": {"demos": demos, "warmup": warmup, "online": online, "profile": profile, "overrides": overrides or {},
                      **({"success_model": str(success_model)} if success_model else {})},
            "code_version": code_version(), "config": cfg.to_dict(),  # what ran, fully resolved
            "offline_seconds": round(offline_seconds, 1), "offline_start": float(np.mean(warm)) if warm else None,
            "final_20": float(np.mean(last)) if last else None, "learning_paused": trainer.warning or None,
            "curve": curve}


def _report_progress(result: dict, started: float, runs_dir: Path) -> dict:
    """One line per finished run, and the run saved to <out>.runs/ at once: a full study takes hours
    on a CPU, and an interrupted one keeps every run it finished."""
    (runs_dir / f"{result['method']}_seed{result['seed']}.json").write_text(json.dumps(result))
    print(f"[{(time.perf_counter() - started) / 60:5.1f} min] {result['method']} seed {result['seed']}: "
          f"offline start {result['offline_start']}, last 20 online {result['final_20']}", file=sys.stderr, flush=True)
    return result


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
    from parl_robot.config import ConfigError, parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cup_to_rack")
    parser.add_argument("--methods", nargs="+", default=["all"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--online", type=int, default=100)
    parser.add_argument("--profile", default="study", help="config overlay ('' = the task file's paper sizes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny CI version: 2 methods, 1 seed, a few episodes")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="dotted config overrides for every method, e.g. learner.critic.cql_alpha=1.0 "
                             "learner.schedule.offline_critic_steps=1000")
    parser.add_argument("--out", default="benchmarks/results/finetune_study")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: rebuild <out>.json/.png from every run saved in <out>.runs/ "
                             "(an interrupted study, or seeds and methods added by later invocations)")
    parser.add_argument("--allow-mixed-versions", action="store_true",
                        help="with --collect: accept runs made by different code versions (listed in the JSON)")
    args = parser.parse_args()
    if args.collect:
        results = collect_runs(Path(args.out).with_suffix(".runs"), args.allow_mixed_versions)
        write_report(results, list(dict.fromkeys(r["method"] for r in results)), Path(args.out),
                     {"collected": True, **results[0]["setup"]}, wall_clock_s=None)
        return
    if args.smoke:
        args.methods, args.seeds, args.demos, args.warmup, args.online = ["parl_diffusion", "calql_gaussian"], [0], 2, 1, 2
        if args.out == parser.get_default("out"):  # keep the committed study and its saved runs intact
            args.out = str(Path(tempfile.gettempdir()) / "finetune_study_smoke")
    methods = list(BASELINES + ABLATIONS) if args.methods == ["all"] else args.methods
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; known: {sorted(METHODS)}")
    try:
        overrides = {**(SMOKE_OVERRIDES if args.smoke else {}), **parse_overrides(args.set)}
        for method in methods:  # fail here, not in a worker minutes later
            study_config(args.task, method, 0, args.warmup, args.profile, overrides)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
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


def collect_runs(runs_dir: Path, allow_mixed_versions: bool = False) -> list[dict]:
    """Every run saved in `runs_dir`; refuses a mix of set-ups (demos, episodes, profile, overrides)
    and, unless allowed, a mix of code versions (runs from before versions were recorded count as one,
    'unrecorded')."""
    results = [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*.json"))]
    if not results:
        raise SystemExit(f"--collect: no saved runs in {runs_dir}")
    setups = {json.dumps(r.get("setup"), sort_keys=True) for r in results}
    if len(setups) > 1:
        raise SystemExit(f"--collect: the runs in {runs_dir} come from different set-ups, not comparable: {sorted(setups)}")
    versions: dict[str, list[str]] = {}
    for r in results:
        versions.setdefault(r.get("code_version", "unrecorded"), []).append(f"{r['method']} seed {r['seed']}")
    if len(versions) > 1 and not allow_mixed_versions:
        listing = "; ".join(f"{version}: {', '.join(runs[:4])}{' ...' if len(runs) > 4 else ''}"
                            for version, runs in sorted(versions.items()))
        raise SystemExit(f"--collect: the runs in {runs_dir} were made by {len(versions)} code versions ({listing}); "
                         "re-run the stale ones, or pass --allow-mixed-versions to collect them anyway")
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
        summary[method] = {"label": METHOD_LABELS.get(method, method), "offline_start": start, "final_20": final, "gain_points": 100 * (final - start),
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
        {"settings": settings, "code_versions": sorted({r.get("code_version", "unrecorded") for r in results}),
         "summary": summary, "paired_vs_baselines": paired,
         "paired_ablations_vs_parl_diffusion": ablations, "runs": results, "wall_clock_s": wall_clock_s}, indent=1))
    try:
        plot(results, out.with_suffix(".png"))
    except ImportError:
        print("matplotlib not installed: no PNG (pip install matplotlib)")
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
