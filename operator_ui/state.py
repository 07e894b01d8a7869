"""What the operator page shows, aggregated from the graph's topics (no rclpy here: testable alone).

The bridge node feeds it events, learner stats, rewards, robot status, camera status and camera
frames (with the age of their capture stamp); the Flask app reads `snapshot()` and `latest_jpeg()`.
All methods are thread-safe (ROS callbacks run in the executor thread, requests in the server's
threads).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np

# The episode manager's states, in the order the page draws them.
EPISODE_STATES = ("waiting_for_learner", "waiting_for_reset", "ready", "running", "awaiting_label", "saving")


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
        self.events: deque[dict] = deque(maxlen=30)
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
            elif kind == "saved" and isinstance(event.get("episode_id"), str):
                self.last_saved_episode_id = event["episode_id"]
            elif kind == "finished":
                self.finished = True
            if kind != "state":
                self.events.append({key: event[key] for key in sorted(event) if key in _EVENT_FIELDS})

    def on_stats(self, stats: dict) -> None:
        with self._lock:
            self.stats, self.stats_time = _finite_or_none(stats), self.clock()

    def on_status(self, status: dict) -> None:
        with self._lock:
            self.robot_status, self.status_time = _finite_or_none(status), self.clock()

    def on_camera_status(self, status: dict) -> None:
        with self._lock:
            self.camera_status, self.camera_status_time = _finite_or_none(status), self.clock()

    def on_reward(self, reward: float) -> None:
        with self._lock:
            self.reward = float(reward)

    def on_success(self, success: bool) -> None:
        with self._lock:
            self.success = bool(success)

    def on_action(self) -> None:
        with self._lock:
            if self.episode_state == "running":
                self.step += 1

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
            if self.episode_state == "running" and self.robot_status.get("holding"):
                found.append(("watchdog", "watchdog: the arm is holding still (no fresh actions)"))
            if self.robot_status.get("last_error"):
                found.append(("control_error", f"control node: {self.robot_status['last_error']}"))
            stats_age = now - (self.stats_time if self.stats_time is not None else self.started)
            if stats_age > self.learner_timeout_s:
                found.append(("learner_lost", f"no learner stats for {stats_age:.1f} s: is the learner running?"))
            if self.stats.get("warning"):
                found.append(("learner_warning", f"learner: {self.stats['warning']}"))
        return [{"code": code, "text": text} for code, text in found]

    def snapshot(self) -> dict:
        warnings = self.warnings()
        with self._lock:
            return {
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
                "robot": dict(self.robot_status),
                "camera_ok": not any(w["code"] == "camera_lost" for w in warnings),
                "warnings": warnings,
                "last_saved_episode_id": self.last_saved_episode_id,
                "events": list(self.events)[-10:],
            }


def _finite_or_none(values: dict) -> dict:
    """NaN/Inf (e.g. a loss before the first update) become None so the page gets valid JSON."""
    return {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in values.items()}


_EVENT_FIELDS = ("type", "time", "episode", "episode_id", "success", "source", "label", "reason", "steps")


def success_curve(records: list[dict], window: int = 10) -> dict:
    """Per-episode success of non-demo episodes in id order, with a trailing moving average and
    per-phase rates (warm-up = the offline policy's evaluation, online = while fine-tuning)."""
    episodes = sorted((r for r in records if r.get("kind") != "demo"), key=lambda r: r.get("episode_id", ""))
    points, outcomes = [], []
    for number, record in enumerate(episodes, start=1):
        outcomes.append(1.0 if record.get("success") else 0.0)
        recent = outcomes[-window:]
        points.append(
            {
                "n": number,
                "episode_id": record.get("episode_id"),
                "phase": record.get("phase") or "online",
                "success": bool(record.get("success")),
                "moving_average": sum(recent) / len(recent),
            }
        )
    phases = {}
    for point in points:
        phase = phases.setdefault(point["phase"], {"episodes": 0, "successes": 0})
        phase["episodes"] += 1
        phase["successes"] += int(point["success"])
    for phase in phases.values():
        phase["success_rate"] = phase["successes"] / phase["episodes"]
    return {"window": window, "points": points, "phases": phases}
