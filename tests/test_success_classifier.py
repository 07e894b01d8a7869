"""The learned success detector (issue 32): labelled frames from the store, training to a precision
target on held-out episodes, the saved model and its errors, the debouncer, and the reward node
running it on camera frames over rclpy."""

import json
import os
import threading

import numpy as np
import pytest

from parl_robot.data.episode import EpisodeData
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.perception.success_classifier import (
    SuccessDebouncer,
    SuccessModelError,
    TrainingSettings,
    choose_threshold,
    frames_from_episode,
    frames_from_store,
    load_classifier,
    save_classifier,
    split_by_episode,
    train_success_classifier,
)

SIZE = 32
STEPS = 8


def scene(x: float, rng: np.random.Generator) -> np.ndarray:
    """A grey table with a little noise and a red cup whose left edge is at fraction x of the width;
    the "rack" (the success region) is the right third."""
    frame = np.clip(rng.normal(110, 6, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    frame[:, int(2 * SIZE / 3):] = np.clip(frame[:, int(2 * SIZE / 3):].astype(int) - 40, 0, 255)  # the rack, darker
    left = int(x * (SIZE - 6))
    frame[12:18, left:left + 6] = (200, 30, 30)
    return frame


def episode_frames(success: bool, rng: np.random.Generator) -> np.ndarray:
    """STEPS + 1 frames: the cup moves right; a success ends on the rack, a failure stops short."""
    end = 1.0 if success else rng.uniform(0.1, 0.45)
    return np.stack([scene(end * t / STEPS, rng) for t in range(STEPS + 1)])


def make_store(path, successes: int, failures: int, seed: int = 0) -> EpisodeStore:
    store = EpisodeStore(path)
    rng = np.random.default_rng(seed)
    outcomes = [True] * successes + [False] * failures
    rng.shuffle(outcomes)
    for success in outcomes:
        frames = episode_frames(success, rng)
        rewards = np.full(STEPS, -1.0, np.float32)
        rewards[-1] = 0.0 if success else -1.0
        episode = EpisodeData(np.zeros((STEPS + 1, 7), np.float32), np.zeros((STEPS, 7), np.float32), rewards, success, frames)
        store.save(EpisodeRecord(store.next_episode_id("online"), "online", success, "success" if success else "failure",
                                 "operator", STEPS, 0, "h", "cup_to_rack"), episode)
    return store


def test_positive_frames_are_the_last_steps_of_successes_and_early_frames_are_negative():
    frames = np.arange(9)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    chosen, labels = frames_from_episode(frames, True, positive_steps=3, negative_fraction=0.5)
    assert chosen[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 6, 7, 8] and labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    chosen, labels = frames_from_episode(frames, False, 3, 0.5)
    assert len(chosen) == 9 and labels.sum() == 0
    short = frames[:2]  # shorter than positive_steps: no frame is both
    chosen, labels = frames_from_episode(short, True, 3, 0.5)
    assert labels.tolist() == [1, 1]


def test_frames_from_store_skips_aborted_unlabelled_and_other_tasks(tmp_path):
    store = make_store(tmp_path / "s", successes=2, failures=1)
    rng = np.random.default_rng(1)
    aborted = EpisodeData(np.zeros((STEPS + 1, 7), np.float32), np.zeros((STEPS, 7), np.float32), -np.ones(STEPS, np.float32),
                          False, episode_frames(True, rng))
    store.save(EpisodeRecord(store.next_episode_id("online"), "online", False, "aborted", "safety", STEPS, 0, "h",
                             "cup_to_rack", aborted=True, abort_reason="estop"), aborted)
    store.save(EpisodeRecord(store.next_episode_id("online"), "online", True, "success", "operator", STEPS, 0, "h",
                             "pot_to_sink"), aborted)
    data = frames_from_store(store, "cup_to_rack", positive_steps=3)
    assert len(set(data.episode_ids.tolist())) == 3  # the aborted and the other task's episodes left out
    assert data.labels.sum() == 2 * 3 and len(data) == 2 * (4 + 3) + 9
    with pytest.raises(ValueError, match="both are needed"):
        frames_from_store(make_store(tmp_path / "only", successes=0, failures=2), "cup_to_rack")


def test_held_out_split_keeps_each_episode_on_one_side():
    ids = np.repeat(np.array([f"e{i}" for i in range(8)]), 5)
    held = split_by_episode(ids, 0.25, seed=3)
    assert held.sum() == 10 and len({e for e, h in zip(ids, held) if h}) == 2
    assert not {e for e, h in zip(ids, held) if h} & {e for e, h in zip(ids, held) if not h}


def test_threshold_is_the_lowest_that_reaches_the_precision_target():
    probabilities = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3])
    labels = np.array([1, 1, 0, 1, 1, 0])
    # >= 0.9: 2/2 precise; >= 0.8: 2/3; >= 0.7: 3/4; >= 0.6: 4/5 = 0.8; >= 0.3: 4/6
    assert choose_threshold(probabilities, labels, 1.0) == pytest.approx(
        {"threshold": 0.9, "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "met": True})
    assert choose_threshold(probabilities, labels, 0.8)["threshold"] == 0.6
    never = choose_threshold(np.array([0.9, 0.4]), np.array([0, 1]), 0.95)
    assert not never["met"] and never["threshold"] > 1.0 and never["recall"] == 0.0


def test_debouncer_needs_consecutive_frames_and_an_open_gripper():
    debouncer = SuccessDebouncer(0.5, consecutive=2, require_gripper_open=True)
    assert [debouncer.update(p, True) for p in (0.9, 0.2, 0.9, 0.9, 0.9)] == [False, False, False, True, True]
    assert not debouncer.update(0.9, gripper_open=False)
    debouncer.reset()
    assert not debouncer.update(0.9, True)
    relaxed = SuccessDebouncer(0.5, consecutive=1, require_gripper_open=False)
    assert relaxed.update(0.6, gripper_open=False)


def test_training_reaches_the_precision_target_on_held_out_episodes_and_round_trips(tmp_path):
    store = make_store(tmp_path / "store", successes=14, failures=14)
    data = frames_from_store(store, "cup_to_rack")
    trained = train_success_classifier(data, TrainingSettings(image_size=SIZE, width=16, epochs=25, precision_target=0.95))
    metrics = trained.metrics
    assert metrics["met"] and metrics["precision"] >= 0.95 and metrics["recall"] >= 0.5, metrics
    assert not set(trained.train_episode_ids) & set(trained.held_out_episode_ids)
    path = save_classifier(tmp_path / "models" / "success.pt", trained, "cup_to_rack")
    loaded = load_classifier(path)
    assert loaded.threshold == trained.threshold and loaded.held_out_episode_ids == trained.held_out_episode_ids
    rng = np.random.default_rng(7)  # fresh scenes: on the rack vs short of it
    on_rack = loaded.net.probabilities(np.stack([scene(1.0, rng) for _ in range(10)]))
    short = loaded.net.probabilities(np.stack([scene(0.3, rng) for _ in range(10)]))
    assert (on_rack >= loaded.threshold).mean() >= 0.7 and (short >= loaded.threshold).mean() == 0.0
    assert '"threshold"' in path.with_suffix(".json").read_text()


def test_missing_or_damaged_model_files_give_a_clear_error(tmp_path):
    with pytest.raises(SuccessModelError, match="does not exist: train one with `parl-robot reward train"):
        load_classifier(tmp_path / "none.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a model")
    with pytest.raises(SuccessModelError, match="cannot be read"):
        load_classifier(tmp_path / "garbage.pt")
    import torch

    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(SuccessModelError, match="is not a success classifier"):
        load_classifier(tmp_path / "other.pt")


def test_reward_train_command_writes_a_model_and_reports_metrics(tmp_path, capsys):
    from parl_robot.cli import main

    store = make_store(tmp_path / "store", successes=12, failures=12, seed=2)
    out = tmp_path / "model.pt"
    code = main(["reward", "train", "task:=cup_to_rack", f"store_dir:={store.root}", f"out:={out}", "epochs:=20"])
    printed = capsys.readouterr().out
    assert "held out:" in printed and out.is_file()
    assert code == 0 and "precision" in printed and "recall" in printed, printed
    assert main(["reward", "train", f"store_dir:={store.root}", "bogus:=1"]) == 2


# ----- the reward node over rclpy ----------------------------------------------------------------
@pytest.fixture
def trained_model(tmp_path):
    store = make_store(tmp_path / "store", successes=14, failures=14)
    trained = train_success_classifier(frames_from_store(store, "cup_to_rack"),
                                       TrainingSettings(image_size=SIZE, width=16, epochs=25))
    assert trained.metrics["met"]
    return save_classifier(tmp_path / "model.pt", trained, "cup_to_rack")


def test_reward_node_turns_classified_frames_into_the_sparse_reward(trained_model, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Bool, Float32, String

    from parl_robot.nodes import common
    from parl_robot.nodes.reward_node import RewardNode

    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    overrides = f'{{"reward.detector": "classifier", "reward.classifier_file": "{trained_model}", "reward.classifier_consecutive_frames": 2}}'
    rclpy.init(args=["--ros-args", "-p", f"overrides:='{overrides}'"])  # quoted: YAML would parse the JSON
    try:
        node = RewardNode()
        peer = rclpy.create_node("camera_and_arm")
        image_pub = peer.create_publisher(Image, common.CAMERA_IMAGE, common.SENSOR_QOS)
        state_pub = peer.create_publisher(JointState, common.ROBOT_STATE, common.SENSOR_QOS)
        event_pub = peer.create_publisher(String, common.EPISODE_EVENT, common.EVENT_QOS)
        rewards, successes, scores = [], [], []
        received = threading.Event()
        peer.create_subscription(Float32, common.REWARD, lambda m: rewards.append(m.data), common.COMMAND_QOS)
        peer.create_subscription(Bool, common.REWARD_SUCCESS, lambda m: (successes.append(m.data), received.set()), common.COMMAND_QOS)
        peer.create_subscription(Float32, common.REWARD_SCORE, lambda m: scores.append(m.data), common.COMMAND_QOS)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.add_node(peer)

        def spin_until(condition, budget_spins=2000):
            for _ in range(budget_spins):
                executor.spin_once(timeout_sec=0.01)
                if condition():
                    return True
            return False

        assert spin_until(lambda: peer.count_subscribers(common.CAMERA_IMAGE) > 0 and node.count_publishers(common.ROBOT_STATE) > 0)
        rng = np.random.default_rng(11)
        gripper = JointState(name=["gripper"], position=[1.0])
        from rclpy.time import Time

        clock = {"ns": node.get_clock().now().nanoseconds}

        def stamp(step_s: float = 0.2):  # camera frames one control period (5 Hz) apart
            clock["ns"] += int(step_s * 1e9)
            return Time(nanoseconds=clock["ns"]).to_msg()

        def send(x: float) -> bool:
            before = len(successes)
            state_pub.publish(gripper)
            spin_until(lambda: node.gripper_open is not None, 200)
            image_pub.publish(common.rgb_image_message(scene(x, rng), stamp()))
            assert spin_until(lambda: len(successes) > before), "no reward for a frame"
            return successes[-1]

        assert [send(0.2), send(1.0), send(1.0), send(1.0)] == [False, False, True, True]  # two positive frames in a row
        before = len(successes)  # a frame 50 ms after the last one: the same control step, not scored again
        image_pub.publish(common.rgb_image_message(scene(1.0, rng), stamp(0.05)))
        spin_until(lambda: False, 50)
        assert len(successes) == before
        assert spin_until(lambda: len(scores) == 4, 500)  # reliable, like the reward
        assert rewards[-1] == 0.0 and rewards[0] == -1.0 and scores[-1] > scores[0]
        event_pub.publish(common.event_message("start", episode=2))  # a new episode counts afresh
        assert spin_until(lambda: node.debouncer.streak == 0, 500)
        assert send(1.0) is False and send(1.0) is True

        # The operator switches detectors while running; the latched reward/detector says which is in use.
        detector_status = []
        peer.create_subscription(String, common.REWARD_DETECTOR, lambda m: detector_status.append(json.loads(m.data)),
                                 common.LATCHED_QOS)
        assert spin_until(lambda: detector_status and detector_status[-1]["detector"] == "classifier", 500)
        event_pub.publish(common.event_message("use_detector", detector="positions"))
        assert spin_until(lambda: detector_status[-1] == {"detector": "positions", "error": ""}, 500)
        trained_model.write_bytes(b"damaged")  # a model that cannot load: the node stays with positions
        event_pub.publish(common.event_message("use_detector", detector="classifier"))
        assert spin_until(lambda: detector_status[-1]["error"], 500)
        assert detector_status[-1]["detector"] == "positions" and "cannot be read" in detector_status[-1]["error"]
        before = len(successes)
        image_pub.publish(common.rgb_image_message(scene(1.0, rng), stamp()))
        spin_until(lambda: False, 50)
        assert len(successes) == before  # positions mode: frames decide nothing
        node.destroy_node()
        peer.destroy_node()
    finally:
        rclpy.shutdown()


def test_reward_node_refuses_to_start_without_its_model(tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from parl_robot.nodes.reward_node import RewardNode

    monkeypatch.setenv("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    overrides = f'{{"reward.detector": "classifier", "reward.classifier_file": "{tmp_path / "missing.pt"}"}}'
    rclpy.init(args=["--ros-args", "-p", f"overrides:='{overrides}'"])
    try:
        with pytest.raises(SuccessModelError, match="missing.pt' does not exist"):
            RewardNode()
    finally:
        rclpy.shutdown()


def test_learner_recorder_keeps_camera_frames_with_state_observations():
    from parl_robot.config import RewardConfig
    from parl_robot.data.episode import SOURCE_POLICY
    from parl_robot.nodes.learner_node import EpisodeRecorder

    def record(frames):
        recorder = EpisodeRecorder()
        for step, frame in enumerate(frames):
            recorder.observe({"state": np.full(7, step, np.float32)}, frame)
            if step < len(frames) - 1:
                recorder.actions.append(np.zeros(7, np.float32))
                recorder.sources.append(SOURCE_POLICY)
                recorder.rewards.append(-1.0)
        return recorder.labelled_episode(True, RewardConfig())

    rng = np.random.default_rng(0)
    frames = [scene(x, rng) for x in (0.0, 0.5, 1.0)]
    assert np.array_equal(record(frames).images, np.stack(frames))  # episodes.record_frames: one per state
    assert record([None, frames[1], frames[2]]).images is None  # the camera came late: no partial frame list
    assert record([None, None, None]).images is None


# ----- shadow mode: judged on every labelled episode, retrained as labels accumulate --------------
def add_episode(store, success: bool, label: str, rng, source="operator") -> str:
    frames = episode_frames(success, rng)
    states = np.zeros((STEPS + 1, 7), np.float32)
    states[:, 3] = 1.0  # the gripper open throughout (state index 3)
    rewards = np.full(STEPS, -1.0, np.float32)
    episode_id = store.next_episode_id("online")
    store.save(EpisodeRecord(episode_id, "online", label == "success", label, source, STEPS, 0, "h", "cup_to_rack"),
               EpisodeData(states, np.zeros((STEPS, 7), np.float32), rewards, label == "success", frames))
    return episode_id


def test_monitor_retrains_judges_new_episodes_and_reports_disagreements(tmp_path):
    from parl_robot.config import RewardConfig
    from parl_robot.perception.classifier_monitor import ClassifierMonitor

    store = EpisodeStore(tmp_path / "store")
    rng = np.random.default_rng(3)
    for index in range(24):
        add_episode(store, index % 2 == 0, "success" if index % 2 == 0 else "failure", rng)
    reward = RewardConfig(classifier_file=str(tmp_path / "models" / "success.pt"))
    monitor = ClassifierMonitor(store, reward, "cup_to_rack", retrain_every=5, min_episodes=20,
                                settings=TrainingSettings(image_size=SIZE, width=16, epochs=25))
    assert monitor.judge(store.records()[0]["episode_id"]) is None  # no model yet
    assert monitor.retrain_due() and monitor.retrain() is not None and monitor.version == 1
    assert '"version": 1' in (tmp_path / "models" / "success.json").read_text()
    assert not monitor.retrain_due()  # 0 labelled since training

    good = [add_episode(store, True, "success", rng, source="detector") for _ in range(3)]
    wrong = add_episode(store, False, "success", rng, source="detector")  # the detector's false positive
    verdicts = [monitor.on_labelled(episode_id) for episode_id in [*good, wrong]]
    assert [v.agrees for v in verdicts] == [True, True, True, False] and not verdicts[-1].predicted
    summary = monitor.summary()
    assert (summary["version"], summary["judged"], summary["agreed"], summary["false_positives"]) == (1, 4, 3, 0)
    assert [d["episode_id"] for d in summary["disagreements"]] == [wrong]
    # The operator corrects the label: the classifier's verdict on it now agrees (the relabel wins).
    store.relabel(wrong, "failure", final_reward=-1.0)
    assert monitor.on_labelled(wrong, new=False).agrees
    assert (monitor.summary()["judged"], monitor.summary()["agreed"], monitor.summary()["disagreements"]) == (4, 4, [])
    add_episode(store, True, "success", rng)
    monitor.on_labelled(store.records()[-1]["episode_id"])
    assert monitor.retrain_due()  # 5 new labels since training
    reopened = ClassifierMonitor(store, reward, "cup_to_rack")
    assert reopened.version == 1 and reopened.model is not None  # the saved model and its version


def test_success_classifier_node_joins_the_learner_side_when_asked():
    from parl_robot.graph import finetune_graph

    assert "success_classifier" not in [s.name for s in finetune_graph({})]
    names = [s.name for s in finetune_graph({"success_classifier": "true"})]
    assert "success_classifier" in names
    assert "success_classifier" in [s.name for s in finetune_graph({"success_classifier": "true", "role": "learner"})]
    assert "success_classifier" not in [s.name for s in finetune_graph({"success_classifier": "true", "role": "robot"})]


def test_sim_env_rewarded_by_the_classifier_keeps_the_truth_beside_it():
    from parl_robot.config import load_config
    from parl_robot.perception.success_classifier import SuccessClassifierNet, TrainedClassifier
    from parl_robot.sim.classifier_reward import ClassifierRewardEnv
    from parl_robot.sim.env import WidowXSimEnv
    from parl_robot.sim.rollout import rollout

    cfg = load_config(task="cup_to_rack", overrides={"control.max_episode_steps": 6, "sim.camera_width": 32,
                                                     "sim.camera_height": 32})
    net = SuccessClassifierNet(image_size=32, width=8)
    always = ClassifierRewardEnv(WidowXSimEnv(cfg, render_images=True), TrainedClassifier(net, threshold=0.0, metrics={}))
    hold_still = lambda obs: np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32)  # noqa: E731  (gripper open, no motion)
    obs, _ = always.reset(seed=0)
    assert set(obs) == {"state"}  # the agent sees the state; the frame went to the classifier
    episode = rollout(always, hold_still, 6, seed=0)
    # Two "positive" frames in a row with the gripper open: the classifier ends the episode as a success;
    # the simulator knows the cup never moved.
    assert len(episode.actions) == 2 and episode.terminal and episode.rewards.tolist() == [-1.0, 0.0]
    assert not always.true_success_seen and always.max_score > 0
    never = ClassifierRewardEnv(WidowXSimEnv(cfg, render_images=True), TrainedClassifier(net, threshold=1.5, metrics={}))
    episode = rollout(never, hold_still, 6, seed=0)
    assert len(episode.actions) == 6 and not episode.terminal and set(episode.rewards.tolist()) == {-1.0}
    always.close()
    never.close()
