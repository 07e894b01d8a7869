"""What the operator page shows, aggregated from the graph's topics (no rclpy here: testable alone).

The bridge node feeds it events, learner stats, rewards, robot status, camera status and camera
frames (with the age of their capture stamp); the Flask app reads `snapshot()` and `latest_jpeg()`
and takes the operator's label with `claim_label` (check-and-set under the lock, so of two
conflicting labels exactly one wins). All methods are thread-safe (ROS callbacks run in the
executor thread, requests in the server's threads).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from parl_robot.data.learning_curve import success_curve  # noqa: F401  (the page's curve: one definition)
from parl_robot.json_values import finite_or_none

# The episode manager's states, in the order the page draws them.
EPISODE_STATES = ("waiting_for_learner", "waiting_for_reset", "ready", "running", "awaiting_label", "saving")
LABELS_KEPT = 100  # labels remembered per episode number, newest first


class OperatorState:
    def __init__(
        self,
        task: str,
        instruction: str,
        max_episode_steps: int,
        camera_timeout_s: float = 1.0,
        learner_timeout_s: float = 5.0,
        control_timeout_s: float = 3.0,
        clock=time.monotonic,
    ):
        self.task = task
        self.instruction = instruction
        self.max_episode_steps = max_episode_steps
        self.camera_timeout_s = camera_timeout_s
        self.learner_timeout_s = learner_timeout_s
        self.control_timeout_s = control_timeout_s
        self.clock = clock
        self.started = clock()
        self._lock = threading.Lock()
        self.episode_state = "waiting_for_learner"
        self.episode = 0
        self.step = 0
        self.reward: float | None = None
        self.success = False
        self.finished = False
        self.stats: dict = {}
        self.stats_time: float | None = None
        self.robot_status: dict = {}
        self.status_time: float | None = None
        self.camera_status: dict = {}
        self.camera_status_time: float | None = None
        self.last_saved_episode_id: str | None = None
        self.episodes_paused = False  # the operator paused new episodes
        self.safety: dict = {}  # robot/safety (latched): state, reasons, fault
        self.safety_time: float | None = None
        self.held_because = ""  # episode/state (latched): why no episode runs now
        self.pause_reason = ""
        self.labels: dict[int, dict] = {}  # episode number -> {"success", "source"} of its first label
        self.events: deque[dict] = deque(maxlen=30)
        self.classifier: dict = {}  # reward/classifier (latched): the success classifier in shadow mode
        self.reward_detector: dict = {}  # reward/detector (latched): the detector in use, a failed switch's error
        self._frame: np.ndarray | None = None
        self._frame_time: float | None = None
        self._frame_capture_time: float | None = None  # on self.clock: arrival minus the stamp's age then
        self._frame_serial = 0
        self._jpeg: tuple[int, bytes] | None = None

    # ----- inputs from the graph -------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        with self._lock:
            if isinstance(event.get("state"), str) and event["state"] in EPISODE_STATES:
                self.episode_state = event["state"]
            if isinstance(event.get("episode"), int):
                self.episode = event["episode"]
            if kind == "start":
                self.step, self.reward, self.success = 0, None, False
                self.labels.pop(self.episode, None)  # a restarted episode manager counts from 0 again
            elif kind == "label" and isinstance(event.get("episode"), int) and isinstance(event.get("success"), bool):
                self._remember_label(event["episode"], event["success"], str(event.get("source", "")))
            elif kind == "saved" and isinstance(event.get("episode_id"), str):
                self.last_saved_episode_id = event["episode_id"]
            elif kind == "finished":
                self.finished = True
            elif kind == "pause":
                self.episodes_paused, self.pause_reason = True, "operator"
            elif kind == "resume":
                self.episodes_paused, self.pause_reason = False, ""
            if kind != "state":
                self.events.append({key: event[key] for key in sorted(event) if key in _EVENT_FIELDS})

    def on_classifier(self, status: dict) -> None:
        with self._lock:
            self.classifier = finite_or_none(status)

    def on_reward_detector(self, status: dict) -> None:
        with self._lock:
            self.reward_detector = dict(status)

    def on_safety(self, safety: dict) -> None:
        """The control node's latched safety state: a restarted page knows at once why the arm holds."""
        with self._lock:
            self.safety, self.safety_time = dict(safety), self.clock()

    def on_episode_state(self, state: dict) -> None:
        """The episode manager's latched state: the truth after a page restart, and why the run is held."""
        with self._lock:
            if state.get("state") in EPISODE_STATES:
                self.episode_state = state["state"]
            if isinstance(state.get("episode"), int):
                self.episode = state["episode"]
            if isinstance(state.get("held"), str):
                self.held_because = state["held"]
                self.episodes_paused = self.held_because.startswith("paused")
                self.pause_reason = "operator" if self.episodes_paused else ""

    def _robot_view(self) -> dict:
        """Robot status with the hold reasons of whichever of robot/status and robot/safety came last."""
        safety_newer = self.safety_time is not None and (self.status_time is None or self.safety_time > self.status_time)
        return {**self.robot_status, **_safety_fields(self.safety)} if safety_newer else dict(self.robot_status)

    def on_stats(self, stats: dict) -> None:
        with self._lock:
            self.stats, self.stats_time = finite_or_none(stats), self.clock()

    def on_status(self, status: dict) -> None:
        with self._lock:
            self.robot_status, self.status_time = finite_or_none(status), self.clock()

    def on_camera_status(self, status: dict) -> None:
        with self._lock:
            self.camera_status, self.camera_status_time = finite_or_none(status), self.clock()

    def on_reward(self, reward: float) -> None:
        with self._lock:
            self.reward = float(reward)

    def on_success(self, success: bool) -> None:
        with self._lock:
            self.success = bool(success)

    def on_action(self, step_id: int) -> None:
        """`step_id` is the learner's index of the action in its episode (the action message's
        `layout.data_offset`), so the page shows the number of actions the stored episode holds,
        including those sent while the end of the episode was on its way to the learner."""
        with self._lock:
            self.step = step_id + 1

    # ----- the operator's label ---------------------------------------------------------------
    def claim_label(self, episode: int, success: bool) -> tuple[str, str]:
        """Take the operator's label for episode number `episode`, atomically. Returns ("new", "")
        when the caller should announce it, ("same", why) for a repeat of the label it already has,
        or ("refused", why) for any other episode or a conflicting second label."""
        with self._lock:
            given = self.labels.get(episode)
            if given is not None:
                if given["success"] == success:
                    return "same", f"episode {episode} is already labelled {_label_text(success)}"
                return "refused", (
                    f"episode {episode} is already labelled {_label_text(given['success'])} (by {given['source'] or 'unknown'}); "
                    "to change a stored label use the episode list"
                )
            if self.episode_state != "awaiting_label":
                return "refused", f"no episode is awaiting a label (the episode is '{self.episode_state}'), so episode {episode} cannot be labelled now"
            if episode != self.episode:
                return "refused", f"episode {self.episode} is awaiting a label, not episode {episode}"
            self._remember_label(episode, success, "operator")
            return "new", ""

    def _remember_label(self, episode: int, success: bool, source: str) -> None:
        """The first label of an episode counts (call with the lock held)."""
        self.labels.setdefault(episode, {"success": success, "source": source})
        for old in sorted(self.labels)[:-LABELS_KEPT]:
            del self.labels[old]

    def on_image(self, rgb: np.ndarray, stamp_age_s: float = 0.0) -> None:
        """A camera frame whose capture stamp was `stamp_age_s` old (by the ROS clock) on arrival."""
        with self._lock:
            self._frame, self._frame_time = rgb, self.clock()
            self._frame_capture_time = self._frame_time - stamp_age_s
            self._frame_serial += 1

    # ----- outputs to the page ---------------------------------------------------------------
    def latest_jpeg(self) -> bytes | None:
        """The newest camera frame as JPEG, encoded at most once per frame."""
        with self._lock:
            frame, serial, cached = self._frame, self._frame_serial, self._jpeg
        if frame is None:
            return None
        if cached is not None and cached[0] == serial:
            return cached[1]
        import cv2

        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(frame[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            return None
        jpeg = encoded.tobytes()
        with self._lock:
            self._jpeg = (serial, jpeg)
        return jpeg

    def learner_alive(self) -> bool:
        with self._lock:
            return self.stats_time is not None and self.clock() - self.stats_time < self.learner_timeout_s

    def warnings(self) -> list[dict]:
        """Conditions the operator must see: (code, text). Computed on read from the latest inputs."""
        now = self.clock()
        with self._lock:
            found = []
            if self.robot_status.get("estopped"):
                found.append(("estop", "E-STOP latched: the arm refuses actions until cleared"))
            frame_age = now - (self._frame_time if self._frame_time is not None else self.started)
            capture_age = now - (self._frame_capture_time if self._frame_capture_time is not None else self.started)
            if frame_age > self.camera_timeout_s:
                found.append(("camera_lost", f"camera lost: no image for {frame_age:.1f} s"))
            elif capture_age > self.camera_timeout_s:
                found.append(("camera_stale", f"camera stale: the newest image was taken {capture_age:.1f} s ago (by its stamp)"))
            camera_status_recent = self.camera_status_time is not None and now - self.camera_status_time < self.control_timeout_s
            if self.camera_status.get("frozen") and camera_status_recent:
                found.append(("camera_frozen", f"camera frozen: {self.camera_status.get('identical_frames')} identical "
                                               "frames in a row (stuck driver or capped lens? replug the camera)"))
            status_age = now - (self.status_time if self.status_time is not None else self.started)
            if status_age > self.control_timeout_s:
                found.append(("control_lost", f"no robot status for {status_age:.1f} s: is the control node running?"))
            reasons = held_reasons(self.robot_status, self.episode_state)
            if self.episode_state == "running" and (self.robot_status.get("holding") or "watchdog" in reasons):
                found.append(("watchdog", "watchdog: the arm is holding still (no fresh actions)"))
            reasons = [r for r in reasons if r not in ("estop", "watchdog")]  # each has its own warning
            if reasons:
                found.append(("held", f"arm held: {', '.join(reasons).replace('_', ' ')}"))
            if self.robot_status.get("fault"):
                found.append(("fault", f"robot fault: {self.robot_status['fault']}"))
            if self.robot_status.get("last_error"):
                found.append(("control_error", f"control node: {self.robot_status['last_error']}"))
            if self.robot_status.get("peers_missing"):  # role:=robot and the learner side is not seen
                found.append(("peer_missing", f"learner side not seen: nobody publishes "
                                              f"{', '.join(map(str, self.robot_status['peers_missing']))} "
                                              "(same ROS_DOMAIN_ID and discovery settings on both hosts? docs/multi_host.md)"))
            stats_age = now - (self.stats_time if self.stats_time is not None else self.started)
            if stats_age > self.learner_timeout_s:
                found.append(("learner_lost", f"no learner stats for {stats_age:.1f} s: is the learner running?"))
            if self.stats.get("warning"):
                found.append(("learner_warning", f"learner: {self.stats['warning']}"))
        return [{"code": code, "text": text} for code, text in found]

    def snapshot(self) -> dict:
        warnings = self.warnings()
        with self._lock:
            snapshot = {
                "task": self.task,
                "instruction": self.instruction,
                "episode_state": self.episode_state,
                "episode_states": list(EPISODE_STATES),
                "episode": self.episode,
                "step": self.step,
                "max_episode_steps": self.max_episode_steps,
                "reward": self.reward,
                "success": self.success,
                "finished": self.finished,
                "learner": dict(self.stats),
                "robot": self._robot_view(),
                "held_because": self.held_because,
                "camera_ok": not any(w["code"] == "camera_lost" for w in warnings),
                "warnings": warnings,
                "last_saved_episode_id": self.last_saved_episode_id,
                "episode_label": dict(self.labels[self.episode]) if self.episode in self.labels else None,
                "episodes_paused": self.episodes_paused,
                "pause_reason": self.pause_reason,
                "events": list(self.events)[-10:],
                "classifier": dict(self.classifier) or None,
                "reward_detector": dict(self.reward_detector) or None,
            }
        snapshot["prompt"] = operator_prompt(snapshot)
        return snapshot


def operator_prompt(snapshot: dict) -> dict:
    """What the operator should do next and, when the run is held, why: {"text", "level", "reason"}.
    Levels: "danger" (the arm is stopped), "held" (the run waits for something), "action" (the
    operator's move), "info" (nothing to do). The first matching condition wins."""
    robot, learner, state, episode = snapshot["robot"], snapshot["learner"], snapshot["episode_state"], snapshot["episode"]
    warnings = {w["code"] for w in snapshot["warnings"]}
    reasons = held_reasons(robot, state)
    fault = robot.get("fault") if isinstance(robot.get("fault"), str) else ""

    def prompt(level: str, reason: str, text: str) -> dict:
        return {"level": level, "reason": reason, "text": text}

    if robot.get("estopped") or "estop" in reasons:
        return prompt("danger", "estop", "E-STOP latched: the arm refuses every action and the running episode was aborted "
                      "(kept on disk, never trained on). Make the scene safe, then press Clear e-stop.")
    if "control_lost" in warnings:
        return prompt("danger", "control_lost", "No robot status: the control node is not answering. Nothing moves until it is back.")
    if reasons or fault:
        why = ": ".join(part for part in (", ".join(reasons).replace("_", " "), fault) if part)
        fix = " Check the arm, then press Reboot motors." if "motor_error" in reasons or fault else ""
        return prompt("danger", "robot_held", f"Arm held: {why}.{fix}")
    if snapshot["finished"]:
        return prompt("info", "finished", "Run finished: every online episode is saved. Stop the launcher when you are done.")
    if "learner_lost" in warnings:
        return prompt("held", "learner_lost", "Held: the learner is not running (restarting?). The run waits; it resumes from the last checkpoint and the saved episodes.")
    if state == "waiting_for_learner":
        if learner.get("phase") == "offline" and isinstance(learner.get("offline_progress"), (int, float)):
            return prompt("held", "offline", f"Held: the learner is pre-training offline ({100 * learner['offline_progress']:.0f} % done). The first episode waits for it.")
        return prompt("held", "waiting_for_learner", "Held: waiting for the learner to start.")
    if state == "awaiting_label":
        if snapshot["episode_label"] is not None:
            return prompt("info", "labelled", f"Episode {episode} labelled {_label_text(snapshot['episode_label']['success'])}: saving.")
        return prompt("action", "label", f"Episode {episode} ended: did it succeed? Press Success (S) or Failure (F), or Discard (D).")
    if state == "saving":
        return prompt("info", "saving", f"Saving episode {episode}.")
    if state == "running":
        return prompt("info", "running", f"Episode {episode} running: watch the arm. Space or Esc stops it (E-STOP).")
    if snapshot["episodes_paused"]:
        if state == "waiting_for_reset":
            return prompt("held", "paused", "Held: episodes are paused. Reset the scene, press Reset done (R), then Resume (P).")
        return prompt("held", "paused", f"Held: episodes are paused. Press Resume (P) to start episode {episode}.")
    if snapshot.get("held_because") and "going home" in snapshot["held_because"]:
        return prompt("held", "homing", f"Held: {snapshot['held_because']}.")
    catching_up = f"the critic is catching up on the warm-up episodes ({learner.get('warmup_critic_updates') or 0} updates so far)"
    if state == "waiting_for_reset":
        then = f" The episode starts once {catching_up}." if learner.get("catching_up") else ""
        return prompt("action", "reset", f"Reset the scene for episode {episode} (“{snapshot['instruction']}”), then press Reset done (R).{then}")
    if learner.get("catching_up"):
        return prompt("held", "catching_up", f"Held: {catching_up}; episode {episode} starts by itself.")
    return prompt("info", "ready", f"Scene reset: episode {episode} starts in a moment.")


def _safety_fields(safety: dict) -> dict:
    """robot/safety's reasons and fault in the robot status's field names (the newest of the two wins)."""
    if not safety:
        return {}
    reasons = list(safety.get("reasons") or []) if safety.get("state") == "held" else []
    return {"held_reasons": reasons, "fault": str(safety.get("fault") or ""), "estopped": "estop" in reasons}


def held_reasons(robot_status: dict, episode_state: str) -> list[str]:
    """Why the control node holds the arm (robot status `held_reasons`). Holding still without
    actions (`watchdog`) is only news while an episode runs."""
    reasons = robot_status.get("held_reasons")
    if not isinstance(reasons, list):
        return []
    return [r for r in reasons if isinstance(r, str) and (r != "watchdog" or episode_state == "running")]


def _label_text(success: bool) -> str:
    return "success" if success else "failure"


_EVENT_FIELDS = ("type", "time", "episode", "episode_id", "success", "source", "label", "reason", "steps")
