"""Episode manager: the episode state machine, announced on `episode/event`.

waiting_for_reset -> ready -> running -> awaiting_label -> saved -> (home) -> waiting_for_reset.
In sim (`episodes.auto_reset`) the scene is reset through `sim/reset`; on hardware the operator
sends `reset_done` from the web page. With `episodes.auto_label` the detector's success becomes the
label; otherwise the operator's `label` event decides. After `episodes.num_online_episodes` saved
episodes the node announces `finished` and exits 0, which ends the launch.
"""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import Bool, Float32MultiArray, String
from std_srvs.srv import Trigger

from parl_robot.nodes import common

WAITING_FOR_LEARNER = "waiting_for_learner"
WAITING_FOR_RESET = "waiting_for_reset"
READY = "ready"
RUNNING = "running"
AWAITING_LABEL = "awaiting_label"
SAVING = "saving"
LEARNER_TIMEOUT_S = 3.0  # learner stats come at 1 Hz


class EpisodeManagerNode(Node):
    def __init__(self):
        super().__init__("episode_manager")
        self.cfg = common.declare_task_config(self)
        self.exit_code = None
        self.state = WAITING_FOR_LEARNER
        self.episode = 0
        self.steps = 0
        self.saved = 0
        self.successes = 0
        self.paused = False
        self.last_success = False
        self.state_since = time.monotonic()
        self.event_pub = self.create_publisher(String, common.EPISODE_EVENT, common.EVENT_QOS)
        self.create_subscription(String, common.EPISODE_EVENT, self.on_event, common.EVENT_QOS)
        self.create_subscription(String, common.LEARNER_STATS, self.on_learner_stats, common.EVENT_QOS)
        self.create_subscription(Bool, common.REWARD_SUCCESS, self.on_success, common.COMMAND_QOS)
        self.create_subscription(Float32MultiArray, common.ROBOT_ACTION, self.on_action, common.COMMAND_QOS)
        self.reset_client = self.create_client(Trigger, common.SRV_SIM_RESET)
        self.home_client = self.create_client(Trigger, common.SRV_HOME)
        self.create_timer(0.1, self.tick)
        self._pending_reset = None
        self._pending_home = None
        self.finishing = False
        self.learner_seen: float | None = None
        self.learner_catching_up = False  # learner stats `catching_up`: hold the next episode

    def publish(self, kind: str, **fields) -> None:
        self.event_pub.publish(common.event_message(kind, episode=self.episode, state=self.state, **fields))

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.monotonic()
        self.publish("state")

    def on_learner_stats(self, msg: String) -> None:
        stats = common.parse_json_object(msg)
        if stats is None:
            return
        phase = stats.get("phase")
        self.learner_seen = time.monotonic()
        catching_up = bool(stats.get("catching_up"))
        if catching_up and not self.learner_catching_up:
            self.get_logger().info("the critic is catching up on the warm-up episodes: the next episode waits")
        self.learner_catching_up = catching_up
        if self.state == WAITING_FOR_LEARNER and phase in ("warmup", "online"):
            self.get_logger().info("learner ready")
            self.set_state(WAITING_FOR_RESET)

    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is None:
            return
        kind = event["type"]
        if kind == "reset_done" and self.state == WAITING_FOR_RESET and event.get("source") == "operator":
            self.set_state(READY)
        elif kind == "label" and self.state == AWAITING_LABEL and event.get("source") == "operator":
            # The operator's label event itself reaches the learner, which saves the episode.
            self.set_state(SAVING)
        elif kind == "saved" and self.state == SAVING and event.get("episode") == self.episode:
            self.saved += 1
            self.successes += int(bool(event.get("success")))
            self.get_logger().info(
                f"episode {self.episode} saved: {'SUCCESS' if event.get('success') else 'failure'} "
                f"({self.successes}/{self.saved} successes)"
            )
            self.episode += 1
            self._go_home()
            if self.saved >= self.cfg.episodes.num_online_episodes:
                self.publish("finished", saved=self.saved, successes=self.successes)
                self.finishing = True  # exit once the arm is home (tick)
                return
            self.set_state(WAITING_FOR_RESET)
        elif kind in ("pause", "resume"):
            self.paused = kind == "pause"
        elif kind == "estop":  # no new episode starts until the operator clears and resumes
            self.paused = True
            self.get_logger().error("e-stop: episodes paused; clear the e-stop and resume to continue")
        elif kind == "discard" and self.state in (RUNNING, AWAITING_LABEL):
            self.publish("discarded")
            self.set_state(WAITING_FOR_RESET)

    def on_action(self, msg: Float32MultiArray) -> None:
        if self.state == RUNNING:
            self.steps += 1

    def on_success(self, msg: Bool) -> None:
        self.last_success = bool(msg.data)

    def _call(self, client, what: str):
        if not client.wait_for_service(timeout_sec=5.0):
            self.get_logger().error(f"service {client.srv_name} not available for {what}")
            return None
        return client.call_async(Trigger.Request())

    def _go_home(self) -> None:
        self._pending_home = self._call(self.home_client, "home")

    def _label(self, success: bool, source: str) -> None:
        self.publish("label", success=success, source=source)
        self.set_state(SAVING)

    def tick(self) -> None:
        in_state = time.monotonic() - self.state_since
        learner_silent = self.learner_seen is not None and time.monotonic() - self.learner_seen > LEARNER_TIMEOUT_S
        if learner_silent and self.state in (READY, RUNNING, AWAITING_LABEL, SAVING) and not self.finishing:
            # The learner died: its in-memory episode is gone. Drop it, hold, and wait for the restart,
            # which resumes from the checkpoint and the saved episodes.
            self.get_logger().error(f"learner silent for {LEARNER_TIMEOUT_S:.0f} s: episode {self.episode} discarded")
            self.publish("discarded", reason="learner lost")
            self.set_state(WAITING_FOR_LEARNER)
            return
        if self.finishing:
            if self._pending_home is None or self._pending_home.done() or in_state > 10.0:
                self.exit_code = 0
            return
        if self.state == WAITING_FOR_RESET and self.cfg.episodes.auto_reset and not self.paused:
            if self._pending_reset is None:
                self._pending_reset = self._call(self.reset_client, "reset")
            elif self._pending_reset.done():
                self._pending_reset = None
                self.publish("reset_done", source="sim")
                self.set_state(READY)
        elif self.state == READY and in_state > 0.5 and not self.paused and not self.learner_catching_up:
            self.steps = 0
            self.last_success = False
            self.set_state(RUNNING)
            self.publish("start", instruction=self.cfg.task.instruction)
        elif self.state == RUNNING:
            done = self.last_success or self.steps >= self.cfg.control.max_episode_steps
            if done and in_state > 0.2:
                self.publish("end", success=self.last_success, steps=self.steps)
                self.set_state(AWAITING_LABEL)
                if self.cfg.episodes.auto_label:
                    self._label(self.last_success, "detector")
        elif self.state == SAVING and in_state > 30.0:
            self.get_logger().error(f"episode {self.episode} was not saved within 30 s; is the learner alive?")
            self.state_since = time.monotonic()


def main(args=None) -> int:
    return common.run_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
