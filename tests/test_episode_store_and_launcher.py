import io

import numpy as np
import pytest

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.graph import NodeSpec, finetune_graph, ros_arguments
from parl_robot.launcher import launch
from parl_robot.data.episode import EpisodeData


def make_episode(steps=4, images=False):
    return EpisodeData(
        np.random.rand(steps + 1, 7).astype(np.float32), np.random.rand(steps, 7).astype(np.float32),
        -np.ones(steps, np.float32), False, smooth_frames(steps + 1) if images else None,
    )


def smooth_frames(count):
    """Camera-like frames (smooth gradients), which JPEG keeps within a few grey levels."""
    ramp = np.linspace(0, 255, 32)
    frame = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (32, 1)), np.full((32, 32), 90.0)], axis=-1)
    return np.stack([np.roll(frame, i, axis=1) for i in range(count)]).astype(np.uint8)


def record(store, kind="online", success=False):
    return EpisodeRecord(store.next_episode_id(kind), kind, success, "success" if success else "failure",
                         "detector", 0, 3, "abc", "cup_to_rack")


def test_save_load_relabel_and_index_rebuild(tmp_path):
    store = EpisodeStore(tmp_path)
    episode = make_episode(images=True)
    path = store.save(record(store), episode)
    assert path.name == "online_00000" and not any(store.incoming_dir.iterdir())
    loaded_record, loaded = store.load_episode("online_00000")
    assert np.array_equal(loaded.actions, episode.actions) and loaded_record.steps == 4
    assert loaded.images.shape == episode.images.shape
    assert np.abs(loaded.images.astype(int) - episode.images.astype(int)).mean() < 6  # JPEG, quality 95
    store.relabel("online_00000", "success")
    (tmp_path / "index.json").write_text("{corrupt")
    assert store.records()[0]["label"] == "success" and store.records()[0]["label_source"] == "operator"
    with pytest.raises(ValueError):
        store.relabel("online_00000", "maybe")


def test_corrupt_episode_is_quarantined_and_rest_loads(tmp_path):
    store = EpisodeStore(tmp_path)
    for _ in range(3):
        store.save(record(store), make_episode())
    (store.episodes_dir / "online_00001" / "arrays.npz").write_bytes(b"garbage")
    loaded = store.load_all()
    assert [r.episode_id for r, _ in loaded] == ["online_00000", "online_00002"]
    quarantined = list(store.quarantine_dir.iterdir())
    assert len(quarantined) == 1 and "online_00001" in quarantined[0].name
    assert (quarantined[0] / "reason.txt").read_text().strip()
    assert store.next_episode_id("online") == "online_00003"


def test_graph_declares_sim_and_hardware_nodes():
    sim = {spec.name for spec in finetune_graph({"sim": "true"})}
    hardware = {spec.name for spec in finetune_graph({"sim": "false"})}
    assert {"sim_bridge", "reward_detector", "learner", "episode_manager"} == sim
    assert {"camera", "control", "object_detector", "reward_detector", "learner", "episode_manager"} == hardware
    with pytest.raises(ValueError, match="unknown launch argument"):
        finetune_graph({"tsak": "x"})
    args = ros_arguments(NodeSpec("learner", "m", {"task": "cup_to_rack", "policy": ""}))
    assert args[:5] == ["--ros-args", "-r", "__ns:=/parl", "-r", "__node:=learner"]
    assert "policy:=''" in args


def fake_node(tmp_path, name, code, delay):
    module = tmp_path / f"fake_{name}.py"
    module.write_text(f"import sys, time\nprint('hello from {name}', flush=True)\ntime.sleep({delay})\nsys.exit({code})\n")
    return NodeSpec(name, f"fake_{name}")


def test_launcher_stops_everything_when_a_node_dies(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    out = io.StringIO()
    specs = [fake_node(tmp_path, "crasher", 3, 0.5), fake_node(tmp_path, "sleeper", 0, 60)]
    code = launch(specs, out=out, timeout_s=30)
    text = out.getvalue()
    assert code == 3
    assert "[crasher] hello from crasher" in text and "[sleeper] hello from sleeper" in text
    assert "crasher exited with code 3; stopping all nodes" in text


def test_launcher_succeeds_when_the_ending_node_finishes(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    done = fake_node(tmp_path, "manager", 0, 0.5)
    done.ends_launch = True
    out = io.StringIO()
    assert launch([done, fake_node(tmp_path, "sleeper", 0, 60)], out=out, timeout_s=30) == 0
    assert "manager finished" in out.getvalue()


def test_operator_relabel_rewrites_final_reward_and_replay_buffer(tmp_path):
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.rl.replay_buffer import ReplayBuffer

    store = EpisodeStore(tmp_path)
    episode = make_episode()  # a failure: every reward -1, not terminal
    store.save(record(store), episode)
    relabelled = store.relabel("online_00000", "success", final_reward=0.0)
    assert relabelled.success and relabelled.label_source == "operator"
    _, loaded = store.load_episode("online_00000")
    assert loaded.terminal and loaded.rewards[-1] == 0.0 and np.all(loaded.rewards[:-1] == episode.rewards[:-1])

    # The same correction inside a replay buffer whose cursor wrapped through the episode.
    buffer = ReplayBuffer(ObservationSpec(episode.states.shape[1]), 7, capacity=6, discount=0.5)
    buffer.add_episode(make_episode(steps=3))
    serial = buffer.add_episode(episode)  # 4 steps: slots 3, 4, 5, 0
    assert buffer.relabel_episode(serial, loaded.rewards, loaded.terminal)
    last = 0  # the episode's final transition landed in slot 0 after the wrap
    assert buffer.dones[last] == 1.0 and buffer.rewards[last] == 0.0 and buffer.mc_returns[last] == 0.0
    assert buffer.mc_returns[3] == pytest.approx(-1 - 0.5 - 0.25)  # -1 + 0.5 * (-1 + 0.5 * (-1 + 0.5 * 0))
    assert buffer.episode_success[[3, 4, 5, 0]].tolist() == [1.0] * 4 and buffer.episode_success[1] == 0.0
    buffer.add_episode(make_episode(steps=3))  # overwrites part of it: no longer correctable in memory
    assert not buffer.relabel_episode(serial, loaded.rewards, loaded.terminal)


def test_failure_label_overrides_a_detector_success_in_stored_rewards_and_mc_returns(tmp_path):
    """The detector said r = 0 (success) on the last step, the operator labelled the episode a failure:
    the stored episode must be a failure's, not a success's with done = 0 (issue 31)."""
    from parl_robot.config import RewardConfig
    from parl_robot.data.episode import SOURCE_POLICY
    from parl_robot.nets.encoders import ObservationSpec
    from parl_robot.nodes.learner_node import EpisodeRecorder
    from parl_robot.rl.replay_buffer import ReplayBuffer

    def detector_says_success() -> EpisodeRecorder:
        recorder = EpisodeRecorder()
        for step, reward in enumerate([-1.0, -1.0, 0.0]):
            recorder.observe({"state": np.full(7, step, np.float32)})
            recorder.actions.append(np.zeros(7, np.float32))
            recorder.sources.append(SOURCE_POLICY)
            recorder.rewards.append(reward)
        recorder.observe({"state": np.full(7, 3, np.float32)})
        return recorder

    failure = detector_says_success().labelled_episode(False, RewardConfig())
    assert failure.rewards.tolist() == [-1.0, -1.0, -1.0] and not failure.terminal
    store = EpisodeStore(tmp_path)
    store.save(record(store), failure)
    _, loaded = store.load_episode("online_00000")
    buffer = ReplayBuffer(ObservationSpec(7), 7, capacity=10, discount=0.5)
    buffer.add_episode(loaded)
    # A failure's tail keeps its -1 forever: -1 / (1 - 0.5) = -2 from every step, never a success's bound.
    assert buffer.mc_returns[:3].tolist() == [-2.0, -2.0, -2.0] and buffer.dones[:3].tolist() == [0.0] * 3
    assert buffer.episode_success[:3].tolist() == [0.0] * 3

    success = detector_says_success().labelled_episode(True, RewardConfig())
    assert success.rewards.tolist() == [-1.0, -1.0, 0.0] and success.terminal
    buffer.add_episode(success)
    assert buffer.mc_returns[3:6].tolist() == [-1.5, -1.0, 0.0] and buffer.dones[5] == 1.0


def test_hdf5_export_import_round_trip(tmp_path):
    from parl_robot.cli import main
    from parl_robot.data.hdf5_export import export_hdf5, import_hdf5, read_hdf5

    source = EpisodeStore(tmp_path / "source")
    source.save(record(source, kind="demo", success=True), make_episode(steps=3, images=True), np.arange(4.0))
    source.save(record(source, kind="online"), make_episode(steps=5))
    assert export_hdf5(source, tmp_path / "all.hdf5") == 2
    exported = {r.episode_id: (r, e, t) for r, e, t in read_hdf5(tmp_path / "all.hdf5")}
    for stored_record, stored in source.load_all():
        record_out, episode_out, _ = exported[stored_record.episode_id]
        assert vars(record_out) == vars(stored_record)
        assert np.array_equal(episode_out.states, stored.states) and np.array_equal(episode_out.actions, stored.actions)
        assert np.array_equal(episode_out.rewards, stored.rewards) and episode_out.terminal == stored.terminal
        assert (episode_out.images is None) == (stored.images is None)
        if stored.images is not None:
            assert np.array_equal(episode_out.images, stored.images)  # decoded pixels, exactly
    assert np.array_equal(exported["demo_00000"][2], np.arange(4.0))

    # Import into a store that already has episodes: fresh ids, nothing overwritten, all loadable.
    target = EpisodeStore(tmp_path / "target")
    target.save(record(target, kind="demo"), make_episode())
    assert import_hdf5(target, tmp_path / "all.hdf5") == ["demo_00001", "online_00000"]
    assert len(target.load_all()) == 3 and not any(target.quarantine_dir.iterdir())
    assert target.thumbnail_path("demo_00001") is not None

    # Through the CLI, with a kind filter; a file that is not ours is refused clearly.
    assert main(["export", f"store_dir:={tmp_path / 'source'}", f"out:={tmp_path / 'demos.hdf5'}", "kind:=demo"]) == 0
    assert len(read_hdf5(tmp_path / "demos.hdf5")) == 1
    import h5py

    with h5py.File(tmp_path / "foreign.hdf5", "w") as handle:
        handle.create_group("data")
    with pytest.raises(ValueError, match="not a parl_robot.hdf5 file"):
        read_hdf5(tmp_path / "foreign.hdf5")


def test_learning_curve_summary_table_and_png(tmp_path):
    import cv2

    from parl_robot.data.learning_curve import curve_summary, draw_learning_curve, summary_table

    records = [{"episode_id": "demo_00000", "kind": "demo", "success": True, "label": "success", "created": 0.0, "phase": "demo"}]
    outcomes = [("warmup", False), ("warmup", True), ("warmup", False), ("warmup", False)] + \
        [("online", s) for s in [False, True, False, True, True, True, True, True]]
    for index, (phase, success) in enumerate(outcomes):
        records.append({"episode_id": f"online_{index:05d}", "kind": "online", "success": success, "phase": phase,
                        "label": "success" if success else "failure", "created": 10.0 + index})
    records.append({"episode_id": "online_00099", "kind": "online", "success": False, "phase": "online", "label": "aborted",
                    "aborted": True, "created": 99.0})
    summary = curve_summary(records, block=4)
    assert (summary["warmup_episodes"], summary["online_episodes"]) == (4, 8)
    assert summary["offline_start"] == 0.25 and summary["first_online_block"] == 0.5 and summary["last_online_block"] == 1.0
    assert summary["gain_points"] == 75.0
    table = summary_table(summary)
    assert "25 %" in table and "100 %" in table and "+75 points" in table
    path = draw_learning_curve(records, tmp_path / "curve.png")
    image = cv2.imread(str(path))
    assert image.shape == (360, 720, 3) and (image < 250).any()
    assert draw_learning_curve(records[:1], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
