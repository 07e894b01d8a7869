"""Lockstep simulation time: while an episode runs, ROS time advances one control period per action.

On a slow or loaded machine a real-time simulation starves the controller: the learner misses its
ticks, the watchdog holds the arm, and episodes fill with holds. In lockstep the sim bridge owns ROS
time (`/clock`, every node with `use_sim_time`): during a running episode it advances the clock by
one control period only after the action for the current step was handled, so the learner's ticks,
the watchdog and the camera all see exactly one control period per step however long a step takes
in wall time. Outside episodes (resets, labelling, pre-training) time runs at wall speed.

The learner announces each step it starts computing (`learner/acting`): while an announced step's
action is on its way, time waits however long the computation takes (a loaded machine, an update
in progress). After the episode's last step (`steps_per_episode`) time runs at wall speed until the
episode manager ends the episode. If no action comes and none is announced for `stall_timeout_s` of
wall time (the learner is held, dead, or not acting on stale inputs), or the learner vanishes while computing
(`producer_lost`), time runs at wall speed again until the next action, so the watchdog holds the
arm and the camera keeps going as they would in real time.

This module holds the policy (when to advance); the sim bridge publishes the result.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class LockstepClock:
    def __init__(self, period_s: float, stall_timeout_s: float = 2.0, start_s: float | None = None,
                 wall: Callable[[], float] = time.monotonic, steps_per_episode: int | None = None):
        self.period_s = period_s
        self.steps_per_episode = steps_per_episode  # after the last step's period: wall speed until the end
        self.stall_timeout_s = stall_timeout_s
        self.wall = wall
        self.now_s = time.time() if start_s is None else start_s  # sim time starts at the wall date
        self._lock = threading.Lock()
        self._stepping = False
        self._step_done = False
        self._last_wall = wall()
        self._waiting_since = self._last_wall
        self._stalled = False  # no action for stall_timeout_s: wall speed until the next one
        self._episode: int | None = None  # the running episode (as episode/state numbers it)
        self._announced: tuple[int | None, int] = (None, -1)  # (episode, step) the learner said it computes
        self._handled_step = -1  # the latest step of the running episode whose action was handled
        self.stalls = 0

    def set_stepping(self, stepping: bool, episode: int | None = None, first_step_now: bool = True) -> None:
        """Episode `episode` started (True) or ended (False). The first step's period passes at once,
        or, with `first_step_now=False`, when `first_step()` is called (after fresh observations)."""
        with self._lock:
            starting = stepping and not self._stepping
            if stepping != self._stepping:  # steps count from 0 in every episode
                self._handled_step = -1
            if self._stepping and not stepping:  # a discarded episode's number comes again: forget its steps
                self._announced = (None, -1)
            self._episode = episode if stepping else None
            self._stepping = stepping
            self._stalled = False
            self._last_wall = self._waiting_since = self.wall()
            if starting:
                self._step_done = first_step_now and not self._announced_this_episode()

    def first_step(self) -> None:
        """Let the first step's period pass (the learner's first tick comes), unless the learner already
        started that step (it ticked while time still ran at wall speed): then time waits for its action."""
        with self._lock:
            if self._stepping and self._handled_step < 0 and not self._announced_this_episode():
                self._step_done = True

    def _announced_this_episode(self) -> bool:
        return self._announced[0] == self._episode and self._announced[1] > self._handled_step

    @property
    def stepping(self) -> bool:
        return self._stepping

    @property
    def awaited_step(self) -> int:
        """The step of the running episode whose action comes next."""
        return self._handled_step + 1

    @property
    def computing(self) -> bool:
        """The learner announced a step of the running episode whose action has not been handled yet."""
        return self._stepping and self._announced_this_episode()

    def announce(self, step: int, episode: int | None = None) -> None:
        """The learner started computing the action of `step` in `episode`: time waits for it without a
        timeout. An announcement of another episode, or one overtaken by its own action, changes nothing."""
        with self._lock:
            if not self._stepping and step != 0:
                return  # before the episode runs only its first step can have started: this one is late
            if self._announced[0] == episode:
                step = max(step, self._announced[1])
            self._announced = (episode, step)
            if self._stalled and self.computing:  # acting again after a stall: back in lockstep from now
                self._stalled = False
                self._waiting_since = self._last_wall = self.wall()

    def step_done(self, step: int | None = None) -> None:
        """The action of the current step (`step`, when the message says) was handled (executed or refused):
        the next step's period passes, unless the learner already started the next step (it ran one
        step ahead, e.g. after ticking at wall speed before the episode's lockstep began), so that it
        falls back into step instead of staying a step ahead."""
        with self._lock:
            self._stalled = False
            if step is None:
                step = self._announced[1] if self._announced[0] == self._episode else self._handled_step + 1
            self._handled_step = max(self._handled_step, step)
            self._step_done = not self._announced_this_episode()

    def producer_lost(self) -> None:
        """Nobody publishes actions any more (the learner died while computing): stop waiting for it."""
        with self._lock:
            self._announced = (None, -1)

    def advance(self) -> float | None:
        """Called often by the bridge's clock thread; returns the new time when it moved, else None."""
        with self._lock:
            wall_now = self.wall()
            all_steps_done = self.steps_per_episode is not None and self.awaited_step >= self.steps_per_episode
            if self._stepping and not self._stalled and not self._step_done and not all_steps_done:
                if self.computing or wall_now - self._waiting_since <= self.stall_timeout_s:
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
