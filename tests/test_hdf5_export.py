"""The HDF5 export's layout (parl_robot/data/hdf5_export.py, docs/data_format.md) read with h5py itself,
and what the reader refuses. The round trip through the store and the CLI is in
test_episode_store_and_launcher.py."""

import json

import numpy as np
import pytest

from parl_robot.data.episode import EpisodeData
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.data.hdf5_export import FORMAT, VERSION, export_hdf5, import_hdf5, read_hdf5

h5py = pytest.importorskip("h5py")


def _record(store: EpisodeStore, kind: str, success: bool, task: str = "cup_to_rack") -> EpisodeRecord:
    return EpisodeRecord(store.next_episode_id(kind), kind, success, "success" if success else "failure",
                         "detector", 0, 3, "abc", task)


def _episode(steps: int, terminal: bool, images: bool = False) -> EpisodeData:
    rng = np.random.default_rng(steps)
    frames = rng.integers(0, 255, (steps + 1, 8, 8, 3), dtype=np.uint8) if images else None
    return EpisodeData(rng.random((steps + 1, 7), np.float32), rng.random((steps, 7), np.float32),
                       np.r_[-np.ones(steps - 1), 0.0 if terminal else -1.0].astype(np.float32), terminal, frames)


@pytest.fixture
def exported(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    store.save(_record(store, "demo", True), _episode(3, True, images=True), np.arange(4.0) + 100.0)
    store.save(_record(store, "online", False, task="vegetable_to_sink"), _episode(5, False))
    store.save(_record(store, "online", True), _episode(2, True))
    path = tmp_path / "out.hdf5"
    assert export_hdf5(store, path) == 3
    return store, path


def test_layout_attributes_masks_and_per_episode_datasets(exported, tmp_path):
    _, path = exported
    assert not path.with_suffix(".hdf5.tmp").exists()  # written aside, renamed into place
    with h5py.File(path, "r") as handle:
        data = handle["data"]
        assert data.attrs["format"] == FORMAT and data.attrs["version"] == VERSION
        assert data.attrs["total"] == 3 + 5 + 2
        assert json.loads(data.attrs["tasks"]) == ["cup_to_rack", "vegetable_to_sink"]
        assert sorted(handle["mask"]) == ["demo", "online"]
        assert [i.decode() for i in handle["mask/online"]] == ["online_00000", "online_00001"]
        assert [i.decode() for i in handle["mask/demo"]] == ["demo_00000"]
        demo = data["demo_00000"]
        assert demo.attrs["num_samples"] == 3 and demo.attrs["kind"] == "demo" and bool(demo.attrs["success"])
        assert demo["dones"][()].tolist() == [0, 0, 1] and demo["dones"].dtype == np.uint8
        assert demo["timestamps"][()].tolist() == [100.0, 101.0, 102.0, 103.0]
        assert demo["actions"].dtype == np.float32 and demo["obs/state"].shape == (4, 7)
        assert demo["obs/image"].shape == (4, 8, 8, 3) and demo["obs/image"].compression == "gzip"
        assert demo["obs/image"].chunks == (1, 8, 8, 3)  # one frame per chunk
        failure = data["online_00000"]
        assert failure["dones"][()].tolist() == [0] * 5 and "obs/image" not in failure
        assert failure["timestamps"].shape == (6,)
        assert "sources" not in failure and "q_values" not in failure  # not recorded: not written
    demos_only = tmp_path / "demos.hdf5"
    assert export_hdf5(exported[0], demos_only, kind="demo") == 1
    with h5py.File(demos_only, "r") as handle:
        assert list(handle["data"]) == ["demo_00000"] and list(handle["mask"]) == ["demo"]


def test_import_keeps_or_overrides_the_kind_under_fresh_ids(exported, tmp_path):
    _, path = exported
    target = EpisodeStore(tmp_path / "target")
    assert import_hdf5(target, path, kind="demo") == ["demo_00000", "demo_00001", "demo_00002"]
    assert [r["kind"] for r in target.records()] == ["demo"] * 3
    assert target.thumbnail_path("demo_00000") is not None and target.thumbnail_path("demo_00001") is None
    records = {r.episode_id: (r, e) for r, e in target.load_all()}
    assert records["demo_00001"][1].terminal is False and records["demo_00002"][1].terminal is True


def _copy_with(path, tmp_path, change):
    broken = tmp_path / "broken.hdf5"
    broken.write_bytes(path.read_bytes())
    with h5py.File(broken, "r+") as handle:
        change(handle)
    return broken


def test_the_reader_refuses_newer_incomplete_and_inconsistent_files(exported, tmp_path):
    _, path = exported
    newer = _copy_with(path, tmp_path, lambda h: h["data"].attrs.__setitem__("version", VERSION + 1))
    with pytest.raises(ValueError, match=f"has format version {VERSION + 1}; this parl_robot reads up to {VERSION}"):
        read_hdf5(newer)
    missing = _copy_with(path, tmp_path, lambda h: h["data/online_00000"].__delitem__("rewards"))
    with pytest.raises(ValueError, match="episode online_00000 is incomplete"):
        read_hdf5(missing)

    def shorten(handle):
        del handle["data/online_00001/dones"]
        handle["data/online_00001"].create_dataset("dones", data=np.zeros(1, np.uint8))

    with pytest.raises(ValueError, match="episode online_00001 has inconsistent lengths"):
        read_hdf5(_copy_with(path, tmp_path, shorten))
    with pytest.raises(ValueError, match="not a parl_robot.hdf5 file"):
        read_hdf5(_copy_with(path, tmp_path, lambda h: h["data"].attrs.__setitem__("format", "robomimic")))
    older = _copy_with(path, tmp_path, lambda h: h["data"].attrs.__setitem__("version", 0))
    assert len(read_hdf5(older)) == 3  # older versions read


def test_attributes_come_back_as_plain_python(exported):
    _, path = exported
    record, episode, timestamps = {r.episode_id: (r, e, t) for r, e, t in read_hdf5(path)}["demo_00000"]
    assert type(record.success) is bool and type(record.steps) is int and type(record.task) is str
    assert episode.terminal is True and timestamps.dtype == np.float64


def test_who_acted_and_the_critics_q_travel_through_export_read_and_import(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    frames = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(4)])  # frame i: one flat grey
    episode = _episode(3, True)
    episode.images, episode.sources = frames, np.array([0, 1, 2], np.int64)
    episode.q_values = np.array([-1.5, -0.25, 0.75])  # float64 here: written as float32
    store.save(_record(store, "online", True), episode, np.array([5, 6, 7, 8]))  # integer seconds: float64 in the file
    path = tmp_path / "out.hdf5"
    export_hdf5(store, path)
    with h5py.File(path, "r") as handle:
        group = handle["data/online_00000"]
        assert group["sources"].dtype == np.uint8 and group["sources"][()].tolist() == [0, 1, 2]
        assert group["q_values"].dtype == np.float32 and group["q_values"][()].tolist() == [-1.5, -0.25, 0.75]
        assert group["timestamps"].dtype == np.float64 and group["timestamps"][()].tolist() == [5.0, 6.0, 7.0, 8.0]
        assert group["obs/image"].compression_opts == 4
    (_, read, timestamps), = read_hdf5(path)
    assert read.sources.dtype == np.uint8 and read.sources.tolist() == [0, 1, 2]
    assert read.q_values.dtype == np.float32 and read.q_values.tolist() == [-1.5, -0.25, 0.75]
    assert read.intervention_steps == 1 and timestamps.tolist() == [5.0, 6.0, 7.0, 8.0]
    target = EpisodeStore(tmp_path / "target")
    (added,) = import_hdf5(target, path)
    _, imported = target.load_episode(added)
    assert imported.sources.tolist() == [0, 1, 2] and imported.q_values.tolist() == [-1.5, -0.25, 0.75]
    assert imported.timestamps.tolist() == [5.0, 6.0, 7.0, 8.0]  # the recording's times, not the import's
    import cv2

    thumbnail = cv2.imread(str(target.thumbnail_path(added)))
    assert abs(int(thumbnail.mean()) - 120) <= 3  # the last frame (grey 120), not an earlier one


class _OlderStore:
    """The store's `load_all` as it reads an episode written before timestamps were stored: None."""

    def __init__(self, store: EpisodeStore):
        self.store = store

    def load_all(self, kind=None):
        loaded = self.store.load_all(kind)
        for _, episode in loaded:
            episode.timestamps = None
        return loaded


def test_float64_episodes_are_written_as_the_documented_dtypes_and_missing_times_as_zeros(tmp_path):
    store = EpisodeStore(tmp_path / "store")
    episode = _episode(4, False)
    episode.states, episode.rewards = episode.states.astype(np.float64), episode.rewards.astype(np.float64)
    store.save(_record(store, "online", False), episode)
    path = tmp_path / "out.hdf5"
    export_hdf5(_OlderStore(store), path)
    with h5py.File(path, "r") as handle:
        group = handle["data/online_00000"]
        assert group["obs/state"].dtype == group["rewards"].dtype == group["actions"].dtype == np.float32
        assert group["timestamps"][()].tolist() == [0.0] * 5


def test_a_foreign_writers_dtypes_are_read_as_the_documented_ones(exported, tmp_path):
    """A file written by another tool (float64 states, actions and rewards, int frames and sources,
    float32 times) reads back with the dtypes the learner and the store expect."""
    _, path = exported

    def widen(handle):
        for episode_id in handle["data"]:
            group = handle[f"data/{episode_id}"]
            for name, dtype in (("obs/state", np.float64), ("actions", np.float64), ("rewards", np.float64),
                                ("timestamps", np.float32), ("obs/image", np.int16)):
                if name in group:
                    values = group[name][()].astype(dtype)
                    del group[name]
                    group.create_dataset(name, data=values)
            group.create_dataset("sources", data=np.zeros(group.attrs["num_samples"], np.int64))
            group.create_dataset("q_values", data=np.zeros(group.attrs["num_samples"], np.float64))

    for record, episode, timestamps in read_hdf5(_copy_with(path, tmp_path, widen)):
        assert episode.states.dtype == episode.actions.dtype == episode.rewards.dtype == np.float32
        assert timestamps.dtype == np.float64 and episode.sources.dtype == np.uint8 and episode.q_values.dtype == np.float32
        if episode.images is not None:
            assert episode.images.dtype == np.uint8


def test_a_file_without_a_version_is_read_as_the_first_version(exported, tmp_path):
    _, path = exported
    assert len(read_hdf5(_copy_with(path, tmp_path, lambda h: h["data"].attrs.__delitem__("version")))) == 3


def test_a_failed_export_leaves_the_previous_file_and_no_partial_one(exported, tmp_path, monkeypatch):
    store, path = exported
    before = path.read_bytes()
    from parl_robot.data import hdf5_export

    written = []

    def fail_on_the_second(group, record, episode):
        if written:
            raise OSError("disk full")
        written.append(record.episode_id)
        real_write(group, record, episode)

    real_write = hdf5_export._write_episode
    monkeypatch.setattr(hdf5_export, "_write_episode", fail_on_the_second)
    with pytest.raises(OSError, match="disk full"):
        export_hdf5(store, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == []


def test_without_h5py_export_and_import_say_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    store = EpisodeStore(tmp_path / "store")
    for call in (lambda: export_hdf5(store, tmp_path / "out.hdf5"), lambda: read_hdf5(tmp_path / "out.hdf5")):
        with pytest.raises(RuntimeError) as raised:
            call()
        assert str(raised.value) == "HDF5 export needs h5py: `pip install h5py`"


def test_the_reader_checks_every_length_and_reads_an_empty_episode_as_not_terminal(exported, tmp_path):
    _, path = exported

    def longer_states(handle):
        group = handle["data/online_00001"]
        states = group["obs/state"][()]
        del group["obs/state"]
        group.create_dataset("obs/state", data=np.concatenate([states, states[-1:]]))

    with pytest.raises(ValueError, match="episode online_00001 has inconsistent lengths"):
        read_hdf5(_copy_with(path, tmp_path, longer_states))

    def shorter_rewards(handle):
        group = handle["data/online_00001"]
        rewards = group["rewards"][()]
        del group["rewards"]
        group.create_dataset("rewards", data=rewards[:-1])

    with pytest.raises(ValueError, match="episode online_00001 has inconsistent lengths"):
        read_hdf5(_copy_with(path, tmp_path, shorter_rewards))

    def empty_episode(handle):
        group = handle["data"].create_group("online_00009")
        for name, value in handle["data/online_00001"].attrs.items():
            group.attrs[name] = value
        group.attrs["episode_id"], group.attrs["num_samples"], group.attrs["steps"] = "online_00009", 0, 0
        group.create_dataset("obs/state", data=np.zeros((1, 7), np.float32))
        for name in ("actions", "rewards", "dones", "timestamps"):
            group.create_dataset(name, data=np.zeros((0, 7) if name == "actions" else 0, np.float32))

    read = {record_id: episode for record_id, episode in
            ((r.episode_id, e) for r, e, _ in read_hdf5(_copy_with(path, tmp_path, empty_episode)))}
    assert read["online_00001"].terminal is True and read["online_00009"].terminal is False


def test_an_export_into_a_missing_folder_reports_h5pys_own_error(exported, tmp_path):
    """Nothing to clean up when the file could not even be created: the error is h5py's, naming the file."""
    store, _ = exported
    with pytest.raises(OSError, match="[Uu]nable to .*create file"):
        export_hdf5(store, tmp_path / "missing" / "out.hdf5")
