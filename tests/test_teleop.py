"""Interventions: the Joy mapping and the arbiter (ROS-free), and the per-step sources the learner
records from robot/executed, through the store and the HDF5 export."""


import numpy as np

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


def test_joy_mapping_edges_a_press_in_the_first_message_missing_axes_and_buttons_and_scaling_past_one():
    mapping = JoyMapping(TeleopConfig(joy_axes=[0, 1, 3, -1, -1, -1], joy_axis_scale=[2.0, 2.0, 1, 1, 1, 1],
                                      deadband=0.2, gripper_button=0, takeover_button=1))
    # Buttons held in the very first message count as presses; axis 3 and button 1 missing from a short
    # message (a driver with fewer axes) read as centred / released, never an index error.
    action, toggled = mapping.action([1.0, -1.0, 0.5], [1])
    assert np.array_equal(action, [1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0]) and not toggled  # x2 clipped to [-1, 1]
    _, toggled = JoyMapping(TeleopConfig(takeover_button=1)).action([0.0] * 6, [0, 1])
    assert toggled
    # Take-over while the arm holds an object: the joystick's gripper becomes the arm's (closed).
    mapping = JoyMapping(TeleopConfig())
    action, _ = mapping.action([0.0] * 6, [0, 1])
    assert action[6] == 1.0  # the joystick's own state: open
    started = mapping.start_from_arm(action, gripper_open=False)
    assert started[6] == -1.0 and mapping.gripper_open is False and action[6] == 1.0  # input untouched
    assert mapping.action([0.0] * 6, [0, 0])[0][6] == -1.0  # and it stays so until the button toggles it
    assert mapping.start_from_arm(started, gripper_open=True)[6] == 1.0


def test_arbiter_passes_the_policys_action_and_times_out_at_exact_boundaries():
    clock = Clock()
    arbiter = InterventionArbiter(stream_timeout_s=0.5, release_after_s=1.0, clock=clock)
    policy = np.array([0.3, -0.2, 0.1, 0, 0, 0, 1.0])
    decision = arbiter.decide(policy)
    assert arbiter.active is False and decision.source == POLICY and decision.action is policy
    for gripper_open, expected in ((True, 1.0), (None, 1.0), (False, -1.0)):  # the operator's gripper starts as the arm's
        arbiter.take_over(False)
        arbiter.take_over(True, gripper_open=gripper_open)
        assert arbiter.decide(policy).action[6] == expected
    arbiter.operator_input(np.array([[0.5, -3, 0, 0, 0, 0, -1]]))  # any shape holding 7 values; clipped
    arbiter.take_over(True, gripper_open=True)  # a second take-over while active keeps the operator's action
    decision = arbiter.decide(policy)
    assert decision.source == INTERVENTION and np.array_equal(decision.action, [0.5, -1, 0, 0, 0, 0, -1])
    assert decision.action.shape == (7,)
    clock.now = 0.5  # exactly the stream timeout: still the operator's
    assert arbiter.decide(policy).source == INTERVENTION
    clock.now = 1.0  # exactly the release time: still held
    assert arbiter.decide(policy).source == HELD and arbiter.active is True
    clock.now = 1.25
    decision = arbiter.decide(policy)
    assert decision.source == POLICY and decision.action is policy and arbiter.active is False
    assert arbiter.interventions == 5


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
