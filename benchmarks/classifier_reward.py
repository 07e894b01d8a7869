"""PA-RL trained on the success classifier's reward vs on the simulator's ground truth (issue 32).

    python benchmarks/classifier_reward.py [--task pot_to_sink] [--method parl_diffusion] [--seeds 0 1 2]
        [--demos 10] [--warmup 10] [--online 40] [--train-episodes 40] [--workers 2]
        [--out benchmarks/results/classifier_reward]

First the classifier is trained as `benchmarks/success_classifier.py` does (labelled sim episodes
of the task with its distractor on the table). Then, per seed, the fine-tuning study's run
(`benchmarks/finetune_study.py`, the product's trainer) twice with the same demos, resets and
initialization: rewarded and ended by the simulator's truth, and by the classifier on rendered
frames (parl_robot/sim/classifier_reward.py), as the reward node with `reward.detector: classifier`
and auto-labelling would. Both are scored by the ground truth. Reports, per reward source, the true
success per block of 10 online episodes pooled over seeds, the last block's paired gap, and the
classifier's false positives (episodes it ended as a success that were not) and misses during
training. Writes <out>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
BLOCK = 10


def _run(job: tuple) -> dict:
    import finetune_study

    task, method, seed, demos, warmup, online, model = job
    result = finetune_study.run(task, method, seed, demos, warmup, online, "study", {"sim.distractors": "always"},
                                success_model=model)
    result["reward"] = "classifier" if model else "ground_truth"
    return result


def true_online(run: dict) -> list[bool]:
    """Ground-truth success of each online episode (the classifier run records it beside its own label)."""
    return [bool(c.get("true_success", c["success"])) for c in run["curve"] if c["phase"] == "online"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pot_to_sink")
    parser.add_argument("--method", default="parl_diffusion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--online", type=int, default=40)
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="", help="a saved success classifier to use instead of training one")
    parser.add_argument("--out", default="benchmarks/results/classifier_reward")
    args = parser.parse_args()

    from success_classifier import train_from_sim

    from parl_robot.perception.success_classifier import save_classifier

    started = time.perf_counter()
    out = Path(args.out)
    model_path = out.with_suffix(".runs") / "success_classifier.pt"
    if args.model:
        from parl_robot.perception.success_classifier import load_classifier

        trained, model_path = load_classifier(args.model), Path(args.model)
        print(f"classifier: {args.model}, held-out {trained.metrics}", flush=True)
    else:
        _, env, _, _, trained, outcomes, frames = train_from_sim(args.task, args.train_episodes, seed=100)
        env.close()
        if not trained.metrics["met"]:  # a classifier that never says success would make the comparison meaningless
            raise SystemExit(f"the classifier missed held-out precision {trained.metrics['precision_target']}: {trained.metrics}")
        save_classifier(model_path, trained, args.task)
        print(f"classifier: {args.train_episodes} episodes ({sum(outcomes)} successes, {frames} frames), held-out "
              f"precision {trained.metrics['precision']:.3f} recall {trained.metrics['recall']:.3f}", flush=True)
    jobs = [(args.task, args.method, seed, args.demos, args.warmup, args.online, model)
            for seed in args.seeds for model in (None, str(model_path))]
    # Fresh interpreters: a worker forked from this process (which ran torch and rendered) can inherit a
    # held lock and never start (observed: one of two forked workers stuck in a futex).
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = list(pool.map(_run, jobs))
    for run in runs:
        (out.with_suffix(".runs") / f"{run['reward']}_seed{run['seed']}.json").write_text(json.dumps(run))

    summary = {}
    for reward in ("ground_truth", "classifier"):
        chosen = [r for r in runs if r["reward"] == reward]
        online = [true_online(r) for r in chosen]
        length = min(len(o) for o in online)
        blocks = [float(np.mean([o[i:i + BLOCK] for o in online])) for i in range(0, length - BLOCK + 1, BLOCK)]
        warm = [c.get("true_success", c["success"]) for r in chosen for c in r["curve"] if c["phase"] == "warmup"]
        labelled = [(c["success"], c.get("true_success", c["success"])) for r in chosen for c in r["curve"] if c["phase"] != "demo"]
        summary[reward] = {
            "seeds": [r["seed"] for r in chosen], "offline_start_true": float(np.mean(warm)) if warm else None,
            "true_success_per_block_of_10": blocks,
            "false_positive_episodes": sum(said and not true for said, true in labelled),
            "missed_successes": sum(true and not said for said, true in labelled),
            "episodes_labelled": len(labelled),
            "minutes_per_run": float(np.mean([r["curve"][-1]["wall_clock_s"] for r in chosen]) / 60),
        }
    gaps = []
    for seed in args.seeds:
        by_reward = {r["reward"]: true_online(r)[-BLOCK:] for r in runs if r["seed"] == seed}
        gaps.append(100 * (np.mean(by_reward["classifier"]) - np.mean(by_reward["ground_truth"])))
    result = {"task": args.task, "method": args.method, "demos": args.demos, "warmup": args.warmup, "online": args.online,
              "classifier": {"train_episodes": args.train_episodes, "held_out": trained.metrics, "threshold": trained.threshold},
              "summary": summary, "last_block_gap_points_per_seed": [round(float(g), 1) for g in gaps],
              "last_block_gap_points_mean": round(float(np.mean(gaps)), 1),
              "wall_clock_s": round(time.perf_counter() - started, 1)}
    for reward, s in summary.items():
        print(f"{reward:>13}: true offline start {s['offline_start_true']}, true success per {BLOCK} online "
              f"{[round(b, 2) for b in s['true_success_per_block_of_10']]}, false positives {s['false_positive_episodes']}"
              f"/{s['episodes_labelled']}, missed {s['missed_successes']}, {s['minutes_per_run']:.1f} min/run")
    print(f"last {BLOCK} online, classifier − ground truth: {result['last_block_gap_points_per_seed']} points "
          f"(mean {result['last_block_gap_points_mean']:+.1f})")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
