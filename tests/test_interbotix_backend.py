"""The hardware path (ArmController + InterbotixArmBackend) driven through the Interbotix API's semantics.

`parl_robot.robot.interbotix_emulator` reproduces what interbotix_ros_toolboxes (humble, 8ae347e) does,
including the behaviour that broke the earlier backend: the speed check against the *stored*
moving time, register writes only on change, numeric IK from initial guesses, a start in the sleep
pose and measured joint states that trail the commands. Tests that do not inject faults also run
against the real package on a robot machine: `PARL_INTERBOTIX_REAL=1` with the xs_sdk driver up.
"""

import itertools
import os
import threading
import time

import numpy as np
import pytest

from parl_robot.config import ControlConfig
from parl_robot.robot import interbotix_emulator, widowx
from parl_robot.robot.arm_controller import ArmController
from parl_robot.robot.safety import DOWNWARD_ROTATION


class ManualClock:
    """Time that passes only when someone sleeps (the API's blocking waits, the homing poll)."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def emulated():
    """(driver, clock): the emulated driver on a manual clock, installed under the real module names."""
    clock = ManualClock()
    driver = interbotix_emulator.EmulatedDriver(clock=clock, sleep=clock.sleep)
    interbotix_emulator.install(driver)
    yield driver, clock
    interbotix_emulator.uninstall()


class RealTime:
    def __call__(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def make_controller(clock, control: ControlConfig | None = None):
    from parl_robot.robot.backend import InterbotixArmBackend

    control = control or ControlConfig()
    period = 1 / control.rate_hz
    backend = InterbotixArmBackend(moving_time=control.moving_time_periods * period,
                                   accel_time=control.accel_time_periods * period,
                                   home_joint_speed=control.home_joint_speed_rad_s,
                                   home_tolerance=control.home_tolerance_rad, clock=clock, sleep=clock.sleep)
    return ArmController(control, backend, clock=clock), backend


def step(controller, clock, action, period=0.2):
    clock.sleep(period)
    return controller.handle_action(np.asarray(action, float))


def drive_toward(controller, clock, target, steps=40, gripper=1.0):
    refused = 0
    for _ in range(steps):
        delta = np.clip((target - controller.integrator.command.position) / 0.05, -1, 1)
        refused += step(controller, clock, [*delta, 0, 0, 0, gripper]) is None
    clock.sleep(1.0)
    return refused


# ----- what the real API does (the emulation itself) ------------------------------------------------

def test_emulated_api_checks_speed_against_the_stored_moving_time(emulated):
    """The fault that killed the old backend at start-up: a slow home move issued while the stored
    moving time is short is refused as if it were fast, and construction writes no registers."""
    driver, clock = emulated
    from interbotix_xs_modules.xs_robot.arm import InterbotixManipulatorXS

    bot = InterbotixManipulatorXS("wx250s", moving_time=0.2, accel_time=0.05)
    assert driver.register_writes == []  # constructor stored 0.2 s and wrote nothing
    assert np.allclose(bot.arm.get_joint_positions(), widowx.SLEEP_JOINTS)
    home = widowx.pose_matrix(np.array([0.3, 0.0, 0.2]), DOWNWARD_ROTATION)
    _, solved = bot.arm.set_ee_pose_matrix(home, moving_time=1.5, accel_time=0.4, blocking=True)
    assert solved is False and driver.group_commands == []
    bot.arm.set_trajectory_time(moving_time=1.5, accel_time=0.4)  # set first: now it is checked as 1.5 s
    _, solved = bot.arm.set_ee_pose_matrix(home, moving_time=1.5, accel_time=0.4, blocking=True)
    assert solved is True and driver.register_writes == [("Profile_Velocity", 1500), ("Profile_Acceleration", 400)]
    assert np.allclose(bot.arm.get_ee_pose()[:3, 3], [0.3, 0.0, 0.2], atol=1e-3)


def test_emulated_joint_states_trail_the_commands(emulated):
    driver, clock = emulated
    driver.set_register("group", "arm", "Profile_Velocity", 1000)
    driver.set_register("group", "arm", "Profile_Acceleration", 250)
    target = widowx.SLEEP_JOINTS + 0.5
    driver.command_group(target)
    clock.sleep(0.1)
    early = driver.joint_positions()
    clock.sleep(0.4)
    middle = driver.joint_positions()
    clock.sleep(0.6)
    assert np.all(np.abs(early - widowx.SLEEP_JOINTS) < 0.05)  # still accelerating
    assert np.allclose(middle, widowx.SLEEP_JOINTS + 0.25, atol=0.01)  # half way at half time
    assert np.allclose(driver.joint_positions(), target)


# ----- start-up, homing, acting -------------------------------------------------------------------------

def test_startup_writes_the_acting_profile_and_homes_from_the_sleep_pose(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    # Bridge's convention: moving time 1.25 periods, acceleration 0.5 periods, written once at start.
    assert driver.register_writes == [("Profile_Velocity", 250), ("Profile_Acceleration", 100)]
    assert controller.handle_action(np.zeros(7)) is None  # never acts before a successful home
    assert "not homed" in controller.status.last_error
    assert controller.go_home(), controller.status.last_error
    assert np.max(np.abs(backend.joint_positions() - controller.neutral_joints)) <= 0.03
    assert driver.registers["Profile_Velocity"] == 250  # acting time restored after the slow move
    assert backend.gripper_opening() == pytest.approx(1.0)
    assert step(controller, clock, [0, 0, -1, 0, 0, 0, 1]) is not None


def test_homes_from_every_corner_of_the_box(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    low, high = np.array(controller.control.safety_box_low), np.array(controller.control.safety_box_high)
    for corner in itertools.product(*zip(low, high)):
        drive_toward(controller, clock, np.array(corner))
        moved_away = np.linalg.norm(backend.ee_pose()[0] - controller.neutral_position)
        assert moved_away > 0.05, corner
        assert controller.go_home(), f"{corner}: {controller.status.last_error}"
        assert np.max(np.abs(backend.joint_positions() - controller.neutral_joints)) <= 0.03, corner
        clock.sleep(1.0)
        assert np.allclose(backend.ee_pose()[0], controller.neutral_position, atol=2e-3), corner


def test_steps_are_non_blocking_and_refused_poses_move_nothing(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    sent = len(driver.group_commands)
    before = clock.now
    assert controller.handle_action(np.array([1, 0, 0, 0, 0, 0, -1.0])) is not None
    assert clock.now == before  # nothing blocked the control loop
    assert len(driver.group_commands) == sent + 1
    clock.sleep(0.6)
    assert backend.gripper_opening() == pytest.approx(0.0)  # closed, measured from the finger
    # Far outside the reach: the driver refuses, the command does not drift, the gripper is not touched.
    far = controller.control.__class__(safety_box_high=[0.9, 0.25, 0.35])
    controller.integrator.limits.box_high = np.asarray(far.safety_box_high, float)
    refused = drive_toward(controller, clock, np.array([0.9, 0.0, 0.2]), steps=15, gripper=-1.0)
    assert refused > 0 and "no IK solution" in controller.status.last_error
    commanded = controller.integrator.command.position.copy()
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is None  # asks to open on a refused step
    clock.sleep(0.6)
    assert backend.gripper_opening() == pytest.approx(0.0)
    assert np.allclose(controller.integrator.command.position, commanded)


def test_a_home_the_driver_cannot_reach_is_an_error_not_a_crash(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    driver.obstruct()  # something is in the way from the start
    assert controller.go_home() is False
    assert "did not reach the" in controller.status.last_error and not controller.status.homed
    assert controller.handle_action(np.zeros(7)) is None  # not homed: does not act
    driver.obstruct(False)
    assert controller.go_home()


# ----- e-stop, holds, faults --------------------------------------------------------------------------------

def test_estop_latches_refuses_everything_and_clear_reanchors_on_the_measured_pose(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    for _ in range(3):
        controller.handle_action(np.array([0, 0, -1, 0, 0, 0, 1.0]))  # three steps sent at once
    clock.sleep(0.1)  # mid-motion
    controller.estop()
    stopped_at = backend.ee_pose()[0]
    commands = len(driver.group_commands)
    assert controller.integrator.command.position[2] < stopped_at[2] - 0.05  # the target was far below
    assert step(controller, clock, [0, 0, 1, 0, 0, 0, 1]) is None and "estop" in controller.status.last_error
    assert controller.go_home() is False
    assert len(driver.group_commands) == commands
    clock.sleep(1.0)
    assert np.allclose(backend.ee_pose()[0], stopped_at, atol=0.01)  # it stopped, it did not go on down
    assert controller.clear_holds() == ""
    assert np.allclose(controller.integrator.command.position, backend.ee_pose()[0], atol=1e-6)
    command = step(controller, clock, [0, 0, 0.2, 0, 0, 0, 1])
    assert command is not None and command.position[2] == pytest.approx(backend.ee_pose()[0][2] + 0.01, abs=0.002)


def test_estop_between_ik_solve_and_publish_wins(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    solve = backend.bot.arm.set_ee_pose_matrix

    def solve_then_estop(*args, **kwargs):
        result = solve(*args, **kwargs)
        threading.Thread(target=controller.estop).start()  # the e-stop service, on its own thread
        time.sleep(0.2)
        return result

    backend.bot.arm.set_ee_pose_matrix = solve_then_estop
    commands = len(driver.group_commands)
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is None
    assert len(driver.group_commands) == commands + 1  # only the hold (the measured pose), not the step
    assert np.allclose(driver.group_commands[-1], driver.joint_positions(), atol=1e-6)


def test_estop_preempts_a_homing_move(emulated):
    driver, _ = emulated
    driver.clock, driver.sleep = time.monotonic, time.sleep  # real time: homing runs on its own thread
    controller, backend = make_controller(RealTime())
    results = []
    homing = threading.Thread(target=lambda: results.append(controller.go_home()))
    homing.start()
    deadline = time.monotonic() + 10
    while np.max(np.abs(driver.joint_positions() - widowx.SLEEP_JOINTS)) < 0.1 and time.monotonic() < deadline:
        time.sleep(0.01)
    controller.estop()
    homing.join(timeout=5)
    assert results == [False] and "e-stop" in controller.status.last_error
    time.sleep(0.4)  # the hold's own 0.25 s profile
    held = driver.joint_positions()
    time.sleep(0.5)
    assert np.allclose(driver.joint_positions(), held, atol=1e-6)  # stopped, not finishing the home move
    assert np.max(np.abs(held - controller.neutral_joints)) > 0.1


def test_tracking_error_holds_and_reports(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    step(controller, clock, [0, 0, -1, 0, 0, 0, 1])
    assert not controller.check_tracking()  # following normally
    driver.obstruct()  # the arm hits something
    tripped = []
    for _ in range(6):
        step(controller, clock, [0, 0, -1, 0, 0, 0, 1])
        tripped.append(controller.check_tracking())
    assert any(tripped) and controller.status.held_reasons == ["tracking_error"]
    assert "tracking error" in controller.status.fault and controller.status.tracking_error_m > 0.03
    assert step(controller, clock, [0, 0, -1, 0, 0, 0, 1]) is None
    driver.obstruct(False)
    assert controller.clear_holds() == ""
    assert not controller.check_tracking()
    assert step(controller, clock, [0, 0, 0.5, 0, 0, 0, 1]) is not None


def test_motor_error_holds_until_rebooted(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    assert not controller.check_motors()
    driver.raise_hardware_error("elbow", 0x20)
    assert controller.check_motors()
    assert controller.status.held_reasons == ["motor_error"] and "elbow" in controller.status.fault
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is None
    assert "reboot" in controller.clear_holds()  # cannot clear while the motor is faulted
    controller.reboot_motors()
    assert driver.reboots == 2 and driver.hardware_error["elbow"] == 0  # the arm group, then the gripper
    assert controller.clear_holds() == ""
    assert controller.go_home()
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is not None


def test_watchdog_holds_after_two_periods(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock, ControlConfig(rate_hz=5.0))
    assert controller.go_home()
    assert step(controller, clock, [0, 0, 0, 0, 0, 0, 1]) is not None
    clock.sleep(0.3)
    assert controller.check_watchdog() is False  # 0.3 s < 2 / 5 Hz
    clock.sleep(0.15)
    assert controller.check_watchdog() is True and controller.status.holding
    assert controller.check_watchdog() is False  # counted once
    assert controller.status.watchdog_holds == 1
    assert controller.handle_action([0, 0, 0.5, 0, 0, 0]) is None  # malformed: refused, arm holds


def test_park_lifts_then_goes_to_sleep_and_shutdown_is_last(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    drive_toward(controller, clock, np.array([0.35, -0.15, 0.05]))
    low_z = backend.ee_pose()[0][2]
    assert controller.park() == ""
    assert np.allclose(driver.joint_positions(), widowx.SLEEP_JOINTS, atol=0.03)
    # The first parking command lifted the gripper straight up before any joint-space sweep.
    first = widowx.forward_kinematics(driver.group_commands[-3])[:3, 3]
    assert first[2] > low_z + 0.1
    controller.estop()
    assert "not parked" in controller.park()  # a latched e-stop means: do not move


def test_missing_interbotix_says_what_to_install(monkeypatch):
    import sys

    from parl_robot.robot.backend import InterbotixArmBackend

    monkeypatch.setitem(sys.modules, "interbotix_xs_modules", None)
    monkeypatch.setitem(sys.modules, "interbotix_common_modules", None)
    with pytest.raises(RuntimeError, match="interbotix_xs_modules.*xsarm_control.launch.py robot_model:=wx250s"):
        InterbotixArmBackend()


@pytest.mark.skipif(os.environ.get("PARL_INTERBOTIX_REAL") != "1",
                    reason="real arm only: PARL_INTERBOTIX_REAL=1 with the xs_sdk driver running")
def test_real_driver_homes_acts_and_parks():
    import rclpy

    rclpy.init()
    controller, backend = make_controller(RealTime())
    try:
        assert controller.go_home(), controller.status.last_error
        for _ in range(5):
            time.sleep(0.2)
            assert controller.handle_action(np.array([0, 0, -0.5, 0, 0, 0, 1.0])) is not None
        time.sleep(0.5)
        assert not controller.check_tracking() and not controller.check_motors()
        assert controller.go_home() and controller.park() == ""
    finally:
        backend.close()
