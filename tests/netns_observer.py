"""Records, with wall-clock times, what the robot side sees: run inside a network namespace by
tests/test_multi_host.py and benchmarks/acting_latency.py (`python tests/netns_observer.py OUT.jsonl`),
stopped with SIGINT/SIGTERM. Actions are recorded by their step index (`data: {"step": k}`)."""

import json
import signal
import sys
import time

import rclpy
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float32MultiArray, String

from parl_robot.nodes import common


def main(path: str) -> None:
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("netns_observer", namespace=common.NAMESPACE)
    out = open(path, "a", buffering=1)

    def record(topic):
        return lambda msg: out.write(json.dumps({"t": time.time(), "topic": topic, "data": json.loads(msg.data)}) + "\n")

    node.create_subscription(String, common.ROBOT_EXECUTED, record(common.ROBOT_EXECUTED), common.COMMAND_QOS)
    node.create_subscription(String, common.ROBOT_STATUS, record(common.ROBOT_STATUS), common.EVENT_QOS)
    node.create_subscription(String, common.EPISODE_STATE, record(common.EPISODE_STATE), common.LATCHED_QOS)
    node.create_subscription(String, common.LEARNER_TIMING, record(common.LEARNER_TIMING), common.COMMAND_QOS)
    node.create_subscription(
        Float32MultiArray, common.ROBOT_ACTION, lambda msg: out.write(json.dumps(
            {"t": time.time(), "topic": common.ROBOT_ACTION, "data": {"step": msg.layout.data_offset}}) + "\n"),
        common.COMMAND_QOS)
    running = [True]
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: running.__setitem__(0, False))
    while running[0]:
        rclpy.spin_once(node, timeout_sec=0.05)
    out.close()
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
