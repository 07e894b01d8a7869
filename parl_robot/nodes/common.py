"""Shared pieces of the thin rclpy nodes: config parameters, event messages, QoS, entry points."""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Callable

import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import String

from parl_robot.config import TaskConfig, load_config, parse_overrides
from parl_robot.nodes import STOP, StopRequest  # noqa: F401  (StopRequest: re-exported for the page node)
from parl_robot.topics import (  # noqa: F401  (the names, re-exported for the nodes beside their QoS)
    CAMERA_FRAME_ID,
    CAMERA_IMAGE,
    CAMERA_STATUS,
    EPISODE_EVENT,
    EPISODE_STATE,
    LEARNER_ACTING,
    LEARNER_STATS,
    LEARNER_TIMING,
    NAMESPACE,
    OBJECT_POSES,
    REWARD,
    REWARD_CLASSIFIER,
    REWARD_DETECTOR,
    REWARD_SCORE,
    REWARD_SUCCESS,
    ROBOT_ACTION,
    ROBOT_EE_POSE,
    ROBOT_SAFETY,
    ROBOT_STATE,
    ROBOT_STATUS,
    SRV_ESTOP,
    SRV_ESTOP_CLEAR,
    SRV_HOME,
    SRV_REBOOT_MOTORS,
    SRV_SIM_RESET,
    TELEOP_ACTION,
    TELEOP_JOY,
    ROBOT_EXECUTED,
    POLICY_WEIGHTS,
    ACTOR_STEPS,
)
from parl_robot.peers import PeerCheck
from parl_robot.rl.weight_transport import MAX_CHUNKS

SENSOR_QOS = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.BEST_EFFORT)
COMMAND_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
EVENT_QOS = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE)
CLOCK_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE)  # /clock (rclpy subscribes best effort)
# State that a late joiner (a restarted page or learner) must see at once: the last message is kept.
LATCHED_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
# Step records that must all arrive (actor/steps): reliable with a history deeper than an episode, so
# a receiver that stalls for seconds (the learner saving another arm's episode, a slow link) loses
# none; KEEP_LAST 10 dropped the first 10 steps of an episode behind such a stall.
STEPS_QOS = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE)
# Policy weights: the chunks of the newest version stay for a (re)started actor on the robot host.
WEIGHTS_QOS = QoSProfile(depth=MAX_CHUNKS, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def wall_timer(node: Node, period_s: float, callback, callback_group=None):
    """A timer on the steady wall clock, also when the node runs on sim time (`use_sim_time`):
    status, stats and supervision keep their wall-clock pace while the simulation is in lockstep."""
    return node.create_timer(period_s, callback, callback_group=callback_group, clock=Clock(clock_type=ClockType.STEADY_TIME))


def node_seconds(node: Node) -> float:
    """The node's ROS time in seconds (sim time under `use_sim_time`)."""
    return node.get_clock().now().nanoseconds * 1e-9


def uses_sim_time(node: Node) -> bool:
    return bool(node.get_parameter("use_sim_time").value)


def start_peer_check(node: Node, callback_group=None) -> PeerCheck | None:
    """Parameters `role` (all/robot/learner) and `peer_check_s`: on a split graph, log an error naming
    the other side's missing topics once `peer_check_s` passed without them, and again whenever they
    go missing or come back (checked every second from DDS discovery). None for role all."""
    role = node.declare_parameter("role", "all").value
    grace_s = float(node.declare_parameter("peer_check_s", 15.0).value)
    if role == "all" or grace_s <= 0:
        return None
    check = PeerCheck(role, grace_s, time.monotonic())

    def on_tick() -> None:
        report = check.update(time.monotonic(), node.count_publishers)
        if report is None:
            return
        level, text = report
        # rclpy ties a severity to each logging call site: one call per level.
        if level == "error":
            node.get_logger().error(text)
        else:
            node.get_logger().info(text)

    wall_timer(node, 1.0, on_tick, callback_group=callback_group)
    return check


def declare_task_config(node: Node) -> TaskConfig:
    """Every node takes the same parameters and builds the same validated TaskConfig from them."""
    task = node.declare_parameter("task", "cup_to_rack").value
    config_path = node.declare_parameter("config", "").value
    overlay = node.declare_parameter("overlay", "").value
    policy = node.declare_parameter("policy", "").value
    store_dir = node.declare_parameter("store_dir", "").value
    overrides = parse_overrides(node.declare_parameter("overrides", "").value)  # JSON or key=value items
    if policy:
        overrides["learner.policy"] = policy
    if store_dir:
        overrides["episodes.store_dir"] = store_dir
    return load_config(config_path or None, task=task, overrides=overrides, overlays=[overlay] if overlay else [])


def rgb_image_message(frame: np.ndarray, stamp) -> Image:
    """sensor_msgs/Image (rgb8) of an (H, W, 3) uint8 frame, as the real camera and the sim publish it."""
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = CAMERA_FRAME_ID
    msg.height, msg.width = frame.shape[:2]
    msg.encoding = "rgb8"
    msg.step = frame.shape[1] * 3
    msg.data = frame.tobytes()
    return msg


def rgb_image_from_message(msg: Image) -> np.ndarray | None:
    """The (H, W, 3) uint8 frame of an rgb8 image message (a writable copy: torch warns on read-only
    arrays); None for any other encoding or size."""
    if msg.encoding != "rgb8" or len(msg.data) != msg.height * msg.width * 3:
        return None
    return np.frombuffer(bytearray(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


def event_message(kind: str, **fields) -> String:
    return String(data=json.dumps({"type": kind, "time": time.time(), **fields}))


def parse_json_object(msg: String) -> dict | None:
    """The JSON object a String message carries (events, learner stats, robot status), or None."""
    try:
        value = json.loads(msg.data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def parse_event(msg: String) -> dict | None:
    event = parse_json_object(msg)
    return event if event is not None and isinstance(event.get("type"), str) else None


def run_node(factory: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """Standard entry point: init, spin until a stop signal, shutdown or the node asks to exit, clean up.
    The node's `extra_nodes` (if any) are spun and destroyed with it.

    Ctrl-C and SIGTERM end with the node's `close()` run while ROS is still up and exit code 0, with
    no traceback. `threads` > 1 spins a multi-threaded executor (nodes whose e-stop must be served
    while another callback blocks, e.g. a homing move)."""
    stop = STOP  # installed when parl_robot.nodes was imported, before any heavy import
    if stop.requested:
        return 0
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    executor = None
    exit_code = 0
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        for extra in getattr(node, "extra_nodes", ()):  # a process of several nodes (the learner of several arms)
            executor.add_node(extra)
        while rclpy.ok() and not stop.requested and getattr(node, "exit_code", None) is None:
            executor.spin_once(timeout_sec=0.1)
        exit_code = getattr(node, "exit_code", None) or 0
        if stop.requested:
            node.get_logger().info(f"{stop.signal_name}: shutting down")
    except (KeyboardInterrupt, ExternalShutdownException):
        exit_code = 0
    except Exception as err:  # report why the node died; the supervisor decides what follows
        print(f"fatal: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        if not isinstance(err, (ValueError, OSError, RuntimeError)):  # not a user-facing error: show where
            traceback.print_exc()
        exit_code = 1
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                try:
                    close()
                except Exception as err:  # noqa: BLE001  (cleanup must not hide the exit reason)
                    print(f"error while closing: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                    exit_code = exit_code or 1
            for each in [*getattr(node, "extra_nodes", ()), node]:
                try:
                    each.destroy_node()
                except Exception:  # noqa: BLE001  (the context may already be down: Interbotix shut it)
                    pass
        if rclpy.ok():
            rclpy.shutdown()
    return exit_code
