"""The control node as a real process on the emulated Interbotix API (`backend:=interbotix_emulated`):
start-up from the sleep pose, actions and e-stop from a foreign rclpy client, the latched safety
state, and Ctrl-C parking the arm before a clean exit (code 0, no traceback)."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("rclpy")
import rclpy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from graph_harness import isolated_ros_env  # noqa: E402
from parl_robot.nodes import common  # noqa: E402
from parl_robot.robot import widowx  # noqa: E402


class Client:
    def __init__(self, domain_id: int):
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_client", namespace=common.NAMESPACE, context=self.context)
        self.safety: list[dict] = []
        self.states: list[list[float]] = []
        self.node.create_subscription(String, common.ROBOT_SAFETY, lambda m: self.safety.append(json.loads(m.data)),
                                      common.LATCHED_QOS)
        self.node.create_subscription(JointState, common.ROBOT_STATE, lambda m: self.states.append(list(m.position)),
                                      common.SENSOR_QOS)
        self.actions = self.node.create_publisher(Float32MultiArray, common.ROBOT_ACTION, common.COMMAND_QOS)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.running = True
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.running:
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, name: str, timeout: float = 20.0):
        client = self.node.create_client(Trigger, name)
        assert client.wait_for_service(timeout_sec=timeout), f"{name} not offered"
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"{name} did not answer"
        return future.result()

    def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def test_control_node_estop_from_a_foreign_client_and_ctrl_c_parks_the_arm():
    domain_id, env = isolated_ros_env()
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "parl_robot.nodes.control_node", "--ros-args", "-r", "__ns:=/parl",
         "-p", "backend:=interbotix_emulated"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    client = Client(domain_id)
    try:
        # Start-up homed the arm from the sleep pose; the latched safety state reaches a late joiner.
        client.wait_for(lambda: client.safety and client.safety[-1].get("homed"), 60, "homed safety state")
        assert client.safety[-1]["state"] == "ok"
        neutral = client.states[-1][:6]
        assert abs(neutral[4] - widowx.SLEEP_JOINTS[4]) > 0.3  # it left the sleep pose
        for index in range(3):
            message = Float32MultiArray(data=[0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0])
            message.layout.data_offset = index
            client.actions.publish(message)
            time.sleep(0.2)
        assert client.call("robot/estop").success
        client.wait_for(lambda: client.safety[-1]["state"] == "held" and client.safety[-1]["reasons"] == ["estop"],
                        10, "held by e-stop")
        assert client.call("robot/estop_clear").success
        client.wait_for(lambda: client.safety[-1]["state"] == "ok", 10, "cleared")
        assert client.call("robot/home").success
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
            client.close()
    assert process.returncode == 0, output[-3000:]
    assert "Traceback" not in output and "Exception" not in output, output[-3000:]
    parked = [line for line in output.splitlines() if "arm parked in the sleep pose" in line]
    assert parked, output[-3000:]
    joints = json.loads(parked[-1].split("measured joints ")[1].rstrip(")"))
    assert max(abs(a - b) for a, b in zip(joints, widowx.SLEEP_JOINTS)) <= 0.03
