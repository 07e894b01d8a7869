"""Interventions: the Joy mapping and the arbiter (ROS-free), then a real rclpy Joy publisher taking
over the arm in the sim graph."""

import json
import time

import numpy as np
import pytest

from parl_robot.config import TeleopConfig
from parl_robot.robot.teleop import HELD, INTERVENTION, POLICY, InterventionArbiter, JoyMapping


def test_joy_mapping_deadband_scaling_and_toggles():
    mapping = JoyMapping(TeleopConfig(joy_axes=[1, 0, 2, -1, -1, 5], joy_axis_scale=[1, -1, 0.5, 1, 1, 1], deadband=0.2))
    action, toggled = mapping.action([0.6, 0.1, -1.0, 0.9, 0.9, 0.3], [0, 0])
    # dx from axis 1 (in the dead-band), dy from axis 0 mirrored and rescaled past the dead-band,
    # dz halved, roll/pitch unmapped, yaw rescaled; gripper open; no take-over.
    assert np.allclose(action, [0.0, -0.5, -0.5, 0.0, 0.0, 0.125, 1.0]) and not toggled
    _, toggled = mapping.action([0] * 6, [1, 1])  # both buttons pressed: gripper closes, take-over toggles
    assert toggled and mapping.gripper_open is False
    action, toggled = mapping.action([0] * 6, [1, 1])  # still held: no second toggle
    assert not toggled and action[6] == -1.0
    mapping.action([0] * 6, [0, 0])
    _, toggled = mapping.action([0] * 6, [1, 0])
    assert mapping.gripper_open is True and not toggled


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_arbiter_hands_over_bumplessly_holds_on_a_quiet_stream_then_releases():
    clock = Clock()
    arbiter = InterventionArbiter(stream_timeout_s=0.5, release_after_s=0.9, clock=clock)
    policy = np.array([0.3, 0, 0, 0, 0, 0, 1.0])
    assert arbiter.decide(policy).source == POLICY
    arbiter.take_over(True, gripper_open=False)  # the arm's gripper is closed: the operator's starts closed
    decision = arbiter.decide(policy)
    assert decision.source == INTERVENTION and np.allclose(decision.action, [0, 0, 0, 0, 0, 0, -1])
    arbiter.operator_input(np.array([0, 0, -1, 0, 0, 0, -1.0]))
    clock.now = 0.4
    assert arbiter.decide(policy).source == INTERVENTION
    clock.now = 0.6  # the stream went quiet: hold, do not fall back to the policy at once
    assert arbiter.decide(policy) == arbiter.decide(policy) and arbiter.decide(policy).source == HELD
    assert arbiter.decide(policy).action is None
    clock.now = 1.0  # quiet past the release time: the policy drives again
    assert arbiter.decide(policy).source == POLICY and not arbiter.active
    assert arbiter.interventions == 2
    arbiter.operator_input(np.array([2.0, 0, 0, 0, 0, 0, 1.0]), takeover=True)
    assert arbiter.decide(policy).action[0] == 1.0  # clipped to the action range
    arbiter.operator_input(np.zeros(7), takeover=False)
    assert arbiter.decide(policy).source == POLICY


@pytest.mark.slow
def test_a_joy_publisher_takes_over_the_sim_arm_mid_episode(tmp_path):
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import Joy
    from std_msgs.msg import String

    from graph_harness import Graph
    from parl_robot.nodes import common

    overrides = {"learner.warmup_episodes": 1, "learner.offline_policy_steps": 40, "learner.offline_critic_steps": 20,
                 "learner.updates_per_step": 0.5, "learner.warmup_critic_steps": 50, "control.max_episode_steps": 40,
                 "episodes.num_online_episodes": 3}
    graph = Graph(tmp_path, overrides)
    executed: list[dict] = []
    graph.observer.node.create_subscription(String, common.ROBOT_EXECUTED, lambda m: executed.append(json.loads(m.data)),
                                            common.COMMAND_QOS)
    joy_pub = graph.observer.node.create_publisher(Joy, common.TELEOP_JOY, common.SENSOR_QOS)

    def joy(axes, buttons):
        message = Joy()
        message.axes, message.buttons = [float(a) for a in axes], list(buttons)
        joy_pub.publish(message)

    try:
        for name in ("sim_bridge", "reward_detector", "learner", "episode_manager"):
            graph.start(name)
        graph.wait_for(lambda: graph.observer.stats and graph.observer.stats[-1].get("phase") == "online"
                       and not graph.observer.stats[-1].get("catching_up"), 300, "online phase, critic caught up")
        graph.wait_for(lambda: graph.observer.state() == "running", 60, "an online episode running")
        count = len(executed)
        graph.wait_for(lambda: len(executed) > count + 2, 30, "the policy acting")
        joy([0] * 6, [0, 1])  # take-over button pressed ...
        joy([0] * 6, [0, 0])  # ... and released: the operator holds control
        up = [0, 0, 1.0, 0, 0, 0]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(e["source"] == "intervention" for e in executed) < 4:
            joy(up, [0, 0])  # the SpaceMouse streams at 20 Hz
            time.sleep(0.05)
        taken = [e for e in executed if e["source"] == "intervention"]
        assert len(taken) >= 4, graph.log.getvalue()[-3000:]
        assert all(e["action"][:3] == [0.0, 0.0, 1.0] and not e["refused"] for e in taken[1:])
        joy([0] * 6, [0, 1])  # press again: control goes back to the policy
        joy([0] * 6, [0, 0])
        count = len(executed)
        graph.wait_for(lambda: any(e["source"] == "policy" for e in executed[count:]), 30, "the policy driving again")
    finally:
        graph.close()


def test_recorded_sources_replace_the_policys_action_and_survive_store_and_export(tmp_path):
    from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED, SOURCE_POLICY
    from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
    from parl_robot.data.hdf5_export import export_hdf5, read_hdf5
    from parl_robot.nodes.learner_node import EpisodeRecorder

    recorder = EpisodeRecorder()
    for step in range(3):
        recorder.observe({"state": np.full(7, step, np.float32)})
        recorder.actions.append(np.full(7, 0.1, np.float32))
        recorder.sources.append(SOURCE_POLICY)
        recorder.rewards.append(-1.0)
    recorder.observe({"state": np.full(7, 3, np.float32)})
    recorder.executed(1, [0, 0, 1.0, 0, 0, 0, -1], "intervention")  # the operator drove step 1
    recorder.executed(2, None, "held")  # step 2 was not executed
    recorder.executed(7, [0] * 7, "intervention")  # unknown step: ignored
    episode = recorder.to_episode(terminal=False)
    assert episode.sources.tolist() == [SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED]
    assert episode.actions[1].tolist() == [0, 0, 1.0, 0, 0, 0, -1] and np.allclose(episode.actions[0], 0.1)
    store = EpisodeStore(tmp_path / "store")
    store.save(EpisodeRecord("online_00000", "online", False, "failure", "operator", 3, 0, "h", "cup_to_rack",
                             intervention_steps=1), episode)
    record, loaded = store.load_episode("online_00000")
    assert loaded.sources.tolist() == episode.sources.tolist() and record.intervention_steps == 1
    export_hdf5(store, tmp_path / "out.hdf5")
    [(_, exported, _)] = read_hdf5(tmp_path / "out.hdf5")
    assert exported.sources.tolist() == episode.sources.tolist()
