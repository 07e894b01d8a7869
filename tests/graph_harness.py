"""Helpers for tests that run the node graph as real processes over Fast DDS."""

import io
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time

import rclpy
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rosgraph_msgs.msg import Clock
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Float32, Float32MultiArray, String

from parl_robot.config import load_config
from parl_robot.data.episode_store import EpisodeStore
from parl_robot.graph import finetune_graph
from parl_robot.launcher import start_node, stop_nodes
from parl_robot.nodes import common
from parl_robot.sim.record_demos import record_demos


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_launch(launcher, deadline: float, until=lambda: False, poll_s: float = 0.1) -> None:
    """Wait until `until()` holds, the launcher exits or the monotonic `deadline` passes, whichever is
    first; never longer (a test of a run that stalls must fail, not hang the suite)."""
    while launcher.poll() is None and not until() and time.monotonic() < deadline:
        time.sleep(poll_s)


def stop_launch(launcher, grace_s: float = 60.0) -> None:
    """End a `parl-robot launch` process the way an operator does: Ctrl-C (SIGINT), which stops its
    nodes (each in its own session); SIGKILL only if it has not exited after `grace_s`, since a killed
    launcher would leave its nodes running."""
    if launcher.poll() is not None:
        return
    launcher.send_signal(signal.SIGINT)
    try:
        launcher.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait(timeout=10)


def isolated_ros_env() -> tuple[int, dict]:
    """A random ROS_DOMAIN_ID on localhost only, so parallel test runs never hear each other."""
    domain_id = random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return domain_id, env


class Observer:
    """A node in the test process that records what crosses the graph."""

    def __init__(self, domain_id: int):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_observer", namespace=common.NAMESPACE, context=self.context)
        self.action_times: list[tuple[float, int]] = []
        self.action_sim_times: list[tuple[float, int]] = []  # ROS time (/clock in lockstep) of each action
        self.sim_time: float | None = None
        self.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.rewards: list[float] = []
        self.stats: list[dict] = []
        self.status: list[dict] = []
        self.node.create_subscription(Float32MultiArray, common.ROBOT_ACTION, self._on_action, common.COMMAND_QOS)
        self.node.create_subscription(Float32, common.REWARD, lambda m: self.rewards.append(m.data), common.COMMAND_QOS)
        self.node.create_subscription(String, common.LEARNER_STATS, lambda m: self.stats.append(json.loads(m.data)), common.EVENT_QOS)
        self.node.create_subscription(String, common.ROBOT_STATUS, lambda m: self.status.append(json.loads(m.data)), common.EVENT_QOS)
        self.events: list[dict] = []
        self.malformed_actions: list[list[float]] = []
        self.node.create_subscription(String, common.EPISODE_EVENT, lambda m: self.events.append(json.loads(m.data)), common.EVENT_QOS)
        self.action_pub = self.node.create_publisher(Float32MultiArray, common.ROBOT_ACTION, common.COMMAND_QOS)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.running = True
        self.thread.start()

    def _on_action(self, msg):
        if len(msg.data) != 7:  # recorded, not asserted here: an assert would kill the spin thread
            self.malformed_actions.append(list(msg.data))
            return
        self.action_times.append((time.monotonic(), msg.layout.data_offset))
        if self.sim_time is not None:
            self.action_sim_times.append((self.sim_time, msg.layout.data_offset))

    def _on_clock(self, msg):
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _spin(self):
        while self.running and self.context.ok():
            self.executor.spin_once(timeout_sec=0.1)

    def wait_for(self, condition, timeout: float, what: str, log=lambda: ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()[-3000:]}")

    def latest_status(self) -> dict:
        return self.status[-1] if self.status else {}

    def state(self) -> str | None:
        states = [e.get("state") for e in self.events if "state" in e]
        return states[-1] if states else None

    def set_parameter(self, node_name: str, name: str, value: bool) -> None:
        """Set a bool parameter of a running node through its `set_parameters` service."""
        client = self.node.create_client(SetParameters, f"/{common.NAMESPACE}/{node_name}/set_parameters")
        assert client.wait_for_service(timeout_sec=10.0), f"{node_name} has no parameter service"
        request = SetParameters.Request(parameters=[Parameter(
            name=name, value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value))])
        future = client.call_async(request)
        deadline = time.monotonic() + 5.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.done() and future.result().results[0].successful, f"setting {node_name}.{name} failed"

    def call_trigger(self, name: str, timeout: float = 10.0):
        """Call a std_srvs/Trigger service of the graph (relative name) and return the response."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not offered"
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"service {name} did not answer within {timeout:.0f} s"
        return future.result()

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class Graph:
    """The cup_to_rack sim finetune graph (cpu_demo profile, 3 recorded demos) as processes, each
    started (and restartable) by name, with one shared log and an observer node."""

    def __init__(self, tmp_path, overrides: dict, ui_port: int = 0, demos: int = 3):
        self.store_dir = tmp_path / "store"
        cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides={"episodes.store_dir": str(self.store_dir)})
        self.cfg = cfg
        self.store = EpisodeStore(self.store_dir)
        record_demos(cfg, self.store, demos, log=lambda *_: None)
        arguments = {"task": "cup_to_rack", "sim": "true", "overlay": "cpu_demo", "store_dir": str(self.store_dir),
                     "overrides": json.dumps(overrides), "ui_port": str(ui_port)}
        self.specs = {spec.name: spec for spec in finetune_graph(arguments)}
        self.domain_id, self.env = isolated_ros_env()
        self.log, self.lock = io.StringIO(), threading.Lock()
        self.nodes = {}
        self.observer = Observer(self.domain_id)

    def start(self, name: str) -> None:
        self.nodes[name] = start_node(self.specs[name], len(self.nodes), self.env, self.log, self.lock, colour=False)

    def kill(self, name: str) -> None:
        os.killpg(self.nodes[name].process.pid, signal.SIGKILL)
        self.nodes[name].process.wait(timeout=10)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        self.observer.wait_for(condition, timeout, what, log=self.log.getvalue)

    def close(self) -> None:
        stop_nodes(list(self.nodes.values()))
        self.observer.close()
