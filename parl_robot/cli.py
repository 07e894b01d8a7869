"""`parl-robot` command line: launch graphs, record demos, run the sim demo.

    parl-robot launch finetune task:=cup_to_rack sim:=true [overlay:=cpu_demo] [store_dir:=DIR]
    parl-robot record-demos task:=cup_to_rack [count:=10] [overlay:=...] [store_dir:=DIR]
    parl-robot demo [task:=pot_to_sink] [episodes:=40] [seed:=0] [store_dir:=DIR]
    parl-robot export store_dir:=DIR out:=FILE.hdf5 [kind:=demo]   /  parl-robot import store_dir:=DIR in:=FILE.hdf5
    parl-robot export store_dir:=DIR out:=DIR format:=lerobot [kind:=...] [include_aborted:=true] [repo_id:=...]
    parl-robot calibrate {capture|intrinsics|collect|extrinsics|task|workspace} ...   (camera + workspace, calibration/README.md)
    parl-robot openvla check DIR [unnorm_key:=bridge_orig] [instruction:=TEXT]   (verify a local OpenVLA checkpoint)
    parl-robot reward train task:=cup_to_rack store_dir:=DIR [out:=FILE] [precision:=0.95]   (success classifier)

Arguments use the `name:=value` form of `ros2 launch`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from parl_robot.config import TASKS, ConfigError, load_config
from parl_robot.graph import finetune_graph
from parl_robot.launch_arguments import (BOOLEAN_WORDS, LaunchArgumentError, check_store_dir, help_text, parse_overrides, truthy,
                                         validate_launch_arguments)

GRAPHS = {"finetune": finetune_graph}
DEMO_OVERLAY = "demo"  # config/profiles/demo.yaml: the study's set-up at the demo's episode counts


def _wants_help(argv: list[str]) -> bool:
    return any(item in ("-h", "--help", "help") for item in argv)


def parse_assignments(items: list[str]) -> dict[str, str]:
    assignments = {}
    for item in items:
        if ":=" not in item:
            raise LaunchArgumentError(f"expected name:=value, got '{item}' (`--help` lists the arguments)")
        key, value = item.split(":=", 1)
        assignments[key] = value
    return assignments


def _store_and_config(args: dict[str, str]):
    task = args.get("task", "cup_to_rack")
    overlay = args.get("overlay", "")
    overrides = parse_overrides(args.get("overrides", ""))
    if args.get("store_dir"):
        overrides["episodes.store_dir"] = args["store_dir"]
    if args.get("policy"):
        overrides["learner.policy"] = args["policy"]
    cfg = load_config(args.get("config") or None, task=task, overlays=[overlay] if overlay else [], overrides=overrides)
    check_store_dir(cfg.episodes.store_dir)
    return cfg, overlay


def command_launch(argv: list[str]) -> int:
    if not argv or argv[0] not in GRAPHS:
        raise LaunchArgumentError(f"name a graph to launch: parl-robot launch {{{','.join(GRAPHS)}}} name:=value ...")
    if _wants_help(argv[1:]):
        print(help_text(f"parl-robot launch {argv[0]}"))
        return 0
    args = validate_launch_arguments(parse_assignments(argv[1:]))  # every argument checked before any node starts
    from parl_robot.launcher import launch

    return launch(GRAPHS[argv[0]](args))


RECORD_DEMOS_HELP = """usage: parl-robot record-demos name:=value ...

Scripted, noisy demonstrations in the MuJoCo twin, stored as episodes.
  task       task name ['cup_to_rack']
  count      number of episodes [episodes.num_demos]
  seed       random seed [0]
  images     store camera frames too (image policies) [false]
  store_dir  episode store [episodes.store_dir]
  overlay, config, overrides, policy   as for `parl-robot launch finetune`"""

DEMO_HELP = """usage: parl-robot demo name:=value ...

The sim fine-tuning demo: a fresh store, scripted demonstrations, then the full ROS 2 graph.
  task       task name ['pot_to_sink']
  episodes   episodes acted by the learner, warm-up included [episodes.num_online_episodes of the overlay]
  seed       random seed of the demonstrations, the sim's resets and the learner [0]
  store_dir  episode store [runs/demo-<task>-<time>]
  overlay    ['demo': the study's set-up, 10 warm-up and 30 online episodes]
  policy, config, overrides, ui_port, lockstep   as for `parl-robot launch finetune`"""


def _only(args: dict[str, str], allowed: set[str], command: str) -> None:
    unknown = sorted(set(args) - allowed)
    if unknown:
        close = [m for name in unknown for m in __import__("difflib").get_close_matches(name, sorted(allowed), n=1)]
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise LaunchArgumentError(f"unknown argument(s) {unknown} for `parl-robot {command}`{hint} (`--help` lists them)")


def _integer(args: dict[str, str], name: str, default: str, low: int, high: int) -> int:
    text = args.pop(name, default)
    if not str(text).isdigit() or not low <= int(text) <= high:
        raise LaunchArgumentError(f"{name}:={text} must be an integer in {low}..{high}")
    return int(text)


def command_record_demos(argv: list[str]) -> int:
    if _wants_help(argv):
        print(RECORD_DEMOS_HELP)
        return 0
    args = parse_assignments(argv)
    _only(args, {"task", "count", "seed", "images", "store_dir", "overlay", "config", "overrides", "policy"}, "record-demos")
    count = _integer(args, "count", "0", 0, 100_000) or None
    seed = _integer(args, "seed", "0", 0, 2**31 - 1)
    images = args.pop("images", "false").lower() == "true"
    cfg, _ = _store_and_config(args)
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.sim.record_demos import record_demos

    store = EpisodeStore(cfg.episodes.store_dir)
    total = count or cfg.episodes.num_demos
    successes = record_demos(cfg, store, total, seed=seed, images=images)
    print(f"recorded {total} demos into {store.root}: {successes} successful")
    return 0


def command_demo(argv: list[str]) -> int:
    """Sim fine-tuning demo: fresh store, scripted demos, then the full ROS 2 graph until done."""
    if _wants_help(argv):
        print(DEMO_HELP)
        return 0
    args = parse_assignments(argv)
    _only(args, {"task", "episodes", "seed", "store_dir", "overlay", "policy", "config", "overrides", "ui_port", "lockstep"},
          "demo")
    args.setdefault("task", "pot_to_sink")
    args.setdefault("store_dir", f"runs/demo-{args['task']}-{time.strftime('%Y%m%d-%H%M%S')}")
    seed = _integer(args, "seed", "0", 0, 2**31 - 1)
    extra = {"sim.seed": seed, "learner.seed": seed} if seed else {}
    if "episodes" in args:
        extra["episodes.num_online_episodes"] = _integer(args, "episodes", "0", 1, 10_000)
    if extra:
        args["overrides"] = json.dumps({**parse_overrides(args.get("overrides", "")), **extra})
    args.setdefault("overlay", DEMO_OVERLAY)
    validate_launch_arguments({k: v for k, v in args.items()}, require_demos=False)  # before any work starts
    cfg, overlay = _store_and_config(args)
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.launcher import launch
    from parl_robot.sim.record_demos import record_demos

    store = EpisodeStore(cfg.episodes.store_dir)
    print(f"== parl_robot sim demo: {cfg.task.name} ({cfg.task.instruction}); store {store.root}")
    if not any(r["kind"] == "demo" for r in store.records()):
        print(f"== 1/2 recording {cfg.episodes.num_demos} scripted demonstrations")
        successes = record_demos(cfg, store, cfg.episodes.num_demos, seed=seed)
        print(f"== demos: {successes}/{cfg.episodes.num_demos} successful")
    print("== 2/2 launching the ROS 2 graph: offline pre-training, warm-up, online PA-RL fine-tuning")
    graph_args = {"task": cfg.task.name, "sim": "true", "overlay": overlay, "store_dir": str(store.root)}
    for key in ("policy", "config", "overrides", "ui_port", "lockstep"):
        if key in args:
            graph_args[key] = args[key]
    if graph_args.get("ui_port", "0") != "0":
        print(f"== operator page: http://127.0.0.1:{graph_args['ui_port']}/")
    code = launch(finetune_graph(validate_launch_arguments(graph_args)))
    from parl_robot.data.learning_curve import curve_summary, draw_learning_curve, summary_table

    all_records = store.records()
    records = [r for r in all_records if r["kind"] == "online"]
    print(f"== done: {len(records)} online episodes, {sum(r['success'] for r in records)} successes; data in {store.root}")
    for record in records:
        print(f"   {record['episode_id']}: {record['label']:8s} {record['steps']:3d} steps  policy v{record['policy_version']}")
    print("== before / after")
    print(summary_table(curve_summary(all_records)))
    curve = draw_learning_curve(all_records, store.root / "learning_curve.png", title=f"{cfg.task.name}: sim fine-tuning")
    if curve is not None:
        print(f"== learning curve: {curve}")
    return code


EXPORT_HELP = """usage: parl-robot export store_dir:=DIR out:=PATH name:=value ...

The store's episodes as one HDF5 file or as a LeRobot dataset directory (docs/data_format.md).
  store_dir        episode store (required)
  out              FILE.hdf5, or a new directory for format:=lerobot (required)
  format           hdf5 | lerobot ['hdf5']
  kind             demo | online: only episodes of that kind [all]
  include_aborted  lerobot: also episodes ended by a safety hold, flagged `aborted` [false]
  repo_id          lerobot: the id to load it by, LeRobotDataset(repo_id, root=out) ['parl_robot/<out name>']
  fps              lerobot: frames per second [the task's control.rate_hz; runs under an overlay that
                   changes the rate, such as openvla (3 Hz), need it named]"""

IMPORT_HELP = """usage: parl-robot import store_dir:=DIR in:=FILE.hdf5 [kind:=demo|online]

Adds an exported HDF5 file's episodes to a store under fresh ids.
  store_dir  episode store (required)
  in         the HDF5 file (required)
  kind       store every episode as this kind [each episode's own]"""

LEROBOT_ONLY = ("include_aborted", "repo_id", "fps")


def command_export_import(command: str, argv: list[str]) -> int:
    from parl_robot.data.episode_store import EpisodeStore

    if _wants_help(argv):
        print(EXPORT_HELP if command == "export" else IMPORT_HELP)
        return 0
    args = parse_assignments(argv)
    path_arg = "out" if command == "export" else "in"
    _only(args, {"store_dir", path_arg, "kind", *(("format",) + LEROBOT_ONLY if command == "export" else ())}, command)
    for required in ("store_dir", path_arg):
        if not args.get(required):
            raise LaunchArgumentError(f"{required}:= is required (`parl-robot {command} --help`)")
    kind = args.get("kind") or None
    if kind not in (None, "demo", "online"):
        raise LaunchArgumentError(f"kind:={kind} must be demo or online")
    store = EpisodeStore(args["store_dir"])
    if command == "import":
        from parl_robot.data.hdf5_export import import_hdf5

        added = import_hdf5(store, args["in"], kind)
        print(f"imported {len(added)} episodes into {args['store_dir']}: {', '.join(added) or '-'}")
        return 0
    export_format = args.get("format") or "hdf5"
    if export_format == "lerobot":
        return _export_lerobot(store, args, kind)
    if export_format != "hdf5":
        raise LaunchArgumentError(f"format:={export_format} must be hdf5 or lerobot")
    misplaced = [name for name in LEROBOT_ONLY if name in args]
    if misplaced:
        raise LaunchArgumentError(f"{misplaced[0]}:= applies to format:=lerobot only")
    from parl_robot.data.hdf5_export import export_hdf5

    count = export_hdf5(store, args["out"], kind)
    print(f"exported {count} episodes from {args['store_dir']} to {args['out']}")
    return 0


def _export_lerobot(store, args: dict[str, str], kind: str | None) -> int:
    from parl_robot.data.lerobot_export import export_lerobot

    if args["out"].endswith((".hdf5", ".h5")):
        raise LaunchArgumentError(f"out:={args['out']} names an HDF5 file; a LeRobot dataset is a directory")
    include_aborted = args.get("include_aborted", "false").lower()
    if include_aborted not in BOOLEAN_WORDS:
        raise LaunchArgumentError(f"include_aborted:={include_aborted} must be true or false")
    task_names = sorted({meta["task"] for meta in store.records() if kind is None or meta["kind"] == kind})
    if not task_names:
        raise LaunchArgumentError(f"store_dir:={args['store_dir']} has no {kind + ' ' if kind else ''}episodes to export")
    configs = {name: load_config(task=name) for name in task_names if name in TASKS}
    if "fps" in args:
        fps = _integer(args, "fps", "", 1, 1000)
    else:
        rates = {config.control.rate_hz for config in configs.values()}
        if len(rates) != 1 or len(configs) != len(task_names) or not float(next(iter(rates))).is_integer():
            raise LaunchArgumentError(f"tasks {task_names} give control rates {sorted(rates)} Hz: name one whole "
                                      "frame rate with fps:= (a LeRobot dataset has one)")
        fps = int(rates.pop())
    try:
        result = export_lerobot(store, args["out"], fps, kind, truthy(include_aborted), repo_id=args.get("repo_id") or None,
                                instructions={name: config.task.instruction for name, config in configs.items()})
    except RuntimeError as err:  # a missing optional package (pyarrow) or video encoder: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {result.episodes} episodes ({result.frames} frames at {fps} fps"
          + (f", video {result.video_codec}" if result.video_codec else ", state only")
          + f") from {store.root} to {result.root} as a LeRobot v3.0 dataset")
    if result.skipped_aborted:
        print(f"left out {len(result.skipped_aborted)} aborted episode(s) (include_aborted:=true exports them): "
              + ", ".join(result.skipped_aborted))
    if result.skipped_empty:
        print(f"left out {len(result.skipped_empty)} episode(s) with no steps: {', '.join(result.skipped_empty)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="parl-robot", description=__doc__ + "\n" + help_text("parl-robot launch finetune"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["launch", "record-demos", "demo", "calibrate", "export", "import", "openvla", "reward"])
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parsed = parser.parse_args(argv[:1])
    rest = argv[1:]
    try:
        if parsed.command == "launch":
            return command_launch(rest)
        if parsed.command == "record-demos":
            return command_record_demos(rest)
        if parsed.command in ("export", "import"):
            return command_export_import(parsed.command, rest)
        if parsed.command == "calibrate":
            from parl_robot.calibrate_cli import main as calibrate_main

            return calibrate_main(rest, parse_assignments)
        if parsed.command == "reward":
            from parl_robot.reward_cli import main as reward_main

            return reward_main(rest, parse_assignments)
        if parsed.command == "openvla":
            from parl_robot.policies.openvla.check import main as openvla_main

            return openvla_main(rest, parse_assignments)
        return command_demo(rest)
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
