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
