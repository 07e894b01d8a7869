"""`parl-robot reward train`: fit the success classifier on an episode store's labelled frames.

    parl-robot reward train task:=cup_to_rack store_dir:=runs/cup [out:=models/success_classifier.pt]
        [precision:=0.95] [epochs:=30] [positive_steps:=3] [held_out:=0.25] [seed:=0] [overlay:=...] [config:=...]

Prints the held-out precision, recall and F1 at the threshold chosen for the precision target, and
writes the model (with the threshold, the metrics and the episode ids it was trained and tested on)
plus a JSON summary beside it. Exit status 1 when no threshold reaches the precision target (the model
is written anyway, with a threshold that never reports success: label more episodes and train again).
"""

from __future__ import annotations

import sys

from parl_robot.config import load_config
from parl_robot.launch_arguments import LaunchArgumentError, parse_overrides

ARGUMENTS = {"task", "store_dir", "out", "precision", "epochs", "positive_steps", "held_out", "seed", "overlay", "config",
             "overrides"}


def _number(args: dict[str, str], key: str, kind: type, default):
    if key not in args:
        return default
    try:
        return kind(args[key])
    except ValueError:
        raise LaunchArgumentError(f"{key}:={args[key]!r} must be a {kind.__name__}") from None


def main(argv: list[str], parse_assignments) -> int:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    if not argv or argv[0] != "train":
        print(f"error: expected `parl-robot reward train ...`, got {argv[:1]}\n{__doc__}", file=sys.stderr)
        return 2
    args = parse_assignments(argv[1:])
    unknown = sorted(set(args) - ARGUMENTS)
    if unknown:
        raise LaunchArgumentError(f"unknown argument(s) {unknown} for `reward train`; known: {sorted(ARGUMENTS)}")
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.perception.success_classifier import (TrainingSettings, frames_from_store, save_classifier,
                                                          train_success_classifier)

    overrides = parse_overrides(args.get("overrides", ""))
    if args.get("store_dir"):
        overrides["episodes.store_dir"] = args["store_dir"]
    overlay = args.get("overlay", "")
    cfg = load_config(args.get("config") or None, task=args.get("task", "cup_to_rack"), overlays=[overlay] if overlay else [],
                      overrides=overrides)
    settings = TrainingSettings(
        epochs=_number(args, "epochs", int, 30), held_out_fraction=_number(args, "held_out", float, 0.25),
        precision_target=_number(args, "precision", float, cfg.reward.classifier_precision_target),
        seed=_number(args, "seed", int, 0))
    store = EpisodeStore(cfg.episodes.store_dir)
    data = frames_from_store(store, cfg.task.name, positive_steps=_number(args, "positive_steps", int, 3),
                             image_size=settings.image_size)
    episodes = len(set(data.episode_ids.tolist()))
    print(f"{len(data)} frames from {episodes} labelled episodes of {cfg.episodes.store_dir} "
          f"({int(data.labels.sum())} success frames)")
    trained = train_success_classifier(data, settings, log=print)
    metrics = trained.metrics
    path = save_classifier(args.get("out") or cfg.reward.classifier_file, trained, cfg.task.name)
    print(f"held out: {len(trained.held_out_episode_ids)} episodes, {metrics['held_out_frames']} frames "
          f"({metrics['held_out_positives']} success)")
    if not metrics["met"]:
        print(f"no threshold reaches precision {settings.precision_target} on the held-out episodes: the saved model "
              f"never reports success. Label more episodes (both outcomes) and train again. Wrote {path}")
        return 1
    print(f"threshold {trained.threshold:.3f} for precision >= {settings.precision_target}: precision {metrics['precision']:.3f}, "
          f"recall {metrics['recall']:.3f}, F1 {metrics['f1']:.3f}")
    print(f"wrote {path} (and {path.with_suffix('.json').name}); use it with reward.detector: classifier")
    return 0
