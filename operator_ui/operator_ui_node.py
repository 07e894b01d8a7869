"""The operator page's rclpy bridge: subscribes to what the page shows, publishes its commands.

Runs the ROS executor in a background thread and the Flask server (werkzeug, threaded) in the
main thread. At shutdown no thread is left inside rclpy when the process exits: request threads
pass a `RosCallGate` that closes first and waits for them, then the spinner is joined, and only
then is the node destroyed (a thread still in rclpy's C++ at interpreter exit aborts the process
with "terminate called without an active exception"). Parameters: the shared task-config parameters, plus `port` (0 = `ui.port`) and
`host` ("" = `ui.host`). The token comes from `ui.token` or the `PARL_UI_TOKEN` environment variable.
E-stop calls the control node's `robot/estop` service directly, so it works without the learner;
Home and Reboot motors call `robot/home` and `robot/reboot_motors` (std_srvs/Trigger) the same way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float32, Float32MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger
from werkzeug.serving import make_server

from operator_ui.app import ApiError, create_app
from operator_ui.state import OperatorState
from parl_robot.data.episode_store import EpisodeStore
from parl_robot.nodes import common

SERVICES = (common.SRV_ESTOP, common.SRV_ESTOP_CLEAR, common.SRV_HOME, common.SRV_REBOOT_MOTORS)


def _when_parsed(parse, handler):
    """Subscription callback: parse the message and hand the result on, unless it was rejected (None)."""

    def callback(msg) -> None:
        value = parse(msg)
        if value is not None:
            handler(value)

    return callback


class RosCallGate:
    """Request threads enter rclpy through `passage()`; `close()` refuses new entries and waits for those inside."""

    def __init__(self):
        self._condition = threading.Condition()
        self._inside = 0
        self.closed = False

    @contextmanager
    def passage(self) -> Iterator[None]:
        with self._condition:
            if self.closed:
                raise ApiError(503, "the operator page is shutting down")
            self._inside += 1
        try:
            yield
        finally:
            with self._condition:
                self._inside -= 1
                self._condition.notify_all()

    def close(self, timeout_s: float) -> bool:
        """Close the gate; True when every request thread has left rclpy within `timeout_s`."""
        with self._condition:
            self.closed = True
            return self._condition.wait_for(lambda: self._inside == 0, timeout_s)


def parse_arm_pages(text: str) -> dict[str, int]:
    """The `arm_pages` parameter: a JSON object of arm name -> page port ('' for a one-arm graph)."""
    if not text:
        return {}
    try:
        pages = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"parameter arm_pages must be a JSON object of arm -> port, got {text!r} ({err})") from None
    if not isinstance(pages, dict) or not all(
            isinstance(arm, str) and isinstance(port, int) and not isinstance(port, bool) and 0 < port <= 65535
            for arm, port in pages.items()):
        raise ValueError(f"parameter arm_pages must map each arm's name to its page port (1..65535), got {text!r}")
    return pages


class OperatorBridgeNode(Node):
    def __init__(self):
        super().__init__("operator_ui")
        self.cfg = common.declare_task_config(self)
        # Launch arguments arrive as strings; "0" means "take ui.port from the config".
        port_text = str(self.declare_parameter("port", "0").value)
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ValueError(f"parameter port must be an integer in 0..65535, got {port_text!r}")
        self.port = int(port_text) or self.cfg.ui.port
        self.host = str(self.declare_parameter("host", "").value) or self.cfg.ui.host
        # Several arms (arms:=N): every arm's page port, {"arm0": 8080, "arm1": 8081}, for links between the pages.
        self.arm_pages = parse_arm_pages(str(self.declare_parameter("arm_pages", "").value))
        self.token = os.environ.get("PARL_UI_TOKEN", "") or self.cfg.ui.token
        self.state = OperatorState(self.cfg.task.name, self.cfg.task.instruction, self.cfg.control.max_episode_steps)
        self.event_pub = self.create_publisher(String, common.EPISODE_EVENT, common.EVENT_QOS)
        self.teleop_pub = self.create_publisher(Float32MultiArray, common.TELEOP_ACTION, common.COMMAND_QOS)
        self.create_subscription(String, common.EPISODE_EVENT, _when_parsed(common.parse_event, self.state.on_event),
                                 common.EVENT_QOS)
        self.create_subscription(String, common.LEARNER_STATS, _when_parsed(common.parse_json_object, self.state.on_stats),
                                 common.EVENT_QOS)
        self.create_subscription(String, common.ROBOT_STATUS, _when_parsed(common.parse_json_object, self.state.on_status),
                                 common.EVENT_QOS)
        self.create_subscription(Float32, common.REWARD, lambda m: self.state.on_reward(m.data), common.COMMAND_QOS)
        self.create_subscription(Bool, common.REWARD_SUCCESS, lambda m: self.state.on_success(m.data), common.COMMAND_QOS)
        self.create_subscription(Float32MultiArray, common.ROBOT_ACTION,
                                 lambda m: self.state.on_action(m.layout.data_offset), common.COMMAND_QOS)
        self.create_subscription(String, common.CAMERA_STATUS,
                                 _when_parsed(common.parse_json_object, self.state.on_camera_status), common.EVENT_QOS)
        self.create_subscription(Image, common.CAMERA_IMAGE, self.on_image, common.SENSOR_QOS)
        # Latched: a page (re)started mid-run shows the current state and why the run is held.
        self.create_subscription(String, common.ROBOT_SAFETY, _when_parsed(common.parse_json_object, self.state.on_safety),
                                 common.LATCHED_QOS)
        self.create_subscription(String, common.REWARD_CLASSIFIER,
                                 _when_parsed(common.parse_json_object, self.state.on_classifier), common.LATCHED_QOS)
        self.create_subscription(String, common.REWARD_DETECTOR,
                                 _when_parsed(common.parse_json_object, self.state.on_reward_detector), common.LATCHED_QOS)
        self.create_subscription(String, common.EPISODE_STATE,
                                 _when_parsed(common.parse_json_object, self.state.on_episode_state), common.LATCHED_QOS)
        self.clients_by_name = {name: self.create_client(Trigger, name) for name in SERVICES}
        self.gate = RosCallGate()

    def on_image(self, msg: Image) -> None:
        """Frames with the age of their capture stamp, so the page can tell a stale camera."""
        rgb = common.rgb_image_from_message(msg)
        if rgb is not None:
            stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            self.state.on_image(rgb, (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9)

    # ----- GraphCommands (called from request threads) ---------------------------------------
    def publish_event(self, kind: str, **fields) -> None:
        with self.gate.passage():
            self.event_pub.publish(common.event_message(kind, **fields))

    def publish_teleop(self, action: list[float], takeover: bool) -> None:
        message = Float32MultiArray(data=action)
        message.layout.dim = [MultiArrayDimension(label="takeover" if takeover else "release", size=7, stride=7)]
        with self.gate.passage():
            self.teleop_pub.publish(message)

    def call_service(self, name: str, timeout_s: float = 3.0) -> tuple[bool, str]:
        client = self.clients_by_name.get(name)
        if client is None:
            return False, f"unknown service {name}"
        with self.gate.passage():
            if not client.wait_for_service(timeout_sec=min(timeout_s, 1.0)):
                return False, f"service {client.srv_name} is not available (is the control node running?)"
            done = threading.Event()
            future = client.call_async(Trigger.Request())
            future.add_done_callback(lambda _: done.set())
        # Wait outside the gate (the spinner completes the future), but give up when the page shuts down.
        deadline = time.monotonic() + timeout_s
        while not done.wait(0.05):
            if self.gate.closed or time.monotonic() > deadline:
                future.cancel()
                if self.gate.closed:
                    return False, "the operator page is shutting down"
                return False, f"service {client.srv_name} did not answer within {timeout_s:.0f} s"
        response = future.result()
        return bool(response.success), str(response.message)


def main(args=None) -> int:
    stop = common.STOP
    if stop.requested:
        return 0
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = OperatorBridgeNode()
    except (ValueError, OSError) as err:
        print(f"fatal: operator page cannot start: {err}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 1
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin() -> None:
        # Not executor.spin(): its shutdown does not wait for the spinning thread. This loop ends
        # when told to and is joined before the node is destroyed.
        try:
            while spinning.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass

    spinner = threading.Thread(target=spin, name="ros")
    spinner.start()

    def close_ros() -> None:
        if not node.gate.close(timeout_s=5.0):
            print("operator page: a request was still inside rclpy after 5 s", file=sys.stderr, flush=True)
        spinning.clear()
        spinner.join()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per poll
    try:
        # Several arms (arms:=N): this page serves the arm of its namespace (/parl/arm1 -> "arm1").
        arm = node.get_namespace().rstrip("/").rsplit("/", 1)[-1] if node.get_namespace().count("/") > 1 else ""
        app = create_app(node.state, node, EpisodeStore(node.cfg.episodes.store_dir), token=node.token, host=node.host,
                         arm=arm, arm_pages=node.arm_pages)
        server = make_server(node.host, node.port, app, threaded=True)
        server.daemon_threads = True  # open page connections do not keep the process alive at shutdown
    except (ValueError, OSError) as err:
        print(f"fatal: operator page cannot start: {err}", file=sys.stderr, flush=True)
        close_ros()
        return 1
    node.get_logger().info(f"operator page on http://{node.host}:{server.server_port}/" + ("  (token required)" if node.token else ""))

    def stop_server_on_signal() -> None:  # SIGINT/SIGTERM: end serve_forever from another thread
        while not stop.requested:
            time.sleep(0.1)
        server.shutdown()

    threading.Thread(target=stop_server_on_signal, name="stop", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
        close_ros()
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
