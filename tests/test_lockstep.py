"""The lockstep clock's policy (parl_robot/sim/lockstep.py), on a hand-driven wall clock."""

import pytest

from parl_robot.sim.lockstep import LockstepClock


class Wall:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_runs_at_wall_speed_between_episodes_and_one_period_per_action_during_them():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=5.0, start_s=1000.0, wall=wall)
    wall.now = 0.7
    assert clock.advance() == pytest.approx(1000.7)  # free-running: wall speed
    clock.set_stepping(True)
    assert clock.advance() == pytest.approx(1000.9)  # the episode's first step starts at once
    wall.now = 3.0  # a slow learner: 2.3 s of wall time for one step
    assert clock.advance() is None  # ROS time waits for the action
    clock.step_done()
    assert clock.advance() == pytest.approx(1001.1)  # exactly one period per handled action
    assert clock.advance() is None
    clock.step_done()
    clock.step_done()  # two notifications for one step still move one period
    assert clock.advance() == pytest.approx(1001.3)
    assert clock.advance() is None
    assert clock.stalls == 0


def test_without_actions_time_runs_at_wall_speed_after_the_timeout_until_the_next_action():
    wall = Wall()
    clock = LockstepClock(period_s=0.25, stall_timeout_s=2.0, start_s=0.0, wall=wall)
    clock.set_stepping(True)
    assert clock.advance() == pytest.approx(0.25)
    wall.now = 1.9
    assert clock.advance() is None
    wall.now = 2.1  # the learner stopped acting: the watchdog must see time pass
    assert clock.advance() is None and clock.stalls == 1
    wall.now = 3.1
    assert clock.advance() == pytest.approx(1.25)  # wall speed since the stall
    clock.step_done()  # acting again: back in lockstep
    wall.now = 3.2
    assert clock.advance() == pytest.approx(1.5)
    wall.now = 4.0
    assert clock.advance() is None
    clock.set_stepping(False)
    wall.now = 5.0
    assert clock.advance() == pytest.approx(2.5)  # the episode ended: wall speed again
