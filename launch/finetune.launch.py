"""`ros2 launch parl_robot finetune.launch.py task:=cup_to_rack sim:=true`

The node graph comes from `parl_robot.graph.finetune_graph`, the same declaration the plain-Python
launcher (`parl-robot launch finetune ...`) uses, with the same supervision:
- the launch ends (exit 0) when the episode manager finishes its episodes (with `arms:=N`, when every
  arm's episode manager has);
- a node marked `respawn` (learner, reward detector, episode manager, camera, object detector,
  page) is restarted after it dies, at most RESPAWN_LIMIT times, so that a dead learner never takes
  the arm's node or the operator page down. launch's own `respawn` restarts after any exit, code 0
  included, and only its respawn delay keeps it behind the Shutdown: so the episode manager, whose
  exit 0 ends the launch, is restarted by its exit handler instead (a fresh Node after
  RESPAWN_DELAY_S, in a TimerAction that the Shutdown cancels), and only after a failure;
- the arm's node (control, or the sim bridge) is `critical`: its exit stops everything and
  `ros2 launch` exits 1 (the exit handler raises, which the launch service reports as an error);
- `role:=robot` / `role:=learner` start one half of the graph for a robot PC and a GPU server
  (docs/multi_host.md), with the same supervision per node; only the learner half ends by itself;
- Ctrl-C stops every node with SIGINT: each node cleans up itself (the control node parks the arm,
  with a longer grace before SIGTERM) and exits 0, and so does `ros2 launch`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from parl_robot.launch_arguments import validate_launch_arguments
from parl_robot.graph import LAUNCH_ARGUMENTS, RESPAWN_DELAY_S, RESPAWN_LIMIT, finetune_graph


class NodeFailed(RuntimeError):
    pass


def _exit_handler(spec, run: dict):
    def on_exit(event, context):
        if run["stopping"] or context.is_shutdown:  # these exits are the shutdown itself
            return None
        code = event.returncode
        if spec.ends_launch and code == 0:
            run["finished"].add(spec.label)
            waiting = sorted(run["ending"] - run["finished"])
            if waiting:
                return [LogInfo(msg=f"[launch] {spec.label} finished; waiting for {', '.join(waiting)}")]
            run["stopping"] = True
            reason = f"{spec.label} finished"
            return [LogInfo(msg=f"[launch] {reason}; stopping all nodes"), EmitEvent(event=Shutdown(reason=reason))]
        restarts = run["restarts"].get(spec.label, 0)
        if spec.respawn and not spec.critical and restarts < RESPAWN_LIMIT:
            run["restarts"][spec.label] = restarts + 1
            restart = [TimerAction(period=RESPAWN_DELAY_S, actions=_supervised(spec, run))] if spec.ends_launch else []
            return [LogInfo(msg=f"[launch] {spec.label} exited with code {code}; restarting it in "
                                f"{RESPAWN_DELAY_S:.0f} s ({restarts + 1}/{RESPAWN_LIMIT})"), *restart]
        run["stopping"] = True
        raise NodeFailed(f"{spec.label} exited with code {code}; stopping all nodes")

    return on_exit


def _supervised(spec, run: dict) -> list:
    """A Node for `spec` and the exit handler that supervises it (see the module docstring)."""
    naming = {"name": spec.name} if spec.remap_name else {}  # see NodeSpec.remap_name
    respawns = spec.respawn and not spec.critical and not spec.ends_launch
    respawn = {"respawn": True, "respawn_delay": RESPAWN_DELAY_S} if respawns else {}
    node = Node(
        package="parl_robot",
        executable=spec.executable,
        **naming,
        namespace=spec.namespace,
        parameters=[spec.parameters],
        output="screen",
        emulate_tty=True,
        sigterm_timeout=str(spec.stop_timeout_s),
        **respawn,
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_exit_handler(spec, run)))]


def _nodes(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    # Every argument is checked before any node starts: a typo is one line naming it, not three dying nodes.
    arguments = validate_launch_arguments(arguments)
    specs = finetune_graph(arguments)
    run = {"stopping": False, "restarts": {}, "finished": set(), "ending": {spec.label for spec in specs if spec.ends_launch}}
    return [action for spec in specs for action in _supervised(spec, run)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
