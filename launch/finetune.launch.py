"""`ros2 launch parl_robot finetune.launch.py task:=cup_to_rack sim:=true`

The node graph comes from `parl_robot.graph.finetune_graph`, the same declaration the plain-Python
launcher (`parl-robot launch finetune ...`) uses, with the same supervision:
- the launch ends (exit 0) when the episode manager finishes its episodes;
- a node marked `respawn` (learner, reward detector, episode manager, camera, object detector,
  page) is restarted after it dies, at most RESPAWN_LIMIT times, so that a dead learner never takes
  the arm's node or the operator page down;
- the arm's node (control, or the sim bridge) is `critical`: its exit stops everything and
  `ros2 launch` exits 1 (the exit handler raises, which the launch service reports as an error);
- Ctrl-C stops every node with SIGINT: each node cleans up itself (the control node parks the arm,
  with a longer grace before SIGTERM) and exits 0, and so does `ros2 launch`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from parl_robot.graph import LAUNCH_ARGUMENTS, RESPAWN_DELAY_S, RESPAWN_LIMIT, finetune_graph
from parl_robot.nodes.common import NAMESPACE


class NodeFailed(RuntimeError):
    pass


def _exit_handler(spec, run: dict):
    def on_exit(event, context):
        if run["stopping"] or context.is_shutdown:  # these exits are the shutdown itself
            return None
        code = event.returncode
        if spec.ends_launch and code == 0:
            run["stopping"] = True
            reason = f"{spec.name} finished"
            return [LogInfo(msg=f"[launch] {reason}; stopping all nodes"), EmitEvent(event=Shutdown(reason=reason))]
        restarts = run["restarts"].get(spec.name, 0)
        if spec.respawn and not spec.critical and restarts < RESPAWN_LIMIT:
            run["restarts"][spec.name] = restarts + 1
            return [LogInfo(msg=f"[launch] {spec.name} exited with code {code}; restarting it in "
                                f"{RESPAWN_DELAY_S:.0f} s ({restarts + 1}/{RESPAWN_LIMIT})")]
        run["stopping"] = True
        raise NodeFailed(f"{spec.name} exited with code {code}; stopping all nodes")

    return on_exit


def _nodes(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    run = {"stopping": False, "restarts": {}}
    actions = []
    for spec in finetune_graph(arguments):
        naming = {"name": spec.name} if spec.remap_name else {}  # see NodeSpec.remap_name
        respawn = {"respawn": True, "respawn_delay": RESPAWN_DELAY_S} if spec.respawn and not spec.critical else {}
        node = Node(
            package="parl_robot",
            executable=spec.executable,
            **naming,
            namespace=NAMESPACE,
            parameters=[spec.parameters],
            output="screen",
            emulate_tty=True,
            sigterm_timeout=str(spec.stop_timeout_s),
            **respawn,
        )
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_exit_handler(spec, run)))]
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
