"""Human interventions: teleop inputs turned into the project's 7-D action, and who drives the arm.

Teleop sources (each yields `[dx, dy, dz, droll, dpitch, dyaw, gripper]` in [-1, 1], the policy's
convention): a `sensor_msgs/Joy` stream (the `joy` and `spacenav` drivers: a SpaceMouse gives six
axes and two buttons) through `JoyMapping`, and the operator page's keyboard / gamepad, which sends
ready-made actions on `teleop/action`.

`InterventionArbiter` decides, once per control step, whose action the arm executes. The policy's
action message still paces the loop (one step per learner tick, with the learner's step id), so the
stored episode keeps one transition per step; while the operator has taken over, the operator's
latest action is executed in its place and reported as `intervention`. Hand-over is bumpless: actions
are deltas on the commanded pose, and the operator's gripper starts from the arm's. If the teleop
stream goes quiet for `stream_timeout_s` while the operator holds control, the arm holds (nothing is
executed) until the stream is back or `release_after_s` has passed (the stream timeout plus the
watchdog period), after which the policy drives again.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from parl_robot.config import TeleopConfig

POLICY = "policy"
INTERVENTION = "intervention"
HELD = "held"  # the operator holds control but the stream is quiet: nothing is executed


class JoyMapping:
    """`sensor_msgs/Joy` -> (action, take-over pressed) with dead-band and scaling from `TeleopConfig`."""

    def __init__(self, config: TeleopConfig):
        self.config = config
        self.gripper_open = True
        self._gripper_button_was = False
        self._takeover_button_was = False

    def action(self, axes: list[float], buttons: list[int]) -> tuple[np.ndarray, bool]:
        """The action for one Joy message, and whether the take-over button was just pressed."""
        values = np.zeros(6)
        for dim, (axis, scale) in enumerate(zip(self.config.joy_axes, self.config.joy_axis_scale)):
            if 0 <= axis < len(axes):
                value = float(axes[axis])
                magnitude = abs(value)
                if magnitude <= self.config.deadband:
                    value = 0.0
                else:  # rescale so the motion starts from 0 at the dead-band edge
                    value = np.sign(value) * (magnitude - self.config.deadband) / (1.0 - self.config.deadband)
                values[dim] = np.clip(value * scale, -1.0, 1.0)
        gripper_pressed = _button(buttons, self.config.gripper_button)
        if gripper_pressed and not self._gripper_button_was:
            self.gripper_open = not self.gripper_open  # a press toggles, as on a SpaceMouse
        self._gripper_button_was = gripper_pressed
        takeover_pressed = _button(buttons, self.config.takeover_button)
        toggled = takeover_pressed and not self._takeover_button_was
        self._takeover_button_was = takeover_pressed
        return np.concatenate([values, [1.0 if self.gripper_open else -1.0]]), toggled

    def start_from_arm(self, action: np.ndarray, gripper_open: bool) -> np.ndarray:
        """At a take-over: the joystick's gripper state becomes the arm's (a SpaceMouse button only
        toggles, so without this a take-over while the arm holds an object would open the gripper).
        Returns `action` with that gripper command."""
        self.gripper_open = gripper_open
        action = np.array(action, dtype=float)
        action[6] = 1.0 if gripper_open else -1.0
        return action


def _button(buttons: list[int], index: int) -> bool:
    return 0 <= index < len(buttons) and bool(buttons[index])


@dataclass
class Decision:
    source: str  # POLICY, INTERVENTION or HELD
    action: np.ndarray | None  # what to execute (None when HELD)


class InterventionArbiter:
    """Whose action each control step executes; one place, on the control side, for every policy class."""

    def __init__(self, stream_timeout_s: float, release_after_s: float, clock):
        self.stream_timeout_s = stream_timeout_s
        self.release_after_s = release_after_s
        self.clock = clock
        self.active = False
        self.operator_action: np.ndarray | None = None
        self.operator_time: float | None = None
        self.interventions = 0  # steps executed from the operator
        self._lock = threading.RLock()  # teleop messages and control steps come from different threads

    def take_over(self, active: bool, gripper_open: bool | None = None) -> None:
        """Start or end an intervention. On start the operator's gripper begins as the arm's (bumpless)."""
        with self._lock:
            self._take_over(active, gripper_open)

    def _take_over(self, active: bool, gripper_open: bool | None) -> None:
        if active and not self.active:
            self.operator_action = np.zeros(7)
            self.operator_action[6] = 1.0 if (gripper_open is None or gripper_open) else -1.0
            self.operator_time = self.clock()
        self.active = active

    def operator_input(self, action: np.ndarray, takeover: bool | None = None) -> None:
        """A teleop message (its gripper command included: the sources start it from the arm's).
        `takeover` True/False starts/ends the intervention; None leaves it as it is."""
        with self._lock:
            if takeover is not None:
                self._take_over(takeover, None)
            self.operator_action = np.clip(np.asarray(action, float).reshape(7), -1.0, 1.0)
            self.operator_time = self.clock()

    def decide(self, policy_action: np.ndarray) -> Decision:
        with self._lock:
            return self._decide(policy_action)

    def _decide(self, policy_action: np.ndarray) -> Decision:
        if not self.active:
            return Decision(POLICY, policy_action)
        quiet_for = self.clock() - self.operator_time  # set whenever an intervention starts
        if quiet_for <= self.stream_timeout_s:
            self.interventions += 1
            return Decision(INTERVENTION, self.operator_action.copy())
        if quiet_for <= self.release_after_s:
            return Decision(HELD, None)
        self.active = False  # the operator's stream is gone: control goes back to the policy
        return Decision(POLICY, policy_action)
