"""An intervention through `sensor_msgs/Joy` (a SpaceMouse or joystick driver) in the running sim graph,
over real processes: the operator takes over mid-episode, drives, releases; the stored episode holds
the operator's steps, flagged, with the actions the control node executed."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # real processes through an episode: `scripts/test.sh -m slow`

pytest.importorskip("rclpy")
from sensor_msgs.msg import Joy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from graph_harness import Graph  # noqa: E402
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY  # noqa: E402
from parl_robot.nodes import common  # noqa: E402

OVERRIDES = {
    "learner.schedule.warmup_episodes": 2,
    "learner.schedule.offline_policy_steps": 20,
    "learner.schedule.offline_critic_steps": 10,
    "control.max_episode_steps": 40,
    "episodes.num_online_episodes": 1,
}
PUSH_X = [0.8, 0.0, 0.0, 0.0, 0.0, 0.0]  # axis 0 = dx (teleop.joy_axes default), past the dead-band


def test_joy_takeover_drives_the_arm_and_the_episode_stores_the_operators_steps(tmp_path):
    graph = Graph(tmp_path, OVERRIDES)
    executed: list[dict] = []
    node = graph.observer.node
    node.create_subscription(String, common.ROBOT_EXECUTED, lambda m: executed.append(common.parse_json_object(m)),
                             common.COMMAND_QOS)
    joy_pub = node.create_publisher(Joy, common.TELEOP_JOY, 10)

    def joy(axes, takeover_pressed: bool) -> None:
        message = Joy()
        message.header.stamp = node.get_clock().now().to_msg()
        message.axes = [float(v) for v in axes]
        message.buttons = [0, int(takeover_pressed)]  # teleop.takeover_button = 1
        joy_pub.publish(message)

    def stream(axes, seconds: float, press_first: bool = False) -> None:
        """Joy at 20 Hz for `seconds`, as a driver does; the first message presses take-over if asked."""
        end = time.monotonic() + seconds
        first = True
        while time.monotonic() < end:
            joy(axes, press_first and first)
            first = False
            time.sleep(0.05)

    try:
        for name in ("sim_bridge", "reward_detector", "learner", "episode_manager"):
            graph.start(name)
        graph.wait_for(lambda: graph.observer.state() == "running" and len(executed) >= 3, 180, "an episode running")
        stream([0.0] * 6, 0.3)  # the driver is up: button released
        stream(PUSH_X, 0.3, press_first=True)
        graph.wait_for(lambda: any(e.get("source") == "intervention" for e in executed), 60,
                       "an intervention step executed")
        stream(PUSH_X, 1.0)
        stream([0.0] * 6, 0.2, press_first=True)  # release: the policy acts again
        stream([0.0] * 6, 0.3)
        graph.wait_for(lambda: any(r["kind"] == "online" for r in graph.store.records()), 180, "the episode stored")
    finally:
        graph.close()

    operator_steps = [e for e in executed if e.get("source") == "intervention" and e.get("action") is not None]
    assert operator_steps, executed[-5:]
    # The operator's x push, scaled and clipped by the control node, is what the arm executed.
    assert all(step["action"][0] > 0.5 and abs(step["action"][1]) < 1e-6 for step in operator_steps
               if np.any(np.abs(step["action"][:6]) > 0)), operator_steps
    record = next(r for r in graph.store.records() if r["kind"] == "online")
    _, episode = graph.store.load_episode(record["episode_id"])
    flagged = np.flatnonzero(episode.sources == SOURCE_INTERVENTION)
    assert record["intervention_steps"] == len(flagged) > 0
    assert np.any(episode.sources == SOURCE_POLICY)  # the policy acted before and after
    by_step = {e["step"]: e for e in operator_steps}
    for step in flagged:  # the stored action is the one the control node executed for the operator
        if step in by_step:
            np.testing.assert_allclose(episode.actions[step], by_step[step]["action"], atol=1e-5)
