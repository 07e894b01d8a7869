"""Episode manager: the episode state machine, announced on `episode/event`.

waiting_for_reset -> ready -> running -> awaiting_label -> saved -> (home) -> waiting_for_reset.
In sim (`episodes.auto_reset`) the scene is reset through `sim/reset`; on hardware the operator
sends `reset_done` from the web page. With `episodes.auto_label` the detector's success becomes the
label; otherwise the operator's `label` event decides. After `episodes.num_online_episodes` saved
episodes the node announces `finished` and exits 0, which ends the launch.

Safety: the control node's latched `robot/safety` state is followed. A hold (e-stop, tracking or
motor error) during a running episode ends it as `aborted` (the learner stores it flagged and never
trains on it); no episode starts while the arm is held or not yet homed after an abort. The state,
with why the run is held, is also published latched on `episode/state` for a page that (re)starts.
The 1 Hz `robot/safety` republication is also the heartbeat of the robot side: silent for
LINK_LOST_AFTER_S (the link to the robot host is down, or the control node is gone) counts as a hold
with reason `link_lost` until the next message, which carries the real state again.
"""

from __future__ import annotations

import json
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
LINK_LOST_AFTER_S = 3.0  # robot/safety comes at 1 Hz from the control node
LINK_LOST = "link_lost"


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
        self.safety_reasons: list[str] = []
        self.needs_home = False  # after an abort the arm must go home before the next episode
        self._abort_home = None
        self._abort_home_retry_at = 0.0
        self.state_pub = self.create_publisher(String, common.EPISODE_STATE, common.LATCHED_QOS)
        self._published_state: tuple | None = None
        self.safety_heard: float | None = None  # robot/safety is also the robot side's heartbeat (check_link)
        self.create_subscription(String, common.ROBOT_SAFETY, self.on_safety_heartbeat, common.LATCHED_QOS)
        self.reset_client = self.create_client(Trigger, common.SRV_SIM_RESET)
        self.home_client = self.create_client(Trigger, common.SRV_HOME)
        common.wall_timer(self, 0.1, self.tick)
        self._pending_reset = None
        self._pending_home = None
        self.finishing = False
        self.learner_seen: float | None = None
        self.learner_catching_up = False  # learner stats `catching_up`: hold the next episode
        self.peer_check = common.start_peer_check(self)  # role:=learner: is the robot side there?

    def publish(self, kind: str, **fields) -> None:
        self.event_pub.publish(common.event_message(kind, episode=self.episode, state=self.state, **fields))

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.monotonic()
        self.publish("state")
        self.publish_state()

    def held_because(self) -> str:
        """Why no episode runs now, for the operator ('' when nothing holds it)."""
        if self.safety_reasons == [LINK_LOST]:
            return "no heartbeat from the robot side (link lost): waiting for it to come back"
        if self.safety_reasons:
            return f"arm held: {', '.join(self.safety_reasons)} (clear it on the page)"
        if self.needs_home:
            return "the arm is going home after an aborted episode"
        if self.paused:
            return "paused by the operator (resume to continue)"
        if self.learner_catching_up:
            return "waiting for the critic to catch up on the warm-up episodes"
        if self.state == WAITING_FOR_LEARNER:
            return "waiting for the learner (starting, pre-training or restarting)"
        return ""

    def publish_state(self) -> None:
        """`episode/state` (latched): republished whenever the state or the reason it is held changes."""
        snapshot = (self.state, self.episode, self.held_because())
        if snapshot == self._published_state:
            return
        self._published_state = snapshot
        self.state_pub.publish(String(data=json.dumps({
            "state": self.state, "episode": self.episode, "steps": self.steps, "saved": self.saved,
            "successes": self.successes, "held": snapshot[2], "time": time.time()})))

    def on_safety(self, msg: String) -> None:
        safety = common.parse_json_object(msg)
        if safety is None:
            return
        reasons = list(safety.get("reasons") or []) if safety.get("state") == "held" else []
        if reasons and not self.safety_reasons:
            self.get_logger().error(f"arm held ({', '.join(reasons)}): no episode runs until the hold is cleared")
        self.safety_reasons = reasons
        if reasons and self.state == RUNNING:
            reason = ", ".join(reasons)
            self.get_logger().error(f"episode {self.episode} aborted after {self.steps} steps: {reason}")
            self.publish("aborted", reason=reason, steps=self.steps)
            self.episode += 1
            self.needs_home = True
            self.set_state(WAITING_FOR_RESET)
        elif reasons and self.state == READY:
            self.set_state(WAITING_FOR_RESET)
        self.publish_state()

    def on_safety_heartbeat(self, msg: String) -> None:
        self.safety_heard = time.monotonic()
        self.on_safety(msg)

    def check_link(self) -> None:
        """No robot/safety for LINK_LOST_AFTER_S: treat it as a hold (`link_lost`), which aborts a running
        episode and holds the next one; the next heartbeat's real state (usually `ok`) replaces it."""
        if self.safety_heard is None or LINK_LOST in self.safety_reasons:
            return
        silent_s = time.monotonic() - self.safety_heard
        if silent_s > LINK_LOST_AFTER_S:
            self.get_logger().error(f"no robot/safety heartbeat for {silent_s:.1f} s: link to the robot side lost")
            self.on_safety(String(data=json.dumps({"state": "held", "reasons": [LINK_LOST]})))

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
        if (kind == "reset_done" and self.state == WAITING_FOR_RESET and event.get("source") == "operator"
                and not self.safety_reasons and not self.needs_home):
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
            self.publish_state()
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
        self.check_link()
        self.publish_state()
        held = bool(self.safety_reasons)
        if self.state == WAITING_FOR_RESET and self.needs_home and not held and not self.cfg.episodes.auto_reset:
            if self._abort_home is None and time.monotonic() >= self._abort_home_retry_at:
                self._abort_home = self._call(self.home_client, "home after an aborted episode")
            elif self._abort_home is not None and self._abort_home.done():
                result, self._abort_home = self._abort_home.result(), None
                if result is not None and result.success:
                    self.needs_home = False
                else:
                    self.get_logger().error(f"home after the abort failed: {getattr(result, 'message', '?')}; retrying")
                    self._abort_home_retry_at = time.monotonic() + 2.0
        elif self.state == WAITING_FOR_RESET and self.cfg.episodes.auto_reset and not self.paused and not held:
            if self._pending_reset is None:
                self._pending_reset = self._call(self.reset_client, "reset")
            elif self._pending_reset.done():
                result, self._pending_reset = self._pending_reset.result(), None
                if result is None or not result.success:  # e.g. a hold latched meanwhile: try again later
                    self.get_logger().warning(f"sim reset refused: {getattr(result, 'message', '?')}")
                    return
                self.needs_home = False  # the sim reset homes the arm
                self.publish("reset_done", source="sim")
                self.set_state(READY)
        elif (self.state == READY and in_state > 0.5 and not self.paused and not self.learner_catching_up
              and not held and not self.needs_home):
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
