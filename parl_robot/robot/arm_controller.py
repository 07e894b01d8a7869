"""The control core shared by the hardware control node and the sim bridge (no ROS inside).

It validates each action, integrates it into the commanded pose under the safety limits, sends it
to the backend, and keeps the watchdog and the e-stop latch. The arm never moves without a fresh,
valid action, and not at all while the e-stop is latched.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

import numpy as np

from parl_robot.config import ControlConfig
from parl_robot.robot.backend import ArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION, ActionError, CommandIntegrator, EECommand, SafetyLimits


@dataclass
class ControllerStatus:
    executed_actions: int = 0
    rejected_actions: int = 0
    watchdog_holds: int = 0
    estopped: bool = False
    holding: bool = True
    action_rate_hz: float = 0.0
    last_error: str = ""


class ArmController:
    def __init__(self, control: ControlConfig, backend: ArmBackend, clock=time.monotonic):
        self.control = control
        self.backend = backend
        self.clock = clock
        self.period = 1.0 / control.rate_hz
        self.watchdog_timeout = control.watchdog_periods * self.period
        self.home_position = np.asarray(control.home_xyz, dtype=float)
        self.integrator = CommandIntegrator(SafetyLimits.from_config(control), self.home_position, DOWNWARD_ROTATION)
        self.status = ControllerStatus()
        self.last_action_time: float | None = None
        self._executed_times: collections.deque[float] = collections.deque(maxlen=20)

    def handle_action(self, values) -> EECommand | None:
        """Execute one action message; returns the command sent, or None if it was refused."""
        if self.status.estopped:
            self.status.rejected_actions += 1
            self.status.last_error = "e-stop latched"
            return None
        previous = self.integrator.command
        try:
            command = self.integrator.apply(values)
        except ActionError as err:
            self.status.rejected_actions += 1
            self.status.last_error = str(err)
            return None
        if not self.backend.execute(command, self.period):
            # No IK solution within the joint limits: the arm did not move, so neither does the command.
            self.integrator.command = previous
            self.status.rejected_actions += 1
            self.status.last_error = f"no IK solution for {np.round(command.position, 3).tolist()}; holding"
            return None
        self.status.last_error = ""
        now = self.clock()
        self.last_action_time = now
        self._executed_times.append(now)
        self.status.executed_actions += 1
        self.status.holding = False
        if len(self._executed_times) >= 2:
            span = self._executed_times[-1] - self._executed_times[0]
            self.status.action_rate_hz = (len(self._executed_times) - 1) / span if span > 0 else 0.0
        return command

    def check_watchdog(self) -> bool:
        """Called periodically; returns True when the arm has just been put on hold."""
        if self.status.holding or self.last_action_time is None:
            return False
        if self.clock() - self.last_action_time > self.watchdog_timeout:
            # Position-controlled arm: holding means sending nothing new; re-anchor on the last command.
            self.status.holding = True
            self.status.watchdog_holds += 1
            return True
        return False

    def estop(self) -> None:
        self.status.estopped = True
        self.status.holding = True
        self.backend.hold()  # stop now, do not finish the last commanded motion

    def clear_estop(self) -> None:
        self.status.estopped = False

    def go_home(self) -> bool:
        if self.status.estopped:
            return False
        self.backend.go_home(self.home_position, DOWNWARD_ROTATION)
        self.integrator.reset(self.home_position, DOWNWARD_ROTATION, gripper_open=True)
        self.status.holding = True
        return True
