"""LeRobot (v3.0) export: the layout and every value checked with pyarrow; loaded by LeRobot's own
dataset class when `lerobot` is importable."""

import json

import numpy as np
import pytest

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.rl.replay_buffer import EpisodeData

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from parl_robot.data.lerobot_export import (CAMERA_KEY, STATE_NAMES, export_lerobot,  # noqa: E402
                                            write_lerobot_dataset)

FPS = 5
INSTRUCTION = "put the cup on the drying rack"


def camera_frames(count, episode_number):
    """Smooth frames, shifted per step and per episode, so each one is told apart after video coding."""
    ramp = np.linspace(0, 255, 32)
    frame = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (32, 1)), np.full((32, 32), 90.0)], axis=-1)
    return np.stack([np.roll(np.roll(frame, 3 * i, axis=1), 7 * episode_number, axis=0) for i in range(count)]).astype(np.uint8)


def fill_store(store, images=False):
    """2 successful demos, 1 failed online episode, 1 safety-aborted one and 1 with no steps."""
    rng = np.random.default_rng(0)
    plan = [("demo", 4, True, False), ("demo", 3, True, False), ("online", 5, False, False),
            ("online", 2, False, True), ("online", 0, False, False)]
    for number, (kind, steps, success, aborted) in enumerate(plan):
        rewards = np.full(steps, -1.0, np.float32)
        if success:
            rewards[-1] = 0.0
        episode = EpisodeData(rng.random((steps + 1, 7), dtype=np.float32), rng.uniform(-1, 1, (steps, 7)).astype(np.float32),
                              rewards, success, camera_frames(steps + 1, number) if images else None)
        record = EpisodeRecord(store.next_episode_id(kind), kind, success, "success" if success else "failure",
                               "detector", 0, 2, "abc", "cup_to_rack", phase=kind, aborted=aborted,
                               abort_reason="e-stop" if aborted else "")
        store.save(record, episode)
    return {record.episode_id: (record, episode) for record, episode in store.load_all()}


def decode_video(path):
    """(fps, RGB frames) by PyAV where installed (OpenCV's FFmpeg may lack an AV1 decoder), else OpenCV."""
    try:
        import av
    except ImportError:
        import cv2

        capture = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                return capture.get(cv2.CAP_PROP_FPS), frames
            frames.append(frame[:, :, ::-1])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.average_rate, [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]


def read(root, relative):
    return pq.read_table(root / relative)


def test_state_only_layout_and_values(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    stored = fill_store(store)
    result = export_lerobot(store, tmp_path / "lerobot", FPS, instructions={"cup_to_rack": INSTRUCTION})
    root = result.root
    assert (result.episodes, result.frames, result.video_codec) == (3, 12, None)
    assert result.skipped_aborted == ["online_00001"] and result.skipped_empty == ["online_00002"]
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md", "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json", "meta/stats.json", "meta/tasks.parquet"]
    assert not list(tmp_path.glob(".lerobot.incoming*"))

    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS and info["robot_type"] == "widowx_250"
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 12, 1)
    assert info["splits"] == {"train": "0:3"} and info["video_path"] is None
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert list(info["features"]) == ["observation.state", "action", "next.reward", "next.done", "timestamp",
                                      "frame_index", "episode_index", "index", "task_index"]
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [7], "names": STATE_NAMES}
    assert info["features"]["next.done"] == {"dtype": "bool", "shape": [1], "names": None}

    data = read(root, "data/chunk-000/file-000.parquet")
    assert str(data.schema.field("action").type) == "fixed_size_list<element: float>[7]"
    assert str(data.schema.field("next.reward").type) == "float" and str(data.schema.field("index").type) == "int64"
    frames = data.to_pydict()
    assert frames["index"] == list(range(12)) and frames["task_index"] == [0] * 12
    episodes = read(root, "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [row["episode_id"] for row in episodes] == ["demo_00000", "demo_00001", "online_00000"]
    for episode_index, row in enumerate(episodes):
        record, episode = stored[row["episode_id"]]
        steps = len(episode.actions)
        rows = slice(row["dataset_from_index"], row["dataset_to_index"])
        assert row["length"] == steps == rows.stop - rows.start and row["tasks"] == [INSTRUCTION]
        assert (row["success"], row["aborted"], row["label"], row["kind"]) == (record.success, False, record.label, record.kind)
        assert np.allclose(row["final_observation.state"], episode.states[-1])
        assert np.array_equal(np.array(frames["observation.state"][rows], np.float32), episode.states[:-1])
        assert np.array_equal(np.array(frames["action"][rows], np.float32), episode.actions)
        assert np.array_equal(np.array(frames["next.reward"][rows], np.float32), episode.rewards)
        assert frames["next.done"][rows] == [False] * (steps - 1) + [record.success]
        assert frames["episode_index"][rows] == [episode_index] * steps and frames["frame_index"][rows] == list(range(steps))
        assert np.allclose(frames["timestamp"][rows], np.arange(steps) / FPS)
        assert row["stats/action/count"] == [steps] and np.allclose(row["stats/action/mean"], episode.actions.mean(0))

    # Dataset statistics: exact for min, max, mean, std over every frame.
    stats = json.loads((root / "meta/stats.json").read_text())
    actions = np.array(frames["action"], np.float64)
    assert np.allclose(stats["action"]["mean"], actions.mean(0)) and np.allclose(stats["action"]["std"], actions.std(0))
    assert np.allclose(stats["action"]["min"], actions.min(0)) and stats["action"]["count"] == [12]
    assert stats["next.done"]["max"] == [True] and stats["index"]["max"] == [11]
    assert set(stats["observation.state"]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}

    tasks = read(root, "meta/tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0], "__index_level_0__": [INSTRUCTION]}
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]  # the DataFrame index


def test_aborted_episodes_only_on_request_and_flagged(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    fill_store(store)
    result = export_lerobot(store, tmp_path / "lerobot", FPS, kind="online", include_aborted=True)
    assert (result.episodes, result.skipped_aborted) == (2, [])
    rows = read(result.root, "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(row["episode_id"], row["aborted"], row["abort_reason"]) for row in rows] == [
        ("online_00000", False, ""), ("online_00001", True, "e-stop")]
    assert rows[0]["tasks"] == ["cup_to_rack"]  # no instruction given: the task name

    only_aborted = EpisodeStore(tmp_path / "only_aborted")
    record = EpisodeRecord("online_00000", "online", False, "failure", "detector", 0, 0, "", "cup_to_rack", aborted=True)
    only_aborted.save(record, EpisodeData(np.zeros((3, 7), np.float32), np.zeros((2, 7), np.float32),
                                          -np.ones(2, np.float32), False))
    with pytest.raises(ValueError, match="1 aborted: include_aborted:=true exports them"):
        export_lerobot(only_aborted, tmp_path / "none", FPS)


@pytest.mark.parametrize("backend", ["opencv", "pyav"])
def test_images_become_one_video_per_camera(tmp_path, backend):
    if backend == "pyav":
        pytest.importorskip("av")
    store = EpisodeStore(tmp_path / "store")
    stored = fill_store(store, images=True)
    result = export_lerobot(store, tmp_path / "lerobot", FPS, video_backend=backend)
    video = result.root / f"videos/{CAMERA_KEY}/chunk-000/file-000.mp4"
    info = json.loads((result.root / "meta/info.json").read_text())
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feature = info["features"][CAMERA_KEY]
    assert feature["dtype"] == "video" and feature["shape"] == [32, 32, 3] and feature["names"] == ["height", "width", "channels"]
    assert feature["info"]["video.codec"] == result.video_codec.split()[0] and feature["info"]["video.fps"] == FPS
    assert result.video_codec == ("mpeg4 (OpenCV mp4v)" if backend == "opencv" else "av1 (PyAV)")

    fps, decoded = decode_video(video)
    assert fps == FPS
    rows = read(result.root, "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    expected = np.concatenate([stored[row["episode_id"]][1].images[: row["length"]] for row in rows]).astype(float)
    decoded = np.stack(decoded).astype(float)
    assert decoded.shape == expected.shape == (12, 32, 32, 3)
    distances = np.abs(decoded[:, None] - expected[None]).mean(axis=(2, 3, 4))  # (decoded, stored)
    assert np.array_equal(distances.argmin(1), np.arange(12)) and distances.diagonal().max() < 8
    for row in rows:  # each episode's place in the video, in seconds
        assert row[f"videos/{CAMERA_KEY}/from_timestamp"] == pytest.approx(row["dataset_from_index"] / FPS)
        assert row[f"videos/{CAMERA_KEY}/to_timestamp"] == pytest.approx(row["dataset_to_index"] / FPS)
    stats = json.loads((result.root / "meta/stats.json").read_text())[CAMERA_KEY]
    assert np.array(stats["mean"]).shape == (3, 1, 1) and stats["count"] == [12]
    assert np.allclose(np.array(stats["mean"]).ravel(), expected.mean(axis=(0, 1, 2)) / 255)


def test_step_sources_become_a_string_feature(tmp_path):
    """The hook for per-step action sources: not recorded by the store yet, exported once episodes carry them."""
    with_sources = EpisodeData(np.zeros((3, 7), np.float32), np.zeros((2, 7), np.float32), -np.ones(2, np.float32), False)
    with_sources.sources = np.array(["policy", "operator"])
    without = EpisodeData(np.zeros((2, 7), np.float32), np.zeros((1, 7), np.float32), -np.ones(1, np.float32), False)
    records = [EpisodeRecord(f"online_{i:05d}", "online", False, "failure", "detector", 0, 0, "", "cup_to_rack") for i in range(2)]
    result = write_lerobot_dataset(list(zip(records, [with_sources, without])), tmp_path / "out", FPS)
    info = json.loads((result.root / "meta/info.json").read_text())
    assert info["features"]["source"] == {"dtype": "string", "shape": [1], "names": None}
    assert read(result.root, "data/chunk-000/file-000.parquet").column("source").to_pylist() == ["policy", "operator", ""]


def test_refusals_are_clear(tmp_path, monkeypatch):
    store = EpisodeStore(tmp_path / "store")
    fill_store(store)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        export_lerobot(store, tmp_path / "taken", FPS)
    with pytest.raises(ValueError, match="whole, positive frame rate"):
        export_lerobot(store, tmp_path / "out", 2.5)
    episodes = [(record, episode) for record, episode in store.load_all() if len(episode.actions)]
    episodes[0][1].images = camera_frames(len(episodes[0][1].states), 0)
    with pytest.raises(ValueError, match="differ in camera frames"):
        write_lerobot_dataset(episodes, tmp_path / "out", FPS)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.incoming*"))
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)
    with pytest.raises(RuntimeError, match="pip install pyarrow"):
        export_lerobot(store, tmp_path / "out", FPS)


def test_cli_export_lerobot(tmp_path, capsys):
    from parl_robot.cli import main

    store = EpisodeStore(tmp_path / "store")
    fill_store(store)
    out = tmp_path / "cups"
    assert main(["export", f"store_dir:={store.root}", f"out:={out}", "format:=lerobot", "repo_id:=lab/cups"]) == 0
    printed = capsys.readouterr().out
    assert "exported 3 episodes (12 frames at 5 fps, state only)" in printed and "online_00001" in printed
    assert 'LeRobotDataset("lab/cups"' in (out / "README.md").read_text()
    assert read(out, "meta/tasks.parquet").column("__index_level_0__").to_pylist() == [INSTRUCTION]  # from the task config
    assert main(["export", f"store_dir:={store.root}", f"out:={tmp_path / 'aborted'}", "format:=lerobot",
                 "include_aborted:=true", "kind:=online", "fps:=10"]) == 0
    assert json.loads((tmp_path / "aborted/meta/info.json").read_text())["fps"] == 10
    for argv, message in [(["format:=lerobot", f"out:={tmp_path / 'x.hdf5'}"], "names an HDF5 file"),
                          (["fps:=5", f"out:={tmp_path / 'x.hdf5'}"], "format:=lerobot only"),
                          (["format:=zarr", f"out:={tmp_path / 'z'}"], "hdf5 or lerobot"),
                          (["format:=lerobot", "include_aborted:=maybe", f"out:={tmp_path / 'y'}"], "true or false"),
                          (["format:=lerobot", "fps:=2.5", f"out:={tmp_path / 'y'}"], "fps:=2.5 must be an integer")]:
        assert main(["export", f"store_dir:={store.root}", *argv]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("images, backend", [(False, None), (True, "opencv"), (True, "pyav")])
def test_lerobot_loads_the_export(tmp_path, images, backend):
    """LeRobot's own dataset class reads the export (skipped where `lerobot` is not installed)."""
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except Exception as err:  # not installed, or installed without a working torchvision
        pytest.skip(f"lerobot is not importable: {err}")
    store = EpisodeStore(tmp_path / "store")
    stored = fill_store(store, images=images)
    result = export_lerobot(store, tmp_path / "lerobot", FPS, instructions={"cup_to_rack": INSTRUCTION},
                            video_backend=backend)
    dataset = LeRobotDataset("parl_robot/test", root=result.root)
    assert len(dataset) == 12 and dataset.num_episodes == 3 and dataset.fps == FPS
    assert dataset.meta.episodes["aborted"] == [False, False, False]
    assert dataset.meta.episodes["success"] == [True, True, False]
    for index, (episode_id, step) in {0: ("demo_00000", 0), 5: ("demo_00001", 1), 11: ("online_00000", 4)}.items():
        episode = stored[episode_id][1]
        item = dataset[index]
        assert item["task"] == INSTRUCTION and item["frame_index"].item() == step
        assert np.allclose(item["observation.state"].numpy(), episode.states[step])
        assert np.allclose(item["action"].numpy(), episode.actions[step])
        assert item["next.reward"].item() == episode.rewards[step]
        assert item["next.done"].item() == (episode.terminal and step == len(episode.actions) - 1)
        if images:
            image = item[CAMERA_KEY].permute(1, 2, 0).numpy() * 255  # (H, W, 3) from (3, H, W) in [0, 1]
            assert np.abs(image - episode.images[step]).mean() < 8
