"""An intervention through `sensor_msgs/Joy` (a SpaceMouse or joystick driver) in the running sim graph,
over real processes: the operator takes over mid-episode, drives, releases; the stored episode holds
the operator's steps, flagged, with the actions the control node executed."""

import threading
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
    "episodes.num_online_episodes": 3,
}
PUSH_X = [0.8, 0.0, 0.0, 0.0, 0.0, 0.0]  # axis 0 = dx (teleop.joy_axes default), past the dead-band


class JoyDriver:
    """A joystick driver: `sensor_msgs/Joy` at 20 Hz from a thread, with the axes and the take-over
    button the test sets (a press is held for a few messages, as a finger is)."""

    def __init__(self, node):
        self.node, self.publisher = node, node.create_publisher(Joy, common.TELEOP_JOY, 10)
        self.axes, self.presses_left = [0.0] * 6, 0
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def press_takeover(self) -> None:
        self.presses_left = 6

    def _run(self) -> None:
        while self.running:
            message = Joy()
            message.header.stamp = self.node.get_clock().now().to_msg()
            message.axes = [float(v) for v in self.axes]
            message.buttons = [0, int(self.presses_left > 0)]  # teleop.takeover_button = 1
            self.presses_left = max(self.presses_left - 1, 0)
            self.publisher.publish(message)
            time.sleep(0.05)

    def close(self) -> None:
        self.running = False
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)


def _wait_while_progressing(graph, executed: list, condition, what: str, idle_s: float = 120.0) -> None:
    """Wait for `condition` while the run makes progress: a new executed step or new learner updates
    within `idle_s` (a busy machine slows both down; a stalled run fails)."""
    def progress() -> tuple:
        stats = graph.observer.stats[-1] if graph.observer.stats else {}
        return len(executed), stats.get("warmup_critic_updates"), stats.get("critic_updates_online")

    seen = progress()
    while True:
        before = seen
        try:
            graph.wait_for(lambda: condition() or progress() != before, idle_s, what)
        except AssertionError as err:
            raise AssertionError(f"no progress for {idle_s:.0f} s: {err}") from None
        if condition():
            return
        seen = progress()


def test_joy_takeover_drives_the_arm_and_the_episode_stores_the_operators_steps(tmp_path):
    graph = Graph(tmp_path, OVERRIDES)
    executed: list[dict] = []
    graph.observer.node.create_subscription(String, common.ROBOT_EXECUTED,
                                            lambda m: executed.append(common.parse_json_object(m)), common.COMMAND_QOS)
    driver = JoyDriver(graph.observer.node)
    try:
        for name in ("sim_bridge", "reward_detector", "learner", "episode_manager"):
            graph.start(name)
        graph.wait_for(lambda: graph.observer.state() == "running" and len(executed) >= 3, 180, "an episode running")
        # The driver starts once the graph runs. A stream started before the graph also worked in 2 of 3
        # runs after teleop got its own reliable callback group; the failing run is not explained yet
        # (closing note, session 14), so this test does not depend on it.
        driver.start()
        time.sleep(0.5)
        driver.axes = PUSH_X
        driver.press_takeover()
        # Steps that leave the arm's reach are refused (source "held"), and the episode may end into the
        # critic's catch-up before five are executed: the take-over stays on, so the next episode's steps
        # count too. Wait as long as the run makes progress (steps executed, catch-up updates).
        _wait_while_progressing(graph, executed, lambda: sum(e.get("source") == "intervention" for e in executed) >= 5,
                                "intervention steps executed")
        driver.axes = [0.0] * 6
        time.sleep(0.5)
        driver.press_takeover()  # release: the policy acts again
        # The release can fall into the critic's catch-up (150 updates, minutes on a loaded machine): wait
        # while the run makes progress, not for a fixed time.
        _wait_while_progressing(graph, executed, lambda: executed[-1].get("source") == "policy", "the policy acting again")
        _wait_while_progressing(graph, executed, lambda: graph.nodes["episode_manager"].process.poll() is not None,
                                "the run to finish")
    finally:
        driver.close()
        graph.close()

    operator_steps = [e for e in executed if e.get("source") == "intervention" and e.get("action") is not None]
    pushing = [e for e in operator_steps if abs(e["action"][0]) > 0]
    assert pushing, executed[-5:]
    # The operator's x push, scaled and clipped by the control node, is what the arm executed.
    assert all(e["action"][0] > 0.5 and abs(e["action"][1]) < 1e-6 for e in pushing), pushing
    records = [r for r in graph.store.records() if r["kind"] == "online"]
    with_interventions = [r for r in records if r["intervention_steps"] > 0]
    assert with_interventions, records
    stored_steps = 0
    for record in with_interventions:
        _, episode = graph.store.load_episode(record["episode_id"])
        assert record["intervention_steps"] == int(np.sum(episode.sources == SOURCE_INTERVENTION))
        stored_steps += record["intervention_steps"]
    assert stored_steps >= 5
    assert any(np.any(graph.store.load_episode(r["episode_id"])[1].sources == SOURCE_POLICY) for r in records)
