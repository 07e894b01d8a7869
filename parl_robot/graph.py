"""The node graph, declared once.

`launch/finetune.launch.py` turns these specs into `launch_ros.actions.Node`s for a real ROS 2
install; `parl_robot.launcher` starts the same specs as plain processes for pip-only machines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from parl_robot.launch_arguments import LAUNCH_ARGUMENTS, truthy
from parl_robot.topics import NAMESPACE

RESPAWN_LIMIT = 3
RESPAWN_DELAY_S = 2.0
PARK_TIMEOUT_S = 30.0
# role:=robot runs next to the arm, role:=learner on the GPU server (docs/multi_host.md); all = both.
ROLE_NODES = {
    "robot": ("sim_bridge", "camera", "control", "object_detector", "reward_detector", "operator_ui", "actor"),
    "learner": ("learner", "episode_manager", "success_classifier"),
}
PEER_CHECKERS = {"robot": ("sim_bridge", "control"), "learner": ("episode_manager",)}  # see parl_robot/peers.py

@dataclass
class NodeSpec:
    name: str  # node name, also the log prefix
    module: str  # python module with main(); its console script is the last dotted part
    parameters: dict = field(default_factory=dict)
    ends_launch: bool = False  # the graph ends successfully once every such node has exited with 0
    # A `__node` remap renames every node in the process (launch_ros#342), the Interbotix API's hidden
    # node too: the control node names itself instead (its default name is `name`).
    remap_name: bool = True
    # Supervision (both launchers): a `critical` node's exit stops the run (the arm's own node); a
    # `respawn` node is restarted after it dies, up to RESPAWN_LIMIT times; the others stop the run.
    critical: bool = False
    respawn: bool = False
    stop_timeout_s: float = 8.0  # grace after SIGINT before SIGTERM (the control node parks the arm)
    namespace: str = NAMESPACE  # /parl, or /parl/arm<k> for arm k's nodes (arms:= > 1)

    @property
    def executable(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    @property
    def label(self) -> str:
        """Unique within a graph (logs, supervision): the node name, under its arm ("arm1/episode_manager")."""
        arm = self.namespace[len(NAMESPACE) + 1:].strip("/")
        return f"{arm}/{self.name}" if arm else self.name


def finetune_graph(arguments: dict[str, str]) -> list[NodeSpec]:
    """Specs for `finetune`; `arguments` holds the launch arguments (missing ones take defaults).
    Validate them first (`launch_arguments.validate_launch_arguments`): this only assembles."""
    unknown = set(arguments) - set(LAUNCH_ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {sorted(unknown)}; known: {sorted(LAUNCH_ARGUMENTS)}")
    args = {key: str(arguments.get(key, default)) for key, (default, _) in LAUNCH_ARGUMENTS.items()}
    arms = int(args["arms"])
    if arms == 1:
        specs = _arm_specs(args, NAMESPACE, args["store_dir"], int(args["ui_port"]))
    else:
        # Arm k's nodes in /parl/arm<k> with its own store folder and page; one learner for all of them.
        if not args["store_dir"]:
            raise ValueError("arms > 1 needs the resolved store_dir (validate_launch_arguments fills it in)")
        specs = []
        for arm in range(arms):
            port = int(args["ui_port"]) + arm if int(args["ui_port"]) > 0 else 0
            arm_specs = [spec for spec in _arm_specs(args, f"{NAMESPACE}/arm{arm}", f"{args['store_dir']}/arm{arm}", port)
                         if spec.name not in LEARNER_PROCESS]
            for spec in arm_specs:
                if spec.name == "sim_bridge":
                    spec.parameters["seed_offset"] = arm  # each sim arm draws its own scenes
                if spec.name == "operator_ui":  # each arm's page links to the others' pages
                    spec.parameters["arm_pages"] = json.dumps({f"arm{k}": int(args["ui_port"]) + k for k in range(arms)})
            specs += arm_specs
        learner = next(spec for spec in _arm_specs(args, NAMESPACE, args["store_dir"], 0) if spec.name == "learner")
        learner.parameters["arms"] = arms
        learner.remap_name = False  # its process holds one node per arm (learner_arm<k>): no __node remap
        specs.append(learner)
    role = args["role"]
    if role == "all":
        return specs
    # Supervision stays per node: on the robot side nothing ends the launch (it runs until Ctrl-C);
    # the learner side ends when the episode managers have finished their episodes.
    specs = [spec for spec in specs if spec.name in ROLE_NODES[role]]
    if args["arm"]:  # one robot PC per arm: only its arm's nodes
        specs = [spec for spec in specs if spec.namespace == f"{NAMESPACE}/arm{args['arm']}"]
    for spec in specs:
        if spec.name in PEER_CHECKERS[role]:
            spec.parameters.update(role=role, peer_check_s=float(args["peer_check_s"]))
    return specs


LEARNER_PROCESS = ("learner",)  # one per graph, also with several arms (each arm has its own classifier)


def _arm_specs(args: dict[str, str], namespace: str, store_dir: str, ui_port: int) -> list[NodeSpec]:
    """One arm's nodes (and, for a one-arm graph, the learner's) in `namespace`."""
    shared = {key: args[key] for key in ("task", "config", "overlay", "policy", "store_dir", "overrides")}
    shared["store_dir"] = store_dir
    sim = truthy(args["sim"])
    specs = []
    if sim:
        specs.append(NodeSpec("sim_bridge", "parl_robot.nodes.sim_bridge_node", {**shared}, critical=True))
    else:
        specs.append(NodeSpec("camera", "parl_robot.nodes.camera_node", {**shared, "device": args["camera_device"]},
                              respawn=True))
        specs.append(
            NodeSpec("control", "parl_robot.nodes.control_node",
                     {**shared, "backend": "interbotix", "robot_model": args["robot_model"]}, remap_name=False,
                     critical=True, stop_timeout_s=PARK_TIMEOUT_S)
        )
        specs.append(NodeSpec("object_detector", "parl_robot.nodes.object_detector_node", {**shared}, respawn=True))
    specs += [
        NodeSpec("reward_detector", "parl_robot.nodes.reward_node", {**shared}, respawn=True),
        # The learner finishes its current update and checkpoint before it exits: a longer grace.
        NodeSpec("learner", "parl_robot.nodes.learner_node", {**shared, "acting": args["acting"]}, respawn=True,
                 stop_timeout_s=20.0),
        NodeSpec("episode_manager", "parl_robot.nodes.episode_manager_node", {**shared}, ends_launch=True, respawn=True),
    ]
    if args["acting"] == "robot":  # the policy acts beside the arm, from the weights the learner publishes
        specs.append(NodeSpec("actor", "parl_robot.nodes.actor_node", {**shared}, respawn=True))
    if truthy(args["success_classifier"]):
        specs.append(NodeSpec("success_classifier", "parl_robot.nodes.success_classifier_node", {**shared}, respawn=True,
                              stop_timeout_s=30.0))  # a training in progress finishes its epoch
    if ui_port > 0:
        specs.append(NodeSpec("operator_ui", "operator_ui.operator_ui_node", {**shared, "port": str(ui_port)},
                              respawn=True))
    if sim and truthy(args["lockstep"]):
        for spec in specs:
            spec.parameters["use_sim_time"] = True
        specs[0].parameters["lockstep"] = True  # the sim bridge drives /clock
    for spec in specs:
        spec.namespace = namespace
    return specs


def ros_arguments(spec: NodeSpec) -> list[str]:
    """`--ros-args` for a plain process: namespace, node name and parameters."""
    arguments = ["--ros-args", "-r", f"__ns:=/{spec.namespace}"]
    if spec.remap_name:
        arguments += ["-r", f"__node:={spec.name}"]
    for key, value in spec.parameters.items():
        arguments += ["-p", f"{key}:={_parameter_literal(value)}"]
    return arguments


def _parameter_literal(value) -> str:
    # rclpy parses -p values as YAML: quote strings so '' and numbers-as-strings stay strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
