"""Shared pieces of the thin rclpy nodes: config parameters, event messages, QoS, entry points."""

from __future__ import annotations

import json
import sys
import time
from typing import Callable

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from parl_robot.config import TaskConfig, load_config

NAMESPACE = "parl"

# Topic and service names, relative to the namespace (see docs/topics.md).
CAMERA_IMAGE = "camera/image_raw"
ROBOT_STATE = "robot/state"
ROBOT_EE_POSE = "robot/ee_pose"
ROBOT_ACTION = "robot/action"
ROBOT_STATUS = "robot/status"
OBJECT_POSES = "objects/poses"
REWARD = "reward"
REWARD_SUCCESS = "reward/success"
EPISODE_EVENT = "episode/event"
LEARNER_STATS = "learner/stats"
LEARNER_TIMING = "learner/timing"  # JSON per action: step, tick_time, compute_ms, image_stamp
SRV_ESTOP = "robot/estop"
SRV_ESTOP_CLEAR = "robot/estop_clear"
SRV_HOME = "robot/home"
SRV_REBOOT_MOTORS = "robot/reboot_motors"
SRV_SIM_RESET = "sim/reset"

CAMERA_FRAME_ID = "third_person_camera"

SENSOR_QOS = QoSProfile(depth=2, reliability=QoSReliabilityPolicy.BEST_EFFORT)
COMMAND_QOS = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)
EVENT_QOS = QoSProfile(depth=50, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE)


def declare_task_config(node: Node) -> TaskConfig:
    """Every node takes the same parameters and builds the same validated TaskConfig from them."""
    task = node.declare_parameter("task", "cup_to_rack").value
    config_path = node.declare_parameter("config", "").value
    overlay = node.declare_parameter("overlay", "").value
    policy = node.declare_parameter("policy", "").value
    store_dir = node.declare_parameter("store_dir", "").value
    overrides_json = node.declare_parameter("overrides", "").value
    overrides = json.loads(overrides_json) if overrides_json else {}
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
    """The (H, W, 3) uint8 frame of an rgb8 image message; None for any other encoding or size."""
    if msg.encoding != "rgb8" or len(msg.data) != msg.height * msg.width * 3:
        return None
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)


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


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Standard entry point: init, spin until shutdown or the node asks to exit, clean up."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    exit_code = 0
    try:
        node = factory()
        while rclpy.ok() and getattr(node, "exit_code", None) is None:
            rclpy.spin_once(node, timeout_sec=0.1)
        exit_code = getattr(node, "exit_code", None) or 0
    except KeyboardInterrupt:
        exit_code = 0
    except Exception as err:  # report why the node died; the launcher stops the graph
        print(f"fatal: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return exit_code
