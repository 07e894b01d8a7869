"""The episode manager's state machine without ROS: every transition, hold and timeout."""

from types import SimpleNamespace

import pytest

from parl_robot import episode_machine as em
from parl_robot.config import EpisodeConfig
from parl_robot.episode_machine import EpisodeMachine


class FakeFuture:
    def __init__(self):
        self.response = None

    def finish(self, success: bool, message: str = ""):
        self.response = SimpleNamespace(success=success, message=message)

    def done(self):
        return self.response is not None

    def result(self):
        return self.response


class Ports:
    def __init__(self):
        self.events, self.states, self.logs, self.calls = [], [], [], []
        self.available = True

    def publish(self, kind, **fields):
        self.events.append({"type": kind, **fields})

    def publish_state(self, state):
        self.states.append(state)

    def call_service(self, name):
        if not self.available:
            return None
        future = FakeFuture()
        self.calls.append((name, future))
        return future

    def log(self, level, text):
        self.logs.append((level, text))

    def kinds(self):
        return [e["type"] for e in self.events if e["type"] != "state"]

    def last(self, kind):
        return [e for e in self.events if e["type"] == kind][-1]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def machine(auto_reset=True, auto_label=True, episodes=2, max_steps=3):
    ports, clock = Ports(), Clock()
    episodes_cfg = EpisodeConfig(num_online_episodes=episodes, auto_reset=auto_reset, auto_label=auto_label)
    return EpisodeMachine(episodes_cfg, max_steps, "put the cup on the rack", ports, clock, wall_clock=lambda: 0.0), ports, clock


def advance(m, clock, seconds, step=0.1):
    for _ in range(int(round(seconds / step))):
        clock.now += step
        m.learner_seen = clock.now if m.learner_seen is not None else None  # a live learner
        m.tick()


def ready_learner(m, clock):
    m.on_learner_stats({"phase": "warmup", "catching_up": False})
    assert m.state == em.WAITING_FOR_RESET


def sim_reset(m, ports, clock, success=True):
    advance(m, clock, 0.1)
    name, future = ports.calls[-1]
    assert name == "reset"
    future.finish(success, "" if success else "held")
    advance(m, clock, 0.1)


def test_sim_run_resets_runs_labels_saves_and_finishes():
    m, ports, clock = machine()
    assert m.state == em.WAITING_FOR_LEARNER and "waiting for the learner" in m.held_because()
    m.on_learner_stats({"phase": "offline"})
    assert m.state == em.WAITING_FOR_LEARNER
    ready_learner(m, clock)
    for episode in range(2):
        sim_reset(m, ports, clock)
        assert m.state == em.READY and ports.kinds()[-1] == "reset_done"
        advance(m, clock, 0.4)
        assert m.state == em.READY  # the scene settles for READY_DWELL_S
        advance(m, clock, 0.2)
        assert m.state == em.RUNNING and ports.last("start") == {"type": "start", "episode": episode, "state": em.RUNNING,
                                                              "instruction": "put the cup on the rack"}
        for _ in range(3):
            m.on_action()
        advance(m, clock, 0.3)
        assert m.state == em.SAVING
        assert ports.kinds()[-2:] == ["end", "label"] and ports.last("label")["success"] is False
        assert ports.last("label")["source"] == "detector"
        m.on_event({"type": "saved", "episode": episode + 7, "success": True})  # not this episode: ignored
        assert m.state == em.SAVING
        m.on_event({"type": "saved", "episode": episode, "success": True, "episode_id": f"online_{episode + 8:05d}"})
        assert ports.calls[-1][0] == "home"
        # A relaunch into a store that already holds online_00000..7: the log names both counts.
        assert ports.logs[-1] == ("info", f"episode {episode} of this run saved as online_{episode + 8:05d}: SUCCESS "
                                          f"({episode + 1}/{episode + 1} successes this run)")
    assert ports.kinds()[-1] == "finished" and ports.events[-1]["saved"] == 2 and ports.events[-1]["successes"] == 2
    m.tick()
    assert m.exit_code is None  # waits for the arm to be home
    ports.calls[-1][1].finish(True)
    m.tick()
    assert m.exit_code == 0


def one_successful_episode(m, ports, clock):
    ready_learner(m, clock)
    sim_reset(m, ports, clock)
    advance(m, clock, 0.6)
    m.on_success(True)
    advance(m, clock, 0.3)
    assert ports.kinds()[-2:] == ["end", "label"] and ports.last("end")["success"] is True  # success ends it early


def test_finishing_exits_after_the_home_timeout_or_without_a_home_service():
    m, ports, clock = machine(episodes=1)
    one_successful_episode(m, ports, clock)
    m.on_event({"type": "saved", "episode": 0, "success": True})
    advance(m, clock, em.FINISH_HOME_TIMEOUT_S - 1)
    assert m.exit_code is None
    advance(m, clock, 1.5)
    assert m.exit_code == 0

    m, ports, clock = machine(episodes=1)
    one_successful_episode(m, ports, clock)
    ports.available = False
    m.on_event({"type": "saved", "episode": 0, "success": False})
    m.tick()
    assert m.exit_code == 0


def test_refused_sim_reset_is_retried():
    m, ports, clock = machine()
    ready_learner(m, clock)
    sim_reset(m, ports, clock, success=False)
    assert m.state == em.WAITING_FOR_RESET and ("warning", "sim reset refused: held") in ports.logs
    sim_reset(m, ports, clock)
    assert m.state == em.READY


def test_operator_resets_and_labels_on_hardware():
    m, ports, clock = machine(auto_reset=False, auto_label=False)
    ready_learner(m, clock)
    advance(m, clock, 1.0)
    assert ports.calls == [] and m.state == em.WAITING_FOR_RESET  # nothing happens without the operator
    m.on_event({"type": "reset_done", "source": "sim"})
    assert m.state == em.WAITING_FOR_RESET  # only the operator's counts
    m.on_event({"type": "reset_done", "source": "operator"})
    advance(m, clock, 0.6)
    assert m.state == em.RUNNING
    for _ in range(3):
        m.on_action()
    advance(m, clock, 0.3)
    assert m.state == em.AWAITING_LABEL and "label" not in ports.kinds()
    m.on_event({"type": "label", "source": "detector", "success": True})
    assert m.state == em.AWAITING_LABEL
    m.on_event({"type": "label", "source": "operator", "success": True})
    assert m.state == em.SAVING
    advance(m, clock, em.SAVE_TIMEOUT_S + 0.2)
    assert any("was not saved within 30 s" in text for _, text in ports.logs)
    assert m.state == em.SAVING


def test_an_episode_the_learner_never_saves_is_given_up_and_the_next_one_runs():
    """The learner alive (its stats keep coming) but no `saved` (it never recorded the episode, or its
    save failed): warnings every 30 s, then the episode is discarded and the run goes on."""
    m, ports, clock = machine(auto_reset=False, auto_label=False)
    ready_learner(m, clock)
    m.on_event({"type": "reset_done", "source": "operator"})
    advance(m, clock, 0.6)
    m.on_action()
    advance(m, clock, 0.3)
    m.on_event({"type": "end_now", "source": "operator", "episode": 0, "success": True})
    assert m.state == em.SAVING
    for _ in range(int(em.SAVE_GIVE_UP_S) + 2):  # one second at a time, the learner alive throughout
        m.on_learner_stats({"phase": "online"})
        advance(m, clock, 1.0)
        if m.state != em.SAVING:
            break
    warnings = [text for _, text in ports.logs if "was not saved within 30 s" in text]
    assert len(warnings) == 3 and m.state == em.WAITING_FOR_RESET
    assert ("error", "episode 0 was not saved within 120 s although the learner is alive: discarded, the next "
                     "episode starts (the learner's log says why)") in ports.logs
    assert [e for e in ports.events if e["type"] == "discarded"] == [
        {"type": "discarded", "episode": 0, "state": em.SAVING, "reason": "not saved"}]
    assert m.saved == 0 and m.episode == 0  # nothing counted: the same episode number runs again
    m.on_event({"type": "reset_done", "source": "operator"})
    advance(m, clock, 0.6)
    assert m.state == em.RUNNING


def test_a_hold_aborts_the_running_episode_and_nothing_starts_until_cleared_and_homed():
    m, ports, clock = machine(auto_reset=False)
    ready_learner(m, clock)
    m.on_event({"type": "reset_done", "source": "operator"})
    advance(m, clock, 0.6)
    m.on_action()
    m.on_action()
    m.on_safety({"state": "held", "reasons": ["estop"]})
    aborted = next(e for e in ports.events if e["type"] == "aborted")
    assert aborted == {"type": "aborted", "episode": 0, "state": em.RUNNING, "reason": "estop", "steps": 2}
    assert m.state == em.WAITING_FOR_RESET and m.episode == 1 and m.needs_home
    assert m.held_because() == "arm held: estop (clear it on the page)"
    assert ports.states[-1]["held"] == m.held_because() and ports.states[-1]["episode"] == 1
    m.on_event({"type": "reset_done", "source": "operator"})
    advance(m, clock, 1.0)
    assert m.state == em.WAITING_FOR_RESET and ports.calls == []  # held: no reset, no home
    m.on_safety({"state": "ok", "reasons": []})
    assert m.held_because() == "the arm is going home after an aborted episode"
    m.on_event({"type": "reset_done", "source": "operator"})
    assert m.state == em.WAITING_FOR_RESET  # not homed yet
    advance(m, clock, 0.1)
    name, future = ports.calls[-1]
    assert name == "home_after_abort"
    future.finish(False, "motor fault")
    advance(m, clock, 0.1)
    assert ("error", "home after the abort failed: motor fault; retrying") in ports.logs
    advance(m, clock, em.ABORT_HOME_RETRY_S - 0.3)
    assert len(ports.calls) == 1  # retried only after ABORT_HOME_RETRY_S
    advance(m, clock, 0.5)
    assert len(ports.calls) == 2
    ports.calls[-1][1].finish(True)
    advance(m, clock, 0.1)
    assert not m.needs_home and m.held_because() == ""
    m.on_event({"type": "reset_done", "source": "operator"})
    assert m.state == em.READY


def test_a_hold_while_ready_goes_back_to_waiting_and_the_sim_reset_homes_after_an_abort():
    m, ports, clock = machine()
    ready_learner(m, clock)
    sim_reset(m, ports, clock)
    m.on_safety({"state": "held", "reasons": ["tracking_error"]})
    assert m.state == em.WAITING_FOR_RESET and "aborted" not in ports.kinds()
    m.on_safety({"state": "ok"})
    sim_reset(m, ports, clock)
    advance(m, clock, 0.6)
    m.on_safety({"state": "held", "reasons": ["motor_error", "estop"]})
    assert ports.kinds()[-1] == "aborted" and ports.last("aborted")["reason"] == "motor_error, estop"
    m.on_safety({"state": "ok"})
    sim_reset(m, ports, clock)  # in sim the reset homes the arm
    assert not m.needs_home and m.state == em.READY
    assert not any(name == "home_after_abort" for name, _ in ports.calls)


@pytest.mark.parametrize("hold", ["pause", "catching_up"])
def test_pause_and_the_critic_catch_up_hold_the_next_episode(hold):
    m, ports, clock = machine()
    ready_learner(m, clock)
    sim_reset(m, ports, clock)
    if hold == "pause":
        m.on_event({"type": "pause"})
        assert m.held_because() == "paused by the operator (resume to continue)"
    else:
        m.on_learner_stats({"phase": "online", "catching_up": True})
        assert m.held_because() == "waiting for the critic to catch up on the warm-up episodes"
        assert any("catching up" in text for _, text in ports.logs)
    m.tick()  # the latched state follows at the next tick at the latest
    assert ports.states[-1]["held"] == m.held_because()
    advance(m, clock, 2.0)
    assert m.state == em.READY
    if hold == "pause":
        m.on_event({"type": "resume"})
    else:
        m.on_learner_stats({"phase": "online", "catching_up": False})
    advance(m, clock, 0.1)
    assert m.state == em.RUNNING


def test_pause_stops_sim_resets():
    m, ports, clock = machine()
    ready_learner(m, clock)
    m.on_event({"type": "pause"})
    advance(m, clock, 1.0)
    assert ports.calls == []


def test_discard_and_a_silent_learner_drop_the_episode():
    m, ports, clock = machine()
    ready_learner(m, clock)
    sim_reset(m, ports, clock)
    advance(m, clock, 0.6)
    m.on_event({"type": "discard"})
    assert ports.kinds()[-1] == "discarded" and m.state == em.WAITING_FOR_RESET and m.episode == 0  # number reused
    sim_reset(m, ports, clock)
    advance(m, clock, 0.6)
    assert m.state == em.RUNNING
    clock.now += em.LEARNER_TIMEOUT_S + 0.1  # no stats from the learner since
    m.tick()
    assert ports.last("discarded") == {"type": "discarded", "episode": 0, "state": em.RUNNING, "reason": "learner lost"}
    assert m.state == em.WAITING_FOR_LEARNER
    m.tick()
    assert m.state == em.WAITING_FOR_LEARNER  # no further discards while it waits
    m.on_learner_stats({"phase": "online"})
    assert m.state == em.WAITING_FOR_RESET


def test_episode_state_is_published_on_change_only():
    m, ports, clock = machine()
    m.tick()
    m.tick()
    assert len(ports.states) == 1 and ports.states[0]["state"] == em.WAITING_FOR_LEARNER
    ready_learner(m, clock)
    assert [s["state"] for s in ports.states] == [em.WAITING_FOR_LEARNER, em.WAITING_FOR_RESET]
    m.on_event({"type": "pause"})
    m.on_event({"type": "pause"})
    assert len(ports.states) == 3 and ports.states[-1]["held"].startswith("paused")


def test_the_operator_ends_a_running_episode_now_with_its_outcome():
    m, ports, clock = machine(auto_label=False, max_steps=30)
    ready_learner(m, clock)
    sim_reset(m, ports, clock)
    advance(m, clock, 0.6)
    assert m.state == em.RUNNING
    m.on_action()
    for ignored in ({"type": "end_now", "episode": 0, "success": True, "source": "detector"},  # only the operator
                    {"type": "end_now", "episode": 5, "success": True, "source": "operator"},  # another episode
                    {"type": "end_now", "episode": 0, "success": "yes", "source": "operator"}):  # not a bool
        m.on_event(ignored)
        assert m.state == em.RUNNING
    m.on_event({"type": "end_now", "episode": 0, "success": False, "source": "operator"})
    assert ports.kinds()[-2:] == ["end", "label"] and m.state == em.SAVING
    assert ports.last("end") == {"type": "end", "episode": 0, "state": em.RUNNING, "success": False, "steps": 1,
                                 "ended_by": "operator"}
    assert ports.last("label")["success"] is False and ports.last("label")["source"] == "operator"
    m.on_event({"type": "end_now", "episode": 0, "success": True, "source": "operator"})  # too late: saving
    assert m.state == em.SAVING and ports.kinds().count("end") == 1
