"""`parl-robot` command line: launch graphs, record demos, run the sim demo.

    parl-robot launch finetune task:=cup_to_rack sim:=true [overlay:=cpu_demo] [store_dir:=DIR]
    parl-robot record-demos task:=cup_to_rack [count:=10] [overlay:=...] [store_dir:=DIR]
    parl-robot demo [task:=cup_to_rack] [episodes:=8] [store_dir:=DIR]
    parl-robot export store_dir:=DIR out:=FILE.hdf5 [kind:=demo]   /  parl-robot import store_dir:=DIR in:=FILE.hdf5
    parl-robot calibrate {capture|intrinsics|collect|extrinsics|task|workspace} ...   (camera + workspace, calibration/README.md)

Arguments use the `name:=value` form of `ros2 launch`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from parl_robot.config import ConfigError, load_config, parse_overrides
from parl_robot.graph import finetune_graph

GRAPHS = {"finetune": finetune_graph}


def parse_assignments(items: list[str]) -> dict[str, str]:
    assignments = {}
    for item in items:
        if ":=" not in item:
            raise SystemExit(f"error: expected name:=value, got '{item}'")
        key, value = item.split(":=", 1)
        assignments[key] = value
    return assignments


def _store_and_config(args: dict[str, str], overlay_default: str = ""):
    task = args.get("task", "cup_to_rack")
    overlay = args.get("overlay", overlay_default)
    overrides = parse_overrides(args.get("overrides", ""))  # JSON or key=value items
    if args.get("store_dir"):
        overrides["episodes.store_dir"] = args["store_dir"]
    cfg = load_config(args.get("config") or None, task=task, overlays=[overlay] if overlay else [], overrides=overrides)
    return cfg, overlay


def command_launch(argv: list[str]) -> int:
    if not argv or argv[0] not in GRAPHS:
        raise SystemExit(f"error: name a graph to launch: {sorted(GRAPHS)}")
    args = parse_assignments(argv[1:])
    _store_and_config(args)  # fail fast, in this process, on a bad config
    from parl_robot.launcher import launch

    return launch(GRAPHS[argv[0]](args))


def command_record_demos(argv: list[str]) -> int:
    args = parse_assignments(argv)
    count = args.pop("count", None)
    seed = int(args.pop("seed", "0"))
    images = args.pop("images", "false").lower() == "true"
    cfg, _ = _store_and_config(args)
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.sim.record_demos import record_demos

    store = EpisodeStore(cfg.episodes.store_dir)
    total = int(count) if count else cfg.episodes.num_demos
    successes = record_demos(cfg, store, total, seed=seed, images=images)
    print(f"recorded {total} demos into {store.root}: {successes} successful")
    return 0


def command_demo(argv: list[str]) -> int:
    """Sim fine-tuning demo: fresh store, scripted demos, then the full ROS 2 graph until done."""
    args = parse_assignments(argv)
    args.setdefault("task", "cup_to_rack")
    args.setdefault("store_dir", f"runs/demo-{args['task']}-{time.strftime('%Y%m%d-%H%M%S')}")
    episodes = args.pop("episodes", None)
    if episodes:
        args["overrides"] = json.dumps({"episodes.num_online_episodes": int(episodes)})
    cfg, overlay = _store_and_config(args, overlay_default="cpu_demo")
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.launcher import launch
    from parl_robot.sim.record_demos import record_demos

    store = EpisodeStore(cfg.episodes.store_dir)
    print(f"== parl_robot sim demo: {cfg.task.name} ({cfg.task.instruction}); store {store.root}")
    if not any(r["kind"] == "demo" for r in store.records()):
        print(f"== 1/2 recording {cfg.episodes.num_demos} scripted demonstrations")
        successes = record_demos(cfg, store, cfg.episodes.num_demos)
        print(f"== demos: {successes}/{cfg.episodes.num_demos} successful")
    print("== 2/2 launching the ROS 2 graph: offline pre-training, warm-up, online PA-RL fine-tuning")
    graph_args = {"task": cfg.task.name, "sim": "true", "overlay": overlay, "store_dir": str(store.root)}
    for key in ("policy", "config", "overrides"):
        if key in args:
            graph_args[key] = args[key]
    code = launch(finetune_graph(graph_args))
    records = [r for r in store.records() if r["kind"] == "online"]
    print(f"== done: {len(records)} online episodes, {sum(r['success'] for r in records)} successes; data in {store.root}")
    for record in records:
        print(f"   {record['episode_id']}: {record['label']:8s} {record['steps']:3d} steps  policy v{record['policy_version']}")
    return code


def command_export_import(command: str, argv: list[str]) -> int:
    from parl_robot.data.episode_store import EpisodeStore
    from parl_robot.data.hdf5_export import export_hdf5, import_hdf5

    args = parse_assignments(argv)
    unknown = set(args) - {"store_dir", "out", "in", "kind"}
    if unknown or "store_dir" not in args or ("out" if command == "export" else "in") not in args:
        raise ValueError(f"usage: parl-robot {command} store_dir:=DIR {'out' if command == 'export' else 'in'}:=FILE.hdf5 [kind:=demo|online]"
                         + (f" (unknown: {sorted(unknown)})" if unknown else ""))
    store = EpisodeStore(args["store_dir"])
    if command == "export":
        count = export_hdf5(store, args["out"], args.get("kind") or None)
        print(f"exported {count} episodes from {args['store_dir']} to {args['out']}")
    else:
        added = import_hdf5(store, args["in"], args.get("kind") or None)
        print(f"imported {len(added)} episodes into {args['store_dir']}: {', '.join(added) or '-'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="parl-robot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["launch", "record-demos", "demo", "calibrate", "export", "import"])
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
        return command_demo(rest)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
