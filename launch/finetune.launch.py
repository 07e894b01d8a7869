"""`ros2 launch parl_robot finetune.launch.py task:=cup_to_rack sim:=true`

The node graph comes from `parl_robot.graph.finetune_graph`, the same declaration the plain-Python
launcher (`parl-robot launch finetune ...`) uses. The launch ends (exit 0) when the episode manager
finishes its episodes. If any other node exits, or the episode manager fails, everything is stopped
and `ros2 launch` exits 1: the exit handler raises, which the launch service reports as an error
(a plain Shutdown event would end with 0). Only the first exit is reported; the rest are the shutdown.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from parl_robot.graph import LAUNCH_ARGUMENTS, finetune_graph
from parl_robot.nodes.common import NAMESPACE


class NodeFailed(RuntimeError):
    pass


def _exit_handler(spec, ended: dict):
    def on_exit(event, context):
        if ended["first"] is not None:  # stopping already: these exits are the shutdown itself
            return None
        ended["first"] = spec.name
        if spec.ends_launch and event.returncode == 0:
            reason = f"{spec.name} finished"
            return [LogInfo(msg=f"[launch] {reason}; stopping all nodes"), EmitEvent(event=Shutdown(reason=reason))]
        raise NodeFailed(f"{spec.name} exited with code {event.returncode}; stopping all nodes")

    return on_exit


def _nodes(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    ended = {"first": None}
    actions = []
    for spec in finetune_graph(arguments):
        node = Node(
            package="parl_robot",
            executable=spec.executable,
            name=spec.name,
            namespace=NAMESPACE,
            parameters=[spec.parameters],
            output="screen",
            emulate_tty=True,
        )
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_exit_handler(spec, ended)))]
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
