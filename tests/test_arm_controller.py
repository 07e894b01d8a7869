"""ArmController's bookkeeping, as the operator page and the control node read it: counters, rates,
messages, the tracking path and the holds (mutation testing found these unchecked, issue 33).

Driven through the Interbotix emulator (`test_interbotix_backend.py`'s fixtures) on a manual clock.
Where a test needs the measured gripper at a chosen point, it replaces only `ee_pose` on the real
backend; the rest (IK, holds, homing) stays the emulated API.
"""

from dataclasses import replace

import numpy as np
import pytest
from test_interbotix_backend import ManualClock, emulated, make_controller, step  # noqa: F401 (fixture)

from parl_robot.config import ControlConfig
from parl_robot.robot import widowx
from parl_robot.robot.arm_controller import TRACKING_TRIP_TICKS, ArmController, distance_to_path, neutral_joints
from parl_robot.robot.backend import HomingError, SimArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION

STILL = [0, 0, 0, 0, 0, 0, 1.0]


# ----- geometry ------------------------------------------------------------------------------------

def test_distance_to_a_polyline():
    a, b, c = np.array([1.0, 2.0, 0.0]), np.array([3.0, 2.0, 0.0]), np.array([3.0, 5.0, 0.0])
    assert distance_to_path(np.array([2.0, 3.0, 0.0]), [a]) == pytest.approx(np.sqrt(2.0))  # one point
    assert distance_to_path(np.array([2.0, 3.0, 0.0]), [a, b]) == pytest.approx(1.0)  # onto the segment's middle
    assert distance_to_path(np.array([0.0, 2.0, 0.0]), [a, b]) == pytest.approx(1.0)  # before its start: to a
    assert distance_to_path(np.array([5.0, 2.0, 0.0]), [a, b]) == pytest.approx(2.0)  # past its end: to b
    assert distance_to_path(np.array([4.0, 4.5, 0.0]), [a, b, c]) == pytest.approx(1.0)  # the second segment
    assert distance_to_path(np.array([2.0, 2.0, 2.0]), [a, b, c]) == pytest.approx(2.0)
    assert distance_to_path(np.array([4.0, 6.0, 0.0]), [a, b, c]) == pytest.approx(np.sqrt(2.0))  # past the last point
    assert distance_to_path(np.array([1.0, 4.0, 0.0]), [a, a, b]) == pytest.approx(2.0)  # a repeated point
    unit = a + np.array([1.0, 0.0, 0.0])  # a segment whose squared length is exactly 1
    assert distance_to_path(np.array([1.5, 3.0, 0.0]), [a, unit]) == pytest.approx(1.0)


# ----- set-up --------------------------------------------------------------------------------------

def test_neutral_joints_calibrated_or_solved_and_the_integrator_starts_there(emulated):
    calibrated = [0.1, -0.2, 0.3, 0.0, 0.4, 0.0]
    joints = neutral_joints(ControlConfig(neutral_joints=calibrated))
    assert joints.dtype == float and joints.tolist() == calibrated
    solved = neutral_joints(ControlConfig())
    pose = widowx.forward_kinematics(solved)
    assert np.allclose(pose[:3, 3], ControlConfig().home_xyz, atol=1e-3) and np.allclose(pose[:3, :3], DOWNWARD_ROTATION, atol=1e-3)
    with pytest.raises(ValueError, match=r"control.home_xyz \[2.0, 0.0, 0.2\] has no IK solution"):
        neutral_joints(ControlConfig(home_xyz=[2.0, 0.0, 0.2]))

    _, clock = emulated
    controller, _ = make_controller(clock)
    start = widowx.forward_kinematics(controller.neutral_joints)
    assert np.allclose(controller.integrator.command.position, start[:3, 3])
    assert np.allclose(controller.integrator.command.rotation, start[:3, :3])
    assert controller.home_position.dtype == float


# ----- acting ----------------------------------------------------------------------------------------

def test_refusals_are_counted_and_say_why(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert step(controller, clock, STILL) is None
    assert controller.status.last_error == "held: not homed: call robot/home" and controller.status.rejected_actions == 1

    seen = []
    home = backend.go_home
    backend.go_home = lambda *args: (seen.append((controller.handle_action(STILL), controller.status.last_error)),
                                     home(*args))[1]
    assert controller.go_home()
    assert seen == [(None, "held: homing")] and controller.status.rejected_actions == 2
    assert controller.status.last_error == ""

    assert controller.handle_action([0, 0, 0.5]) is None  # malformed
    assert controller.status.rejected_actions == 3 and "7" in controller.status.last_error

    controller.set_camera_lost(True)
    controller.estop()
    assert step(controller, clock, STILL) is None
    assert controller.status.last_error == "held: camera_lost, estop" and controller.status.rejected_actions == 4


def test_a_pose_the_driver_refuses_keeps_the_command_and_says_where(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    assert step(controller, clock, [0.1234, 0, 0, 0, 0, 0, 1]) is not None  # off the millimetre grid
    calls = []
    backend.execute = lambda command, duration: calls.append(duration) or False
    before = controller.integrator.command.position.copy()
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is None
    assert step(controller, clock, [1, 0, 0, 0, 0, 0, 1]) is None
    assert calls == [controller.period] * 2  # one control period per step, the moving time's unit
    assert np.array_equal(controller.integrator.command.position, before)
    wanted = np.round(before + [controller.control.action_scale[0], 0, 0], 3).tolist()
    assert controller.status.last_error == f"no IK solution within the joint limits for {wanted}; holding"
    assert controller.status.rejected_actions == 2 and controller.status.executed_actions == 1
    del backend.execute  # the driver accepts again: the error is cleared by the next executed step
    assert step(controller, clock, STILL) is not None and controller.status.last_error == ""
    assert controller.status.holding is False


def test_executed_actions_and_the_action_rate_over_the_last_twenty(emulated):
    _, clock = emulated
    controller, _ = make_controller(clock, ControlConfig(rate_hz=4.0))
    assert controller.go_home()
    assert controller.status.holding
    assert step(controller, clock, STILL, period=1.0) is not None
    assert controller.status.executed_actions == 1 and controller.status.action_rate_hz == 0.0
    assert not controller.status.holding
    for _ in range(4):
        step(controller, clock, STILL, period=1.0)
    assert controller.status.executed_actions == 5 and controller.status.action_rate_hz == pytest.approx(1.0)
    for _ in range(19):  # the window holds the last 20 actions: the last 1 Hz one and 19 at 4 Hz
        step(controller, clock, STILL, period=0.25)
    assert controller.status.executed_actions == 24 and controller.status.action_rate_hz == pytest.approx(4.0)
    controller._executed_times.clear()
    controller.handle_action(STILL)
    controller.handle_action(STILL)  # two at the same instant: no rate rather than a division by zero
    assert controller.status.action_rate_hz == 0.0
    controller._executed_times.clear()
    step(controller, clock, STILL, period=0.5)
    step(controller, clock, STILL, period=0.5)
    assert controller.status.action_rate_hz == pytest.approx(2.0)  # a span under a second counts too


def test_watchdog_boundary_and_count(emulated):
    _, clock = emulated
    controller, _ = make_controller(clock, ControlConfig(rate_hz=4.0))  # watchdog 2 periods = 0.5 s, exact in binary
    assert controller.go_home()
    for expected in (1, 2):
        step(controller, clock, STILL)
        clock.sleep(0.5)
        assert controller.check_watchdog() is False  # exactly the timeout: not yet
        clock.sleep(0.25)
        assert controller.check_watchdog() is True and controller.status.watchdog_holds == expected


# ----- supervision -------------------------------------------------------------------------------------

def _measured_at(backend, position):
    rotation = backend.ee_pose()[1]
    backend.ee_pose = lambda: (np.asarray(position, float), rotation)


def test_tracking_compares_with_the_path_since_the_last_settled_command(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock, ControlConfig(rate_hz=4.0, tracking_tolerance_m=0.03))
    assert controller.go_home()
    home = controller.integrator.command.position.copy()
    commands = [step(controller, clock, [0, 0, -1, 0, 0, 0, 1]).position.copy() for _ in range(6)]  # 0.25 s apart
    # Settled: sent before now − (moving time + period) = now − 0.5625 s: home and commands 0–2; the path
    # runs from command 2 (the last it must have reached) through 3, 4, 5.
    for on_path in (2, 3, 5):
        _measured_at(backend, commands[on_path])
        assert controller.check_tracking() is False
        assert controller.status.tracking_error_m == pytest.approx(0.0, abs=1e-9)
    _measured_at(backend, commands[1])  # behind the last command it must have reached by now
    controller.check_tracking()
    assert controller.status.tracking_error_m == pytest.approx(np.linalg.norm(commands[2] - commands[1]))
    _measured_at(backend, home)
    controller.check_tracking()
    assert controller.status.tracking_error_m == pytest.approx(np.linalg.norm(commands[2] - home))


def test_tracking_trips_on_consecutive_checks_only_and_reports_millimetres(emulated):
    _, clock = emulated
    # 0.3004 m: printed as 300 mm, where a ×1001 slip would print 301
    controller, backend = make_controller(clock, ControlConfig(tracking_tolerance_m=0.3004))
    assert controller.go_home()
    command = step(controller, clock, STILL).position
    far, near = command + [0, 0.9, 0], command + [0, 0.01, 0]
    assert TRACKING_TRIP_TICKS == 2
    for measured, trips in ((far, False), (near, False), (far, False), (far, True)):  # an in-tolerance check resets
        _measured_at(backend, measured)
        assert controller.check_tracking() is trips
    assert controller.status.fault == ("tracking error: the gripper is 900 mm from its commanded path (tolerance 300 mm): "
                                       "blocked or collided?")
    assert controller.status.held_reasons == ["tracking_error"] and controller.status.holding
    assert controller.check_tracking() is False  # latched once
    assert controller.clear_holds() == ""
    _measured_at(backend, controller.integrator.command.position + [0, 0.08, 0])
    assert controller.check_tracking() is False  # the count starts again after clearing


def test_no_tracking_check_under_an_estop(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    command = step(controller, clock, STILL).position
    controller.estop()
    _measured_at(backend, command + [0, 0.1, 0])
    assert [controller.check_tracking() for _ in range(3)] == [False] * 3
    assert controller.status.held_reasons == ["estop"] and controller.status.fault == ""
    assert controller.status.tracking_error_m == 0.0


def test_motor_fault_message_names_every_motor(emulated):
    driver, clock = emulated
    controller, _ = make_controller(clock)
    assert controller.go_home()
    driver.raise_hardware_error("elbow", 0x20)
    driver.raise_hardware_error("wrist_angle", 0x04)
    assert controller.check_motors()
    assert controller.status.fault == ("motor hardware error: elbow (Hardware_Error_Status 0x20), wrist_angle "
                                       "(Hardware_Error_Status 0x04); reboot the motors from the page, then clear")
    assert controller.check_motors() is False and controller.status.held_reasons == ["motor_error"]


def test_camera_loss_holds_and_releases_itself(emulated):
    _, clock = emulated
    controller, _ = make_controller(clock)
    assert controller.go_home()
    step(controller, clock, STILL)
    assert not controller.status.holding
    assert controller.set_camera_lost(False) is False  # nothing to release
    assert controller.set_camera_lost(True) is True
    assert controller.status.held_reasons == ["camera_lost"] and controller.status.holding
    assert controller.set_camera_lost(True) is False
    assert step(controller, clock, STILL) is None and controller.status.last_error == "held: camera_lost"
    controller.estop()
    assert controller.clear_holds() == ""
    assert controller.status.held_reasons == ["camera_lost"]  # clearing does not bring the camera back
    assert controller.set_camera_lost(False) is True and controller.status.held_reasons == []
    assert step(controller, clock, STILL) is not None


def test_latched_holds_set_the_flags_the_page_shows(emulated):
    driver, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    step(controller, clock, STILL)
    controller.estop()
    assert controller.status.estopped and controller.status.holding and controller.status.fault == ""
    assert controller.status.held_reasons == ["estop"]
    controller.estop()
    assert controller.status.held_reasons == ["estop"]  # latched once
    assert controller.clear_holds() == ""
    assert controller.status.estopped is False and controller.status.holding  # the page's JSON: false, not null
    step(controller, clock, STILL)
    driver.raise_hardware_error("elbow")
    controller.check_motors()
    assert not controller.status.estopped and "elbow" in controller.status.fault
    controller.estop()  # an e-stop on top keeps the motor fault's description
    assert controller.status.estopped and "elbow" in controller.status.fault
    controller.reboot_motors()
    assert controller.clear_holds() == "" and controller.status.fault == "" and not controller.status.estopped


def test_clearing_reanchors_with_the_measured_gripper_and_waits_for_a_new_action(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock, ControlConfig(rate_hz=4.0))
    assert controller.go_home()
    assert controller.integrator.command.gripper_open
    for _ in range(8):
        step(controller, clock, [0, 0, 0, 0, 0, 0, -1.0])  # close
    clock.sleep(2.0)
    assert backend.gripper_opening() < 0.5
    controller.estop()
    assert controller.clear_holds() == ""
    assert controller.integrator.command.gripper_open is False
    assert controller.last_action_time is None and controller.status.holding
    clock.sleep(5.0)
    assert controller.check_watchdog() is False  # nothing to time out until the next action
    for _ in range(8):
        step(controller, clock, STILL)  # open
    clock.sleep(2.0)
    controller.estop()
    controller.clear_holds()
    assert controller.integrator.command.gripper_open is True


def test_homing_refused_while_held_and_a_failed_homing_is_reported(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock)
    controller.set_camera_lost(True)
    controller.estop()
    assert controller.go_home() is False
    assert controller.status.last_error == "home refused: held (camera_lost, estop)"
    controller.clear_holds()
    controller.set_camera_lost(False)

    def fail(*args):
        raise HomingError("the elbow did not arrive")

    home = backend.go_home
    backend.go_home = fail
    assert controller.go_home() is False
    assert controller.status.last_error == "homing failed: the elbow did not arrive" and controller.status.homed is False
    assert step(controller, clock, STILL) is None
    assert controller.status.last_error == "held: not homed: call robot/home"  # not stuck "homing"
    backend.go_home = home
    assert controller.go_home()
    assert controller.status.homed and controller.status.last_error == "" and controller.status.holding


def test_homing_resets_the_command_the_tracking_count_and_the_watchdog(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock, ControlConfig(rate_hz=4.0))
    assert controller.go_home()
    for _ in range(8):
        step(controller, clock, [0, 0, -1, 0, 0, 0, -1.0])
    command = controller.integrator.command.position.copy()
    _measured_at(backend, command + [0, 0.1, 0])
    assert controller.check_tracking() is False  # one over-tolerance check counted
    del backend.ee_pose  # the real measurement again
    assert controller.go_home()
    assert controller.integrator.command.gripper_open is True
    assert np.allclose(controller.integrator.command.position, controller.neutral_position)
    assert controller.last_action_time is None and controller.status.holding
    clock.sleep(5.0)
    assert controller.check_watchdog() is False
    step(controller, clock, STILL)
    _measured_at(backend, controller.integrator.command.position + [0, 0.1, 0])
    assert controller.check_tracking() is False  # the earlier over-tolerance check was forgotten


def test_parking_without_a_park_move_or_while_held(emulated):
    _, clock = emulated
    controller, _ = make_controller(clock)
    controller.set_camera_lost(True)
    controller.estop()
    assert controller.park() == ("not parked: held (camera_lost, estop); the motors hold the arm where it is")

    class World:  # what SimArmBackend reads at construction; the sim has no park move
        pass

    sim_controller = ArmController(ControlConfig(), SimArmBackend(World()), clock=ManualClock())
    assert sim_controller.park() == ""


def test_tracking_boundaries_a_command_exactly_settled_and_an_error_exactly_at_the_tolerance(emulated):
    _, clock = emulated
    # moving time 1 period at 4 Hz: a command counts as settled 0.5 s after it was sent (exact in binary)
    controller, backend = make_controller(clock, ControlConfig(rate_hz=4.0, moving_time_periods=1.0,
                                                               accel_time_periods=0.5))
    assert controller.go_home()
    home = controller.integrator.command.position.copy()
    clock.now = 200.0
    first = step(controller, clock, [1, 0, 0, 0, 0, 0, 1], period=0.25).position.copy()  # at 200.25: x
    step(controller, clock, [0, 1, 0, 0, 0, 0, 1], period=0.25)  # 200.5: y, off the line home → first
    step(controller, clock, [0, 1, 0, 0, 0, 0, 1], period=0.25)  # 200.75: now − 0.5 = 200.25, the first's time
    for on_path in (first, home):  # the first is still "recent"; home is the last settled one before it
        _measured_at(backend, on_path)
        controller.check_tracking()
        assert controller.status.tracking_error_m == pytest.approx(0.0, abs=1e-12)
    # An error of exactly the tolerance does not count: only beyond it.
    measured = first + np.array([0.0, 0.0, 0.01])
    _measured_at(backend, measured)
    controller.check_tracking()
    controller.control = replace(controller.control, tracking_tolerance_m=controller.status.tracking_error_m)
    assert [controller.check_tracking() for _ in range(3)] == [False] * 3


def test_clearing_with_the_gripper_half_open_counts_it_as_closed(emulated):
    _, clock = emulated
    controller, backend = make_controller(clock)
    assert controller.go_home()
    controller.estop()
    backend.gripper_opening = lambda: 0.5
    assert controller.clear_holds() == ""
    assert controller.integrator.command.gripper_open is False
