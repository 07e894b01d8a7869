"""The episode state machine of the episode manager node, without ROS (as `ArmController` is the
control node's core): every transition, hold and timeout lives here and is unit-tested.

    waiting_for_learner -> waiting_for_reset -> ready -> running -> awaiting_label -> saving
         -> (saved: home) -> waiting_for_reset ... -> finished (exit 0 once the arm is home)

- The learner's stats (`phase` warmup/online) end `waiting_for_learner`; its silence for
  LEARNER_TIMEOUT_S during an episode discards the episode (its in-memory data is gone) and waits
  for the restarted learner. While its stats say `catching_up`, no episode starts.
- Resets: in sim (`auto_reset`) the `reset` service; on hardware the operator's `reset_done`.
- Labels: with `auto_label` the detector's success; otherwise the operator's `label` event. The
  learner stores the episode and answers `saved`; after `num_online_episodes` the run finishes. An
  episode a live learner has not saved within SAVE_GIVE_UP_S (it never recorded it) is discarded and
  the next one runs: the run never waits forever.
- Safety: a hold (`robot/safety` reasons) during a running episode ends it as `aborted` and the arm
  must go home before the next one (`needs_home`: the `home_after_abort` service on hardware, the sim
  reset in sim); no episode starts while held, not homed or paused. `held_because()` says why.

The node supplies the ports: `publish(kind, **fields)` for `episode/event`, `publish_state(dict)`
for the latched `episode/state`, `call_service(name)` returning a future-like object (`done()`,
`result()` with `success` and `message`) or None when the service is unavailable, and `log`.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from parl_robot.config import EpisodeConfig

WAITING_FOR_LEARNER = "waiting_for_learner"
WAITING_FOR_RESET = "waiting_for_reset"
READY = "ready"
RUNNING = "running"
AWAITING_LABEL = "awaiting_label"
SAVING = "saving"
LEARNER_TIMEOUT_S = 3.0  # learner stats come at 1 Hz
READY_DWELL_S = 0.5  # a ready scene waits this long before the episode starts
END_DWELL_S = 0.2  # an episode runs at least this long
SAVE_TIMEOUT_S = 30.0  # warn when the learner has not saved the episode by then
# Give up on an episode the learner, alive, has not saved by then (it never recorded it: its `start` was
# lost, or its save failed) and run the next one: a run must never wait forever for one episode.
SAVE_GIVE_UP_S = 120.0
FINISH_HOME_TIMEOUT_S = 10.0  # finishing: exit after this long even if the arm never reported home
ABORT_HOME_RETRY_S = 2.0
SERVICES = ("reset", "home", "home_after_abort")


LINK_LOST = "link_lost"  # no robot/safety heartbeat: the robot side is unreachable

class Ports(Protocol):
    def publish(self, kind: str, **fields) -> None: ...
    def publish_state(self, state: dict) -> None: ...
    def call_service(self, name: str): ...
    def log(self, level: str, text: str) -> None: ...


class EpisodeMachine:
    def __init__(self, episodes: EpisodeConfig, max_episode_steps: int, instruction: str, ports: Ports,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.cfg = episodes  # num_online_episodes, auto_reset, auto_label
        self.max_episode_steps = max_episode_steps
        self.instruction = instruction
        self.ports = ports
        self.clock = clock
        self.wall_clock = wall_clock
        self.exit_code: int | None = None
        self.state = WAITING_FOR_LEARNER
        self.state_since = clock()
        self.episode = 0
        self.steps = 0
        self.saved = 0
        self.successes = 0
        self.paused = False
        self.last_success = False
        self.safety_reasons: list[str] = []
        self.needs_home = False  # after an abort the arm must go home before the next episode
        self.learner_seen: float | None = None
        self.learner_catching_up = False  # learner stats `catching_up`: hold the next episode
        self.finishing = False
        self._pending_reset = None
        self._pending_home = None
        self._abort_home = None
        self._abort_home_retry_at = 0.0
        self._published_state: tuple | None = None
        self.saving_since = 0.0

    # ----- outputs ---------------------------------------------------------------------------
    def publish(self, kind: str, **fields) -> None:
        self.ports.publish(kind, episode=self.episode, state=self.state, **fields)

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_since = self.clock()
        if state == SAVING:
            self.saving_since = self.state_since
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
        self.ports.publish_state({"state": self.state, "episode": self.episode, "steps": self.steps, "saved": self.saved,
                                  "successes": self.successes, "held": snapshot[2], "time": self.wall_clock()})

    # ----- inputs ----------------------------------------------------------------------------
    def on_safety(self, safety: dict) -> None:
        """The control node's `robot/safety` state (state `ok`/`held`, reasons)."""
        reasons = list(safety.get("reasons") or []) if safety.get("state") == "held" else []
        if reasons and not self.safety_reasons:
            self.ports.log("error", f"arm held ({', '.join(reasons)}): no episode runs until the hold is cleared")
        self.safety_reasons = reasons
        if reasons and self.state == RUNNING:
            reason = ", ".join(reasons)
            self.ports.log("error", f"episode {self.episode} aborted after {self.steps} steps: {reason}")
            self.publish("aborted", reason=reason, steps=self.steps)
            self.episode += 1
            self.needs_home = True
            self.set_state(WAITING_FOR_RESET)
        elif reasons and self.state == READY:
            self.set_state(WAITING_FOR_RESET)
        self.publish_state()

    def on_learner_stats(self, stats: dict) -> None:
        self.learner_seen = self.clock()
        catching_up = bool(stats.get("catching_up"))
        if catching_up and not self.learner_catching_up:
            self.ports.log("info", "the critic is catching up on the warm-up episodes: the next episode waits")
        self.learner_catching_up = catching_up
        if self.state == WAITING_FOR_LEARNER and stats.get("phase") in ("warmup", "online"):
            self.ports.log("info", "learner ready")
            self.set_state(WAITING_FOR_RESET)

    def on_event(self, event: dict) -> None:
        """An `episode/event` from anyone (the page, the learner, this machine's own)."""
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
            # Episodes count per run (from 0 at every launch); the store's ids continue across runs.
            stored_as = f" as {event['episode_id']}" if isinstance(event.get("episode_id"), str) else ""
            self.ports.log("info", f"episode {self.episode} of this run saved{stored_as}: "
                                   f"{'SUCCESS' if event.get('success') else 'failure'} "
                                   f"({self.successes}/{self.saved} successes this run)")
            self.episode += 1
            self._pending_home = self.ports.call_service("home")
            if self.saved >= self.cfg.num_online_episodes:
                self.publish("finished", saved=self.saved, successes=self.successes)
                self.finishing = True  # exit once the arm is home (tick)
                return
            self.set_state(WAITING_FOR_RESET)
        elif (kind == "end_now" and self.state == RUNNING and event.get("source") == "operator"
              and event.get("episode") == self.episode and isinstance(event.get("success"), bool)):
            # The operator ends the running episode with its outcome (the page's success/failure
            # buttons while it runs): the learner takes the final observation, then saves it.
            success = event["success"]
            self.publish("end", success=success, steps=self.steps, ended_by="operator")
            self.set_state(AWAITING_LABEL)
            self.publish("label", success=success, source="operator")
            self.set_state(SAVING)
        elif kind in ("pause", "resume"):
            self.paused = kind == "pause"
            self.publish_state()
        elif kind == "discard" and self.state in (RUNNING, AWAITING_LABEL):
            self.publish("discarded")
            self.set_state(WAITING_FOR_RESET)

    def on_action(self) -> None:
        if self.state == RUNNING:
            self.steps += 1

    def on_success(self, success: bool) -> None:
        self.last_success = success

    # ----- time ------------------------------------------------------------------------------
    def tick(self) -> None:
        now = self.clock()
        in_state = now - self.state_since
        learner_silent = self.learner_seen is not None and now - self.learner_seen > LEARNER_TIMEOUT_S
        if learner_silent and self.state in (READY, RUNNING, AWAITING_LABEL, SAVING) and not self.finishing:
            # The learner died: its in-memory episode is gone. Drop it, hold, and wait for the restart,
            # which resumes from the checkpoint and the saved episodes.
            self.ports.log("error", f"learner silent for {LEARNER_TIMEOUT_S:.0f} s: episode {self.episode} discarded")
            self.publish("discarded", reason="learner lost")
            self.set_state(WAITING_FOR_LEARNER)
            return
        if self.finishing:
            if self._pending_home is None or self._pending_home.done() or in_state > FINISH_HOME_TIMEOUT_S:
                self.exit_code = 0
            return
        self.publish_state()
        held = bool(self.safety_reasons)
        if self.state == WAITING_FOR_RESET and self.needs_home and not held and not self.cfg.auto_reset:
            self._home_after_abort(now)
        elif self.state == WAITING_FOR_RESET and self.cfg.auto_reset and not self.paused and not held:
            self._sim_reset()
        elif (self.state == READY and in_state > READY_DWELL_S and not self.paused and not self.learner_catching_up
              and not held and not self.needs_home):
            self.steps = 0
            self.last_success = False
            self.set_state(RUNNING)
            self.publish("start", instruction=self.instruction)
        elif self.state == RUNNING:
            done = self.last_success or self.steps >= self.max_episode_steps
            if done and in_state > END_DWELL_S:
                self.publish("end", success=self.last_success, steps=self.steps)
                self.set_state(AWAITING_LABEL)
                if self.cfg.auto_label:
                    self.publish("label", success=self.last_success, source="detector")
                    self.set_state(SAVING)
        elif self.state == SAVING and now - self.saving_since > SAVE_GIVE_UP_S:
            self.ports.log("error", f"episode {self.episode} was not saved within {SAVE_GIVE_UP_S:.0f} s although the "
                                    "learner is alive: discarded, the next episode starts (the learner's log says why)")
            self.publish("discarded", reason="not saved")
            self.set_state(WAITING_FOR_RESET)
        elif self.state == SAVING and in_state > SAVE_TIMEOUT_S:
            self.ports.log("error", f"episode {self.episode} was not saved within {SAVE_TIMEOUT_S:.0f} s; is the learner alive?")
            self.state_since = now

    def _home_after_abort(self, now: float) -> None:
        if self._abort_home is None and now >= self._abort_home_retry_at:
            self._abort_home = self.ports.call_service("home_after_abort")
        elif self._abort_home is not None and self._abort_home.done():
            result, self._abort_home = self._abort_home.result(), None
            if result is not None and result.success:
                self.needs_home = False
            else:
                self.ports.log("error", f"home after the abort failed: {getattr(result, 'message', '?')}; retrying")
                self._abort_home_retry_at = now + ABORT_HOME_RETRY_S

    def _sim_reset(self) -> None:
        if self._pending_reset is None:
            self._pending_reset = self.ports.call_service("reset")
        elif self._pending_reset.done():
            result, self._pending_reset = self._pending_reset.result(), None
            if result is None or not result.success:  # e.g. a hold latched meanwhile: try again later
                self.ports.log("warning", f"sim reset refused: {getattr(result, 'message', '?')}")
                return
            self.needs_home = False  # the sim reset homes the arm
            self.publish("reset_done", source="sim")
            self.set_state(READY)
