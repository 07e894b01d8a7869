"""`ros2 launch parl_robot finetune.launch.py task:=cup_to_rack sim:=true`

The node graph comes from `parl_robot.graph.finetune_graph`, the same declaration the plain-Python
launcher (`parl-robot launch finetune ...`) uses. The launch ends when the episode manager finishes
its episodes, and stops everything if any node dies.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from parl_robot.graph import LAUNCH_ARGUMENTS, finetune_graph
from parl_robot.nodes.common import NAMESPACE


def _nodes(context):
    arguments = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
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
        reason = f"{spec.name} finished" if spec.ends_launch else f"{spec.name} exited"
        actions += [
            node,
            RegisterEventHandler(
                OnProcessExit(
                    target_action=node,
                    on_exit=[LogInfo(msg=f"[launch] {reason}; stopping all nodes"), EmitEvent(event=Shutdown(reason=reason))],
                )
            ),
        ]
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, (default, text) in LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)]
    )
