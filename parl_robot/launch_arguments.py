"""Launch arguments: the one table both launchers declare, and their validation before any node starts.

`validate_launch_arguments` turns a typo, an unwritable store or a bad override into one line that
names the argument (with a did-you-mean for names) instead of tracebacks from three dying nodes.
`help_text` renders the same table for `--help` (the launch file's descriptions come from it too).
"""

from __future__ import annotations

import difflib
import json
import os
import uuid
from pathlib import Path

from parl_robot.config import TASKS, ConfigError, LearnerConfig, load_config
from parl_robot.config import parse_overrides as config_parse_overrides

LAUNCH_ARGUMENTS = {
    "task": ("cup_to_rack", "task name: config/tasks/<task>.yaml"),
    "sim": ("true", "true: MuJoCo sim bridge; false: camera + WidowX-250 hardware"),
    "policy": ("", "policy class override: diffusion | gaussian | transformer | openvla"),
    "robot_model": ("wx250s", "Interbotix robot model (hardware only)"),
    "ui_port": ("0", "operator page port; 0 disables the page"),
    "config": ("", "explicit task config file (default: the packaged one for `task`)"),
    "overlay": ("", "partial config merged over the task config, e.g. cpu_demo"),
    "store_dir": ("", "episode store directory (default: episodes.store_dir)"),
    "overrides": ("", 'JSON of dotted config keys, e.g. {"episodes.num_online_episodes": 3}'),
    "camera_device": ("0", "OpenCV camera index or path (hardware only)"),
    "lockstep": ("true", "sim only: ROS time advances one control step per action (/clock from the sim bridge), "
                         "so a slow machine slows the simulation instead of starving the controller; false = real time"),
    "role": ("all", "all: the whole graph here; robot: camera, control (sim bridge), detectors, page; "
                    "learner: learner + episode manager (docs/multi_host.md)"),
    "acting": ("learner", "where the policy acts: learner (beside training) or robot (an actor node beside the arm "
                          "acts from the weights the learner publishes, so link latency stays out of the control "
                          "loop; docs/multi_host.md)"),
    "success_classifier": ("false", "true: the success classifier in shadow mode on the learner side (judged on "
                                    "every labelled episode, retrained as labels accumulate; needs stored frames: "
                                    "image observations or episodes.record_frames)"),
    "arms": ("1", "number of arms feeding one learner: arm k's nodes (sim bridge or camera + control, detectors, "
                  "episode manager, page on ui_port + k, actor) run in /parl/arm<k> and store its episodes in "
                  "<store_dir>/arm<k>; the learner trains on all and acts for each (docs/multi_host.md)"),
    "arm": ("", "with arms > 1: start only arm k's nodes (a robot PC per arm: role:=robot arms:=N arm:=k); "
                "empty = every arm's"),
    "peer_check_s": ("15", "role robot/learner: seconds after start before missing topics of the other side are "
                           "reported (then checked every second); 0 disables"),
}
ROLES = ("all", "robot", "learner")
MAX_ARMS = 16
ACTING_PLACES = ("learner", "robot")
BOOLEAN_WORDS = ("1", "true", "yes", "on", "0", "false", "no", "off")


class LaunchArgumentError(ValueError):
    """A launch argument is unknown or invalid; the message names it."""


def truthy(value: str) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _suggest(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; choose one of {', '.join(choices)}"


def parse_overrides(text: str) -> dict:
    """`overrides:=` in the project's one override syntax (`config.parse_overrides`: a JSON object of
    dotted keys, or `key=value` items separated by commas), with errors that name the argument."""
    try:
        return config_parse_overrides(text)
    except ConfigError as err:
        raise LaunchArgumentError(f"overrides:= {err}") from None


def check_store_dir(path: str | Path) -> Path:
    """The store directory exists or can be created, and is writable."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LaunchArgumentError(f"store_dir:={path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise LaunchArgumentError(f"store_dir:={path} is not writable ({err.strerror or err})") from None
    return path


def validate_launch_arguments(arguments: dict[str, str], require_demos: bool = True) -> dict[str, str]:
    """All launch arguments with defaults filled in, checked; raises LaunchArgumentError naming the first bad one."""
    unknown = sorted(set(arguments) - set(LAUNCH_ARGUMENTS))
    if unknown:
        hints = "".join(_suggest(name, LAUNCH_ARGUMENTS) for name in unknown[:1])
        raise LaunchArgumentError(f"unknown launch argument(s) {unknown}{hints}")
    args = {key: str(arguments.get(key, default)) for key, (default, _) in LAUNCH_ARGUMENTS.items()}
    if args["task"] not in TASKS and not args["config"]:
        raise LaunchArgumentError(f"task:={args['task']} is not a task{_suggest(args['task'], TASKS)}")
    policies = LearnerConfig.__dataclass_fields__["policy"].metadata["choices"]
    if args["policy"] and args["policy"] not in policies:
        raise LaunchArgumentError(f"policy:={args['policy']} is not a policy class{_suggest(args['policy'], policies)}")
    for flag in ("sim", "lockstep", "success_classifier"):
        if args[flag].lower() not in BOOLEAN_WORDS:
            raise LaunchArgumentError(f"{flag}:={args[flag]} must be true or false")
    if args["role"] not in ROLES:
        raise LaunchArgumentError(f"role:={args['role']} is not a role{_suggest(args['role'], ROLES)}")
    if args["acting"] not in ACTING_PLACES:
        raise LaunchArgumentError(f"acting:={args['acting']} must be learner or robot{_suggest(args['acting'], ACTING_PLACES)}")
    try:
        if float(args["peer_check_s"]) < 0:
            raise ValueError
    except ValueError:
        raise LaunchArgumentError(f"peer_check_s:={args['peer_check_s']} must be a number of seconds >= 0") from None
    arms = args["arms"]
    if not arms.isdigit() or not 1 <= int(arms) <= MAX_ARMS:
        raise LaunchArgumentError(f"arms:={arms} must be an integer number of arms in 1..{MAX_ARMS}")
    if args["arm"] and int(arms) == 1:
        raise LaunchArgumentError(f"arm:={args['arm']} picks one of several arms: it needs arms:= 2 or more")
    if args["arm"] and not (args["arm"].isdigit() and int(args["arm"]) < int(arms)):
        raise LaunchArgumentError(f"arm:={args['arm']} must be an arm index in 0..{int(arms) - 1} (arms:={arms})")
    if args["arm"] and args["role"] == "all":
        raise LaunchArgumentError(f"arm:={args['arm']} starts one arm's nodes: use it with role:=robot on that arm's PC "
                                  "(role:=all needs every arm and the learner)")
    if int(arms) > 1 and truthy(args["sim"]) and truthy(args["lockstep"]):
        raise LaunchArgumentError(f"arms:={arms} with sim:=true needs lockstep:=false: in lockstep each sim bridge "
                                  "would drive the one ROS clock (/clock)")
    port = args["ui_port"]
    if not port.isdigit() or int(port) + int(arms) - 1 > 65535:
        raise LaunchArgumentError(f"ui_port:={port} must be an integer port in 0..65535 (0 disables the page)"
                                  + (f"; arm k's page uses ui_port + k, up to {int(port) + int(arms) - 1}"
                                     if port.isdigit() and int(arms) > 1 else ""))
    overrides = parse_overrides(args["overrides"])
    if args["store_dir"]:
        overrides["episodes.store_dir"] = args["store_dir"]
    if args["policy"]:
        overrides["learner.policy"] = args["policy"]
    if args["config"] and not Path(args["config"]).is_file():
        raise LaunchArgumentError(f"config:={args['config']} does not exist")
    try:
        cfg = load_config(args["config"] or None, task=args["task"], overlays=[args["overlay"]] if args["overlay"] else [],
                          overrides=overrides)
    except ConfigError as err:
        raise LaunchArgumentError(f"the configuration is invalid: {err}") from None
    except FileNotFoundError as err:
        raise LaunchArgumentError(f"overlay:={args['overlay']}: {err}") from None
    store = check_store_dir(cfg.episodes.store_dir)
    if int(arms) > 1:  # each arm's nodes get their own subfolder: the graph needs the resolved root
        for arm in range(int(arms)):
            check_store_dir(store / f"arm{arm}")
        args["store_dir"] = str(store)
    if require_demos and args["role"] != "robot" and not _has_demos(store):  # the learner reads the demos
        raise LaunchArgumentError(
            f"no demonstrations in {store}: record them first with "
            f"`parl-robot record-demos task:={cfg.task.name} store_dir:={store}"
            + (f" overlay:={args['overlay']}" if args["overlay"] else "") + "`"
        )
    args["overrides"] = json.dumps(parse_overrides(args["overrides"])) if args["overrides"] else ""
    return args


def _has_demos(store: Path) -> bool:
    episodes = store / "episodes"
    return episodes.is_dir() and any(entry.name.startswith("demo_") for entry in os.scandir(episodes))


def help_text(command: str) -> str:
    width = max(len(name) for name in LAUNCH_ARGUMENTS)
    lines = [f"usage: {command} name:=value ...", "", "arguments (default in brackets):"]
    for name, (default, text) in LAUNCH_ARGUMENTS.items():
        lines.append(f"  {name:<{width}}  {text} [{default!r}]" if default else f"  {name:<{width}}  {text}")
    return "\n".join(lines)
