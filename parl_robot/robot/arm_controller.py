"""The control core shared by the hardware control node and the sim bridge (no ROS inside).

It validates each action, integrates it into the commanded pose under the safety limits, sends it
to the backend, and keeps the watchdog and the latched holds. The arm never moves without a fresh,
valid action, and not at all while a hold is latched: `estop` (operator), `tracking_error` (the
measured gripper is far from where the commands should have brought it), `motor_error` (a motor
reports a hardware error). Latched holds end only through `clear_holds`, which re-anchors the
command on the measured pose so the arm never jumps toward a stale target. `camera_lost` holds
while the camera is gone and releases itself when it is back (nothing moved meanwhile).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from parl_robot.config import ControlConfig
from parl_robot.robot import widowx
from parl_robot.robot.backend import ArmBackend, HomingError
from parl_robot.robot.safety import DOWNWARD_ROTATION, ActionError, CommandIntegrator, EECommand, SafetyLimits

LATCHED_REASONS = ("estop", "tracking_error", "motor_error")
SELF_CLEARING_REASONS = ("camera_lost",)  # held while it lasts, released when the camera is back
TRACKING_TRIP_TICKS = 2  # consecutive checks over the tolerance before holding


def neutral_joints(control: ControlConfig) -> np.ndarray:
    """The reset pose in joint space: the calibrated one, or IK of `home_xyz` pointing down."""
    if control.neutral_joints:
        return np.asarray(control.neutral_joints, dtype=float)
    joints, solved = widowx.solve_ik(widowx.pose_matrix(np.asarray(control.home_xyz, float), DOWNWARD_ROTATION))
    if not solved:
        raise ValueError(f"control.home_xyz {control.home_xyz} has no IK solution pointing down: choose a reachable home")
    return joints


def distance_to_path(point: np.ndarray, path: list[np.ndarray]) -> float:
    """Shortest distance from `point` to the polyline through `path` (one point: to that point)."""
    best = float(np.linalg.norm(point - path[0]))
    for start, end in zip(path[:-1], path[1:]):
        segment = end - start
        length_sq = float(segment @ segment)
        fraction = 0.0 if length_sq == 0 else float(np.clip((point - start) @ segment / length_sq, 0.0, 1.0))
        best = min(best, float(np.linalg.norm(point - (start + fraction * segment))))
    return best


@dataclass
class ControllerStatus:
    executed_actions: int = 0
    rejected_actions: int = 0
    watchdog_holds: int = 0
    estopped: bool = False
    holding: bool = True
    action_rate_hz: float = 0.0
    last_error: str = ""
    held_reasons: list = field(default_factory=list)  # latched: estop / tracking_error / motor_error
    fault: str = ""  # what tripped the last non-e-stop hold, for the operator
    tracking_error_m: float = 0.0
    homed: bool = False


class ArmController:
    def __init__(self, control: ControlConfig, backend: ArmBackend, clock=time.monotonic):
        self.control = control
        self.backend = backend
        self.clock = clock
        self.period = 1.0 / control.rate_hz
        self.moving_time = control.moving_time_periods * self.period
        self.watchdog_timeout = control.watchdog_periods * self.period
        self.home_position = np.asarray(control.home_xyz, dtype=float)
        self.neutral_joints = neutral_joints(control)
        neutral_pose = widowx.forward_kinematics(self.neutral_joints)
        self.neutral_position, self.neutral_rotation = neutral_pose[:3, 3].copy(), neutral_pose[:3, :3].copy()
        self.integrator = CommandIntegrator(SafetyLimits.from_config(control), self.neutral_position, self.neutral_rotation)
        self.status = ControllerStatus()
        self.last_action_time: float | None = None
        self._executed_times: collections.deque[float] = collections.deque(maxlen=20)
        self._commanded_path: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=64)
        self._tracking_over = 0
        self._homing = False
        self._lock = threading.RLock()  # actions, holds and homing come from different executor threads

    # ----- acting -------------------------------------------------------------------------------
    def handle_action(self, values) -> EECommand | None:
        """Execute one action message; returns the command sent, or None if it was refused."""
        with self._lock:
            if self.status.held_reasons or self._homing or not self.status.homed:
                self.status.rejected_actions += 1
                reasons = self.status.held_reasons or (["homing"] if self._homing else ["not homed: call robot/home"])
                self.status.last_error = f"held: {', '.join(reasons)}"
                return None
            previous = self.integrator.command
            try:
                command = self.integrator.apply(values)
            except ActionError as err:
                self.status.rejected_actions += 1
                self.status.last_error = str(err)
                return None
            if not self.backend.execute(command, self.period):
                # The driver refused the pose: the arm did not move, so neither does the command.
                self.integrator.command = previous
                self.status.rejected_actions += 1
                self.status.last_error = f"no IK solution within the joint limits for {np.round(command.position, 3).tolist()}; holding"
                return None
            self.status.last_error = ""
            now = self.clock()
            self.last_action_time = now
            self._executed_times.append(now)
            self._commanded_path.append((now, command.position.copy()))
            self.status.executed_actions += 1
            self.status.holding = False
            if len(self._executed_times) >= 2:
                span = self._executed_times[-1] - self._executed_times[0]
                self.status.action_rate_hz = (len(self._executed_times) - 1) / span if span > 0 else 0.0
            return command

    def check_watchdog(self) -> bool:
        """Called periodically; returns True when the arm has just been put on hold."""
        with self._lock:
            if self.status.holding or self.last_action_time is None:
                return False
            if self.clock() - self.last_action_time > self.watchdog_timeout:
                # Position-controlled arm: holding means sending nothing new; it settles on the last command.
                self.status.holding = True
                self.status.watchdog_holds += 1
                return True
            return False

    # ----- supervision ----------------------------------------------------------------------------
    def check_tracking(self) -> bool:
        """Compare the measured gripper with the commanded path; returns True when it has just tripped.

        The arm may lag its commands by up to the moving time: the measured position is compared with
        the polyline through the commands of the last `moving_time + period`, starting from the last
        command it must have reached by now."""
        with self._lock:
            if not self._commanded_path or "tracking_error" in self.status.held_reasons or "estop" in self.status.held_reasons:
                return False
            now = self.clock()
            settled_before = now - (self.moving_time + self.period)
            recent = [position for time_sent, position in self._commanded_path if time_sent >= settled_before]
            reached = [position for time_sent, position in self._commanded_path if time_sent < settled_before]
            path = ([reached[-1]] if reached else []) + recent
            measured, _ = self.backend.ee_pose()
            error = distance_to_path(np.asarray(measured, float), path)
            self.status.tracking_error_m = error
            self._tracking_over = self._tracking_over + 1 if error > self.control.tracking_tolerance_m else 0
            if self._tracking_over < TRACKING_TRIP_TICKS:
                return False
            self._latch("tracking_error", f"tracking error: the gripper is {error * 1000:.0f} mm from its commanded path "
                                          f"(tolerance {self.control.tracking_tolerance_m * 1000:.0f} mm): blocked or collided?")
            return True

    def check_motors(self) -> bool:
        """Poll the motors' hardware error status; returns True when a fault has just latched a hold."""
        faults = self.backend.motor_faults()
        with self._lock:
            if not faults or "motor_error" in self.status.held_reasons:
                return False
            described = ", ".join(f"{name} (Hardware_Error_Status {value:#04x})" for name, value in faults.items())
            self._latch("motor_error", f"motor hardware error: {described}; reboot the motors from the page, then clear")
            return True

    def set_camera_lost(self, lost: bool) -> bool:
        """The camera is gone (True) or back (False); returns True when the hold state changed."""
        with self._lock:
            if lost == ("camera_lost" in self.status.held_reasons):
                return False
            if lost:
                self.status.held_reasons.append("camera_lost")
                self.status.holding = True
            else:
                self.status.held_reasons.remove("camera_lost")
            return True

    def _latch(self, reason: str, fault: str) -> None:
        if reason not in self.status.held_reasons:
            self.status.held_reasons.append(reason)
        if reason != "estop":
            self.status.fault = fault
        self.status.estopped = "estop" in self.status.held_reasons
        self.status.holding = True
        self.backend.hold()

    # ----- operator ---------------------------------------------------------------------------------
    def estop(self) -> None:
        """Stop now (not after the current command or homing move) and refuse everything until cleared."""
        self._latch("estop", "")

    def clear_holds(self) -> str:
        """Clear the latched holds; returns '' or why they cannot be cleared (a motor still faulted)."""
        faults = self.backend.motor_faults()
        with self._lock:
            if faults:
                return f"motors still report hardware errors: {sorted(faults)}; reboot them first"
            self.status.held_reasons[:] = [r for r in self.status.held_reasons if r in SELF_CLEARING_REASONS]
            self.status.estopped = False
            self.status.fault = ""
            self._tracking_over = 0
            self.backend.release_hold()
            position, rotation = self.backend.ee_pose()
            self.integrator.reset(position, rotation, gripper_open=self.backend.gripper_opening() > 0.5)
            self._commanded_path.clear()
            self._commanded_path.append((self.clock(), self.integrator.command.position.copy()))
            self.last_action_time = None
            self.status.holding = True
            return ""

    def clear_estop(self) -> str:
        return self.clear_holds()

    def reboot_motors(self) -> None:
        self.backend.reboot_motors()

    def go_home(self) -> bool:
        """Blocking reset to the neutral pose; False (with `status.last_error`) when held or it fails."""
        if self.status.held_reasons:
            self.status.last_error = f"home refused: held ({', '.join(self.status.held_reasons)})"
            return False
        self._homing = True
        try:
            self.backend.go_home(self.neutral_joints, self.home_position[2])
        except HomingError as err:
            self.status.last_error = f"homing failed: {err}"
            self.status.homed = False
            return False
        finally:
            self._homing = False
        with self._lock:
            self.integrator.reset(self.neutral_position, self.neutral_rotation, gripper_open=True)
            self._commanded_path.clear()
            self._commanded_path.append((self.clock(), self.integrator.command.position.copy()))
            self._tracking_over = 0
            self.last_action_time = None
            self.status.holding = True
            self.status.homed = True
            self.status.last_error = ""
        return True

    def park(self) -> str:
        """Lift, neutral, sleep pose before shutdown; returns '' or why the arm was left where it is."""
        park = getattr(self.backend, "park", None)
        if park is None:
            return ""
        if self.status.held_reasons:
            return f"not parked: held ({', '.join(self.status.held_reasons)}); the motors hold the arm where it is"
        try:
            park(self.neutral_joints, self.home_position[2])
        except HomingError as err:
            return f"parking failed: {err}"
        return ""
