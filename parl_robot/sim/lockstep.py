"""Lockstep simulation time: while an episode runs, ROS time advances one control period per action.

On a slow or loaded machine a real-time simulation starves the controller: the learner misses its
ticks, the watchdog holds the arm, and episodes fill with holds. In lockstep the sim bridge owns ROS
time (`/clock`, every node with `use_sim_time`): during a running episode it advances the clock by
one control period only after the action for the current step was handled, so the learner's ticks,
the watchdog and the camera all see exactly one control period per step however long a step takes
in wall time. Outside episodes (resets, labelling, pre-training) time runs at wall speed. If no
action comes for `stall_timeout_s` of wall time (the learner is held, dead, or not acting on stale
inputs) time runs at wall speed again until the next action, so the watchdog holds the arm and the
camera keeps going as they would in real time.

This module holds the policy (when to advance); the sim bridge publishes the result.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class LockstepClock:
    def __init__(self, period_s: float, stall_timeout_s: float = 2.0, start_s: float | None = None,
                 wall: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self.stall_timeout_s = stall_timeout_s
        self.wall = wall
        self.now_s = time.time() if start_s is None else start_s  # sim time starts at the wall date
        self._lock = threading.Lock()
        self._stepping = False
        self._step_done = False
        self._last_wall = wall()
        self._waiting_since = self._last_wall
        self._stalled = False  # no action for stall_timeout_s: wall speed until the next one
        self.stalls = 0

    def set_stepping(self, stepping: bool) -> None:
        """An episode started (True) or ended (False); the first step of an episode starts at once."""
        with self._lock:
            if stepping and not self._stepping:
                self._step_done = True  # advance one period now: the learner's first tick comes
            self._stepping = stepping
            self._stalled = False
            self._last_wall = self._waiting_since = self.wall()

    @property
    def stepping(self) -> bool:
        return self._stepping

    def step_done(self) -> None:
        """The action of the current step was handled (executed or refused)."""
        with self._lock:
            self._step_done = True
            self._stalled = False

    def advance(self) -> float | None:
        """Called often by the bridge's clock thread; returns the new time when it moved, else None."""
        with self._lock:
            wall_now = self.wall()
            if self._stepping and not self._stalled and not self._step_done:
                if wall_now - self._waiting_since <= self.stall_timeout_s:
                    return None
                self._stalled = True
                self.stalls += 1
                self._last_wall = wall_now
            if self._stepping and self._step_done:
                self._step_done = False
                self._waiting_since = self._last_wall = wall_now
                self.now_s += self.period_s
                return self.now_s
            elapsed = wall_now - self._last_wall  # between episodes, or stalled: wall speed
            self._last_wall = wall_now
            if elapsed <= 0:
                return None
            self.now_s += elapsed
            return self.now_s
