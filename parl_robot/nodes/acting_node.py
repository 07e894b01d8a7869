"""What every node that acts at the control rate shares: sensors in, freshness checks, the tick.

`ActingNode` keeps the latest pose, gripper, object position, image and reward, judges their age,
follows `episode/event` (start/end), the control node's safety state and its `robot/executed`
reports, and on each control tick (when an episode runs, the arm is not held and the inputs are
fresh) asks its subclass for an action, publishes it on `robot/action` with the step index, and
publishes the step's timing. Subclasses: the learner node (acting on the learner host) and the
actor node (acting on the robot host from published weights, `acting:=robot`).
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, MultiArrayDimension, String

from parl_robot.nodes import common
from parl_robot.observation import state_vector
from parl_robot.perception.object_poses import decode_object_poses

# The nodes that may drive robot/action; exactly one of them may act (acting:=learner|robot on both hosts).
ACTING_NODE_NAMES = ("learner", "actor")

# In simulated time, control ticks a step may wait for the previous step's robot/executed report
# before the node acts without it (the control node is gone or the report was lost).
MAX_DEFERRED_TICKS = 5

# In simulated time, wall seconds after an episode's "start" before the node ticks on its own when step 0
# is still due: the control tick that begins the episode's lockstep can come before the "start" event
# is handled (events and the clock arrive on different topics), and then sim time waits for a step-0
# action that no tick would ever compute (the sim bridge would run at wall speed after its 2 s stall).
FIRST_STEP_GUARD_S = 0.3


def is_acting_node_name(name: str) -> bool:
    """The learner, the actor, or the learner's node for one of several arms (`learner_arm<k>`)."""
    return name in ACTING_NODE_NAMES or re.fullmatch(r"learner_arm\d+", name) is not None


def age_text(age_s: float, judged_by: str = "") -> str:
    if not np.isfinite(age_s):
        return "none received"
    if age_s < 0:
        return f"stamped {-age_s:.2f} s in the future: are the clocks synchronized?"
    return f"{age_s:.2f} s old{judged_by}"


class ActingNode(Node):
    """Sensors, freshness and the control tick (see the module docstring). The tick and the action
    publishers exist only after `start_acting()`: the learner does not call it when the robot host acts."""

    def __init__(self, name: str, arm: str = "", **node_options):
        super().__init__(name, **node_options)
        # With several arms one learner process holds one node per arm: its topics are under the arm's
        # namespace ("arm1/robot/state" below /parl); a one-arm graph has no prefix.
        self.arm = arm
        self.cfg = common.declare_task_config(self)
        self.warning = ""  # why the node does not act (stale inputs, held arm, no weights)
        # Latest sensor values.
        self.ee_position: np.ndarray | None = None
        self.gripper_open: bool | None = None
        self.object_position: np.ndarray | None = None
        self.image: np.ndarray | None = None
        self.image_stamp: float | None = None  # header stamp (s) of self.image
        self.latest_reward: float | None = None
        self.input_times: dict[str, float] = {}  # arrival time (monotonic) of the latest pose / objects
        self.poses_stamp: float | None = None  # `_meta.stamp` of the latest objects/poses (ROS time, s)
        self.arrival_wall: dict[str, float] = {}  # wall time the latest image / poses arrived (timing records)
        self.stale_since: float | None = None
        # Episode in progress.
        self.running_episode: int | None = None
        self.step = 0
        # Simulated time (lockstep): act on step k+1 only after step k was reported executed, so each
        # observation follows the previous action, as on the real arm where time does not wait.
        self.await_execution = common.uses_sim_time(self)
        self.unexecuted_step: int | None = None  # the step whose robot/executed report is still due
        self.deferred_ticks = 0  # control ticks that came while it was due
        self.first_step_due_since: float | None = None  # monotonic time of "start" until step 0 is acted on
        self.safety_held: list[str] = []  # the control node's latched hold reasons: never act while held
        self.other_acting_nodes: list[str] = []  # acting nodes besides this one publishing robot/action

        topic = self.arm_topic
        self.create_subscription(PoseStamped, topic(common.ROBOT_EE_POSE), self.on_pose, common.SENSOR_QOS)
        self.create_subscription(JointState, topic(common.ROBOT_STATE), self.on_state, common.SENSOR_QOS)
        self.create_subscription(String, topic(common.OBJECT_POSES), self.on_objects, common.SENSOR_QOS)
        self.create_subscription(Float32, topic(common.REWARD), self.on_reward, common.COMMAND_QOS)
        self.create_subscription(String, topic(common.EPISODE_EVENT), self.on_event, common.EVENT_QOS)
        self.create_subscription(String, topic(common.ROBOT_SAFETY), self.on_safety, common.LATCHED_QOS)
        self.create_subscription(String, topic(common.ROBOT_EXECUTED), self.on_executed, common.COMMAND_QOS)
        # Images feed image policies and, for every policy, the episode thumbnail on the operator page.
        self.create_subscription(Image, topic(common.CAMERA_IMAGE), self.on_image, common.SENSOR_QOS)

    def arm_topic(self, name: str) -> str:
        """`name` in this node's arm's namespace (relative, so below the node's namespace)."""
        return f"{self.arm}/{name}" if self.arm else name

    def start_acting(self, tick: bool = True) -> None:
        """Publish actions (robot/action), their timing and, in lockstep, the step being computed; tick
        (unless `tick` is False: a learner acting for several arms ticks them together, batched)."""
        self.action_pub = self.create_publisher(Float32MultiArray, self.arm_topic(common.ROBOT_ACTION), common.COMMAND_QOS)
        self.timing_pub = self.create_publisher(String, self.arm_topic(common.LEARNER_TIMING), common.COMMAND_QOS)
        self.acting_pub = self.create_publisher(String, self.arm_topic(common.LEARNER_ACTING), common.COMMAND_QOS)
        if tick:
            self.create_timer(1.0 / self.cfg.control.rate_hz, self.on_control_tick)
            if self.await_execution:  # same (mutually exclusive) callback group as the tick: never two at once
                common.wall_timer(self, FIRST_STEP_GUARD_S / 3, self.guard_first_step)
        common.wall_timer(self, 1.0, self.check_other_acting_nodes)

    def check_other_acting_nodes(self) -> None:
        """Two acting nodes would interleave their actions on the arm (the learner side launched with
        acting:=learner, the robot side with acting:=robot): while another one publishes, this one does not act."""
        topic = self.resolve_topic_name(self.arm_topic(common.ROBOT_ACTION))
        publishers = {info.node_name for info in self.get_publishers_info_by_topic(topic)}
        others = sorted({name for name in publishers if is_acting_node_name(name)} - {self.get_name()})
        if others and others != self.other_acting_nodes:
            self.get_logger().error(
                f"{' and '.join(others)} also publishes {topic}: not acting, so that the arm never gets two "
                "policies' actions. Launch both hosts with the same acting:= (learner or robot)")
            self.warning = f"not acting: {' and '.join(others)} acts too (acting:= differs between the hosts)"
        elif not others and self.other_acting_nodes:
            self.get_logger().info(f"no other acting node on {topic} any more: acting")
            self.warning = ""
        self.other_acting_nodes = others

    # ----- what subclasses decide ------------------------------------------------------------
    def ready_to_act(self) -> bool:
        return True

    def compute_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def acted(self, obs: dict[str, np.ndarray], action: np.ndarray) -> None:
        """The step's action is computed (and about to be published)."""

    def on_step_executed(self, step: int, report: dict) -> None:
        """The control node's robot/executed report for `step`."""

    def handle_event(self, kind: str, event: dict) -> None:
        if kind == "start":
            self.begin_episode(int(event.get("episode", 0)))
        elif kind in ("end", "aborted", "discarded"):
            self.running_episode = None

    def begin_episode(self, episode: int) -> None:
        self.running_episode = episode
        self.step = 0
        self.unexecuted_step, self.deferred_ticks = None, 0
        self.first_step_due_since = time.monotonic()

    def guard_first_step(self) -> None:
        """Lockstep: tick once more when step 0 is still due `FIRST_STEP_GUARD_S` after "start" (the
        episode's first tick came before "start" was handled; see FIRST_STEP_GUARD_S)."""
        due_since = self.first_step_due_since
        if due_since is None or time.monotonic() - due_since < FIRST_STEP_GUARD_S:
            return
        if self.running_episode is None or self.step > 0:
            self.first_step_due_since = None
            return
        if self.unexecuted_step is None:
            self.first_step_due_since = time.monotonic()  # stale inputs: try again a guard period later
            self.on_control_tick()

    # ----- sensors ---------------------------------------------------------------------------
    def on_pose(self, msg: PoseStamped) -> None:
        self.input_times["robot/ee_pose"] = time.monotonic()
        p = msg.pose.position
        self.ee_position = np.array([p.x, p.y, p.z])

    def on_state(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self.gripper_open = msg.position[list(msg.name).index("gripper")] > 0.5

    def on_objects(self, msg: String) -> None:
        poses = decode_object_poses(msg.data)
        position = None if poses is None else poses.positions.get(self.cfg.reward.object_name)
        if position is None:
            return
        self.object_position = np.asarray(position, float)
        # Judged by the stamp of the image (sim: the step) the poses come from, on this node's clock.
        self.poses_stamp = poses.stamp if poses.stamp is not None else None
        self.input_times["objects/poses"] = time.monotonic()
        self.arrival_wall["objects/poses"] = time.time()

    def on_image(self, msg: Image) -> None:
        image = common.rgb_image_from_message(msg)
        if image is None:
            self.get_logger().warning(f"ignoring image with encoding {msg.encoding} and {len(msg.data)} bytes")
            return
        self.image = image
        self.image_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.arrival_wall["camera/image_raw"] = time.time()

    def on_reward(self, msg: Float32) -> None:
        self.latest_reward = float(msg.data)

    def stale_inputs(self) -> list[str]:
        """Inputs the policy needs that are older than `learner.max_observation_age_s` (or missing),
        each with its age. The image is judged by its capture stamp (header.stamp) against this
        node's clock, so a frame that waited in a driver queue or on the wire counts as old (and one
        stamped in the future means unsynchronized clocks); object poses by their arrival.
        The robot pose comes only when the arm moves, so it is not required to be fresh."""
        limit = self.cfg.learner.max_observation_age_s
        if self.poses_stamp is not None:
            poses_age = common.node_seconds(self) - self.poses_stamp
            judged = " by its stamp"
        else:
            poses_age, judged = time.monotonic() - self.input_times.get("objects/poses", -np.inf), ""
        stale = [] if abs(poses_age) <= limit else [f"objects/poses ({age_text(poses_age, judged)})"]
        if self.cfg.learner.observation == "image":
            image_age = np.inf if self.image_stamp is None else self.get_clock().now().nanoseconds * 1e-9 - self.image_stamp
            if abs(image_age) > limit:
                stale.append(f"camera/image_raw ({age_text(image_age, ' by its capture stamp')})")
        return stale

    def observation(self) -> dict[str, np.ndarray] | None:
        if self.ee_position is None or self.gripper_open is None or self.object_position is None:
            return None
        obs = {"state": state_vector(self.ee_position, self.gripper_open, self.object_position)}
        if self.cfg.learner.observation == "image":
            if self.image is None:
                return None
            obs["image"] = self.image
        return obs

    # ----- episodes, safety, execution reports -----------------------------------------------
    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is not None:
            self.handle_event(event["type"], event)

    def on_executed(self, msg: String) -> None:
        report = common.parse_json_object(msg) or {}
        step = report.get("step")
        if not isinstance(step, int):
            return
        self.on_step_executed(step, report)
        if self.unexecuted_step is not None and step >= self.unexecuted_step:
            self.unexecuted_step = None
            if self.deferred_ticks:  # the step's time already came: act now
                self.deferred_ticks = 0
                self.on_control_tick()

    def on_safety(self, msg: String) -> None:
        safety = common.parse_json_object(msg) or {}
        held = list(safety.get("reasons") or []) if safety.get("state") == "held" else []
        if held and not self.safety_held:
            self.get_logger().warning(f"arm held ({', '.join(held)}): not acting")
        if held:
            self.warning = f"not acting: the arm is held ({', '.join(held)})"
        elif self.safety_held and self.warning.startswith("not acting: the arm is held"):
            self.warning = ""
        self.safety_held = held

    # ----- the tick --------------------------------------------------------------------------
    def on_control_tick(self) -> None:
        prepared = self.prepare_tick()
        if prepared is not None:
            obs, tick_wall, tick_start = prepared
            self.publish_action(obs, self.compute_action(obs), tick_wall, tick_start)

    def prepare_tick(self) -> tuple[dict[str, np.ndarray], float, float] | None:
        """This tick's observation (with the tick's wall time and start counter) when the node acts now;
        None when it does not (no episode, held, deferred in lockstep, stale inputs: then it says why)."""
        if self.running_episode is None or self.safety_held or self.other_acting_nodes or not self.ready_to_act():
            return None
        if self.step >= self.cfg.control.max_episode_steps:  # the episode is over; its "end" is on the way
            return None
        if self.unexecuted_step is not None:
            self.deferred_ticks += 1
            if self.deferred_ticks <= MAX_DEFERRED_TICKS:
                return None  # acted on when the report comes
            self.get_logger().warning(f"no robot/executed report for step {self.unexecuted_step}: acting without it")
            self.unexecuted_step, self.deferred_ticks = None, 0
        tick_wall, tick_start = time.time(), time.perf_counter()
        stale = self.stale_inputs()
        obs = None if stale else self.observation()
        if obs is None:
            # Never act on old data: without actions the control node's watchdog holds the arm.
            now = time.monotonic()
            if self.stale_since is None:
                self.stale_since = now
                self.get_logger().warning(f"not acting: no fresh {', '.join(stale) or 'observation'}; the arm holds")
            if now - self.stale_since > 1.0:
                self.warning = f"not acting: no fresh {', '.join(stale) or 'observation'} for {now - self.stale_since:.0f} s (camera lost?)"
            return None
        if self.stale_since is not None:
            self.get_logger().info("inputs fresh again: acting")
            self.stale_since = None
            if self.warning.startswith("not acting"):
                self.warning = ""
        if self.await_execution:  # in lockstep sim, time waits for this step's action (parl_robot/sim/lockstep.py)
            self.acting_pub.publish(String(data=json.dumps({"episode": self.running_episode, "step": self.step})))
        return obs, tick_wall, tick_start

    def publish_action(self, obs: dict[str, np.ndarray], action: np.ndarray, tick_wall: float, tick_start: float) -> None:
        """The step's action to the arm, with its timing record; the next step is due."""
        self.acted(obs, action)
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="action", size=7, stride=7)]
        msg.layout.data_offset = self.step
        msg.data = action.tolist()
        self.action_pub.publish(msg)
        if self.await_execution:
            self.unexecuted_step = self.step
        # Per-step timing for benchmarks/control_loop.py and for "why is my loop slow" questions.
        self.timing_pub.publish(String(data=json.dumps({
            "step": self.step, "tick_time": tick_wall, "compute_ms": round((time.perf_counter() - tick_start) * 1e3, 3),
            "image_stamp": self.image_stamp if self.cfg.learner.observation == "image" else None,
            # The capture stamp of what the action was computed from: the image, or the image the
            # object poses were detected in (state policies; None where the poses carry no stamp).
            "observation_stamp": self.image_stamp if self.cfg.learner.observation == "image" else self.poses_stamp,
            # When it arrived here (wall clock): minus the stamp, its way from the camera to this node.
            "observation_arrival": self.arrival_wall.get(
                "camera/image_raw" if self.cfg.learner.observation == "image" else "objects/poses"),
        })))
        self.step += 1
