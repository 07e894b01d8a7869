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


def test_an_announced_step_waits_for_its_action_however_long_the_computation_takes():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=2.0, start_s=0.0, wall=wall)
    clock.set_stepping(True)
    assert clock.advance() == pytest.approx(0.2)
    clock.announce(0)  # the learner's tick for step 0 began (it may wait behind an update)
    wall.now = 30.0
    assert clock.advance() is None and clock.stalls == 0  # no timeout while an announced step computes
    clock.step_done(0)
    assert clock.advance() == pytest.approx(0.4)
    # Step 1 is never announced (the learner holds on stale inputs): the stall timeout applies.
    wall.now = 32.1
    assert clock.advance() is None and clock.stalls == 1
    wall.now = 33.1
    assert clock.advance() == pytest.approx(1.4)  # wall speed
    clock.announce(1)  # acting again: time waits for this step's action from now on
    wall.now = 40.0
    assert clock.advance() is None and clock.stalls == 1
    clock.step_done(1)
    assert clock.advance() == pytest.approx(1.6)


def test_a_late_announcement_or_a_lost_learner_never_freezes_time():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=2.0, start_s=0.0, wall=wall)
    clock.set_stepping(True, episode=3)
    assert clock.advance() == pytest.approx(0.2)
    clock.step_done(0)
    clock.announce(0, episode=3)  # delivered after its own action (different topics): ignored
    assert not clock.computing
    assert clock.advance() == pytest.approx(0.4)
    clock.announce(1, episode=3)
    wall.now = 10.0
    assert clock.advance() is None
    clock.producer_lost()  # the learner died mid-computation: the stall timeout applies again
    assert clock.advance() is None and clock.stalls == 1
    wall.now = 11.0
    assert clock.advance() == pytest.approx(1.4)
    clock.set_stepping(False)
    # The last step of episode 3, announced late (after the episode ended), must not make episode 4
    # wait for an action that never comes when the learner does not act on its first step.
    clock.announce(14, episode=3)
    clock.set_stepping(True, episode=4)
    assert not clock.computing
    assert clock.advance() == pytest.approx(1.6)
    wall.now = 13.1
    assert clock.advance() is None and clock.stalls == 2  # the stall timeout, not a freeze
    # Episode 4's own announcements may come before the bridge sees it running: they count.
    clock.set_stepping(False)
    clock.announce(0, episode=5)
    clock.set_stepping(True, episode=5)
    assert clock.computing


def test_after_the_last_step_of_an_episode_time_runs_at_wall_speed_without_a_stall():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=2.0, start_s=0.0, wall=wall, steps_per_episode=2)
    clock.set_stepping(True, episode=0)
    assert clock.advance() == pytest.approx(0.2)
    clock.announce(0, episode=0)
    clock.step_done(0)
    assert clock.advance() == pytest.approx(0.4)
    wall.now = 1.0
    assert clock.advance() is None  # step 1 is due: lockstep
    clock.announce(1, episode=0)
    clock.step_done(1)
    assert clock.advance() == pytest.approx(0.6)  # the last step's period
    wall.now = 1.5
    assert clock.advance() == pytest.approx(1.1)  # no step left: wall speed until the episode ends
    assert clock.stalls == 0


def test_a_learner_that_ticked_before_lockstep_began_falls_back_into_step():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=2.0, start_s=0.0, wall=wall)
    # The learner heard "start" first and ticked step 0 while time still ran at wall speed.
    clock.announce(0, episode=1)
    clock.set_stepping(True, episode=1, first_step_now=False)
    clock.first_step()
    assert clock.advance() is None  # no extra period: step 0 is already being computed
    clock.step_done(0)
    assert clock.advance() == pytest.approx(0.2)
    # Announced too late for that, the learner ticks again and is one step ahead: step 1 is computed
    # before step 0's action is handled. Handling step 0 must not give it yet another period.
    clock.set_stepping(False)
    clock.set_stepping(True, episode=2, first_step_now=False)
    clock.first_step()
    assert clock.advance() == pytest.approx(0.4)
    clock.announce(0, episode=2)
    clock.announce(1, episode=2)  # a tick too many
    clock.step_done(0)
    assert clock.advance() is None  # step 1 already had its period
    clock.step_done(1)
    assert clock.advance() == pytest.approx(0.6)  # back in step: one period per handled action
    clock.announce(2, episode=2)
    assert clock.advance() is None
    clock.step_done(2)
    assert clock.advance() == pytest.approx(0.8)


def test_a_restarted_learner_is_not_waited_for_on_its_dead_predecessors_step():
    wall = Wall()
    clock = LockstepClock(period_s=0.2, stall_timeout_s=2.0, start_s=0.0, wall=wall)
    clock.set_stepping(True, episode=1)
    assert clock.advance() == pytest.approx(0.2)
    clock.announce(3, episode=1)  # then the learner is killed; the manager discards episode 1
    clock.set_stepping(False)
    clock.set_stepping(True, episode=1, first_step_now=False)  # the same episode number, run again
    assert not clock.computing
    clock.first_step()
    assert clock.advance() == pytest.approx(0.4)  # the new learner's first tick comes
