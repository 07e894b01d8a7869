"""How well a success classifier learns a sim task from a few dozen labelled episodes (issue 32).

    python benchmarks/success_classifier.py [--task pot_to_sink] [--train-episodes 40] [--test-episodes 40]
        [--seed 0] [--precision 0.95] [--out benchmarks/results/success_classifier]

Records `--train-episodes` episodes of the scripted demonstrator (rendered camera frames, the task's
distractor on the table) into a fresh episode store, labelled by the simulator's ground truth as an
operator would label them: noisy demonstrations (mostly successes) and demonstrations cut short at a
random step (failures: the object is still on its way). After a success the arm rests for a few
steps (the operator labels), as on the robot. Then it trains the classifier with the product's code
(`parl_robot/perception/success_classifier.py`, what `parl-robot reward train` runs), reports the
held-out precision and recall at the threshold chosen for the precision target, and runs the reward
node's rule (the debouncer: consecutive positive frames, gripper open) over `--test-episodes` fresh
episodes, comparing its first detected success with the ground truth step by step: false positives
(steps it calls success that are not), missed episodes, and detection delay. Writes <out>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MUJOCO_GL", "egl")

REST_STEPS = 4  # after a success the arm rests while the operator labels


def record_episode(env, demonstrator, max_steps: int, cut_at: int | None, seed: int):
    """(frames, gripper_open per frame, ground-truth success per frame, episode success)."""
    obs, _ = env.reset(seed=seed, options={"phase": "online"})
    demonstrator.reset()
    frames, gripper, truth = [obs["image"]], [bool(env.world.gripper_open)], [False]
    success, rest = False, 0
    for step in range(max_steps):
        if success:
            action = np.zeros(7, np.float32)
            action[6] = 1.0  # stay open, do not move
            rest += 1
        elif cut_at is not None and step >= cut_at:
            break  # the operator stops a failing attempt
        else:
            action = demonstrator.act(obs["state"])
        obs, _, done, _, info = env.step(action)
        frames.append(obs["image"])
        gripper.append(bool(env.world.gripper_open))
        truth.append(bool(info["success"]))
        success = success or done
        if rest >= REST_STEPS:
            break
    return np.stack(frames), np.asarray(gripper), np.asarray(truth), success


def record_labelled_store(cfg, count: int, seed: int, rng: np.random.Generator, env, demonstrator):
    """A fresh store of `count` episodes labelled by the simulator's truth (as an operator labels)."""
    from parl_robot.data.episode import EpisodeData
    from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore

    store = EpisodeStore(Path(tempfile.mkdtemp(prefix="success_classifier_")))
    outcomes = []
    max_steps = cfg.control.max_episode_steps + REST_STEPS
    for index in range(count):
        cut_at = int(rng.integers(5, cfg.control.max_episode_steps // 2)) if rng.random() < 0.4 else None
        frames, _, _, success = record_episode(env, demonstrator, max_steps, cut_at, seed=1_000 + 1_000 * seed + index)
        steps = len(frames) - 1
        episode = EpisodeData(np.zeros((steps + 1, 7), np.float32), np.zeros((steps, 7), np.float32),
                              np.full(steps, -1.0, np.float32), success, frames)
        store.save(EpisodeRecord(store.next_episode_id("online"), "online", success, "success" if success else "failure",
                                 "operator", steps, 0, cfg.config_hash(), cfg.task.name), episode)
        outcomes.append(success)
    return store, outcomes


def train_from_sim(task: str, episodes: int, seed: int, precision: float = 0.95, epochs: int = 30):
    """(config, env, demonstrator, rng, trained classifier, training outcomes): the classifier trained
    on `episodes` labelled sim episodes of `task` with its distractor on the table."""
    import torch

    from parl_robot.config import load_config
    from parl_robot.perception.success_classifier import TrainingSettings, frames_from_store, train_success_classifier
    from parl_robot.sim.demonstrator import ScriptedDemonstrator
    from parl_robot.sim.env import WidowXSimEnv

    torch.set_num_threads(1)
    cfg = load_config(task=task, overrides={"sim.distractors": "always"})
    env = WidowXSimEnv(cfg, render_images=True)
    demonstrator = ScriptedDemonstrator(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    store, outcomes = record_labelled_store(cfg, episodes, seed, rng, env, demonstrator)
    data = frames_from_store(store, cfg.task.name)
    trained = train_success_classifier(data, TrainingSettings(epochs=epochs, precision_target=precision, seed=seed))
    return cfg, env, demonstrator, rng, trained, outcomes, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pot_to_sink")
    parser.add_argument("--train-episodes", type=int, default=40)
    parser.add_argument("--test-episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", type=float, default=0.95)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/success_classifier")
    args = parser.parse_args()

    from parl_robot.perception.success_classifier import SuccessDebouncer

    started = time.perf_counter()
    cfg, env, demonstrator, rng, trained, train_outcomes, train_frames = train_from_sim(
        args.task, args.train_episodes, args.seed, args.precision, args.epochs)
    prepare_seconds = time.perf_counter() - started
    max_steps = cfg.control.max_episode_steps + REST_STEPS

    def episodes(count: int, first_seed: int):
        for index in range(count):
            cut_at = int(rng.integers(5, cfg.control.max_episode_steps // 2)) if rng.random() < 0.4 else None
            yield record_episode(env, demonstrator, max_steps, cut_at, seed=first_seed + index)

    debouncer = SuccessDebouncer(trained.threshold, cfg.reward.classifier_consecutive_frames, cfg.reward.require_gripper_open)
    false_positive_steps = negative_steps = missed = detected = false_positive_episodes = 0
    delays, test_outcomes = [], []
    for frames, gripper, truth, success in episodes(args.test_episodes, 500_000 + 1_000 * args.seed):
        probabilities = trained.net.probabilities(frames)
        debouncer.reset()
        called = np.array([debouncer.update(p, g) for p, g in zip(probabilities, gripper)])
        false_positive_steps += int(np.sum(called & ~truth))
        negative_steps += int(np.sum(~truth))
        false_positive_episodes += int(not success and called.any())
        test_outcomes.append(success)
        if success:
            if called.any():
                detected += 1
                delays.append(int(np.argmax(called)) - int(np.argmax(truth)))
            else:
                missed += 1
    env.close()
    successes = sum(test_outcomes)
    result = {
        "task": args.task, "seed": args.seed, "precision_target": args.precision, "threshold": trained.threshold,
        "train_episodes": args.train_episodes, "train_successes": int(sum(train_outcomes)),
        "train_frames": train_frames, "held_out": trained.metrics,
        "test_episodes": args.test_episodes, "test_successes": int(successes),
        "test_detected": detected, "test_missed": missed, "test_false_positive_episodes": false_positive_episodes,
        "test_false_positive_step_rate": false_positive_steps / max(negative_steps, 1),
        "detection_delay_steps": {"mean": float(np.mean(delays)) if delays else None, "max": max(delays) if delays else None},
        "consecutive_frames": cfg.reward.classifier_consecutive_frames,
        "record_and_train_seconds": round(prepare_seconds, 1),
    }
    held = trained.metrics
    print(f"{args.task}: {args.train_episodes} labelled episodes ({sum(train_outcomes)} successes), {train_frames} frames")
    print(f"held-out episodes: threshold {trained.threshold:.3f} for precision >= {args.precision}: "
          f"precision {held['precision']:.3f}, recall {held['recall']:.3f}, F1 {held['f1']:.3f}")
    print(f"{args.test_episodes} fresh episodes ({successes} successes): detected {detected}, missed {missed}, "
          f"false-positive episodes {false_positive_episodes}, false-positive step rate "
          f"{result['test_false_positive_step_rate']:.4f}, delay {result['detection_delay_steps']}")
    out = Path(args.out).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
