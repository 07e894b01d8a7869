"""The episode store's promises, each checked so that breaking it fails a test (issue 33): a save is
staged, fsynced and renamed, so a crash never leaves half an episode; bad episodes are quarantined
with their data; the index, ids and labels follow the episode directories."""

import json
import os

import numpy as np
import pytest

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore, is_demonstration
from parl_robot.rl.replay_buffer import EpisodeData


def make_episode(steps=4, state_dim=3, action_dim=2):
    rng = np.random.default_rng(steps)
    return EpisodeData(rng.random((steps + 1, state_dim), np.float32), rng.random((steps, action_dim), np.float32),
                       -np.ones(steps, np.float32), False)


def make_record(store, kind="online", **changes):
    fields = dict(episode_id=store.next_episode_id(kind), kind=kind, success=False, label="failure",
                  label_source="detector", steps=0, policy_version=3, config_hash="abc", task="cup_to_rack")
    fields.update(changes)
    return EpisodeRecord(**fields)


def failing_save(store):
    """A save that fails half-way: the arrays are written, then the metadata cannot be serialised."""
    unserialisable = make_record(store, task=object())
    with pytest.raises(TypeError):
        store.save(unserialisable, make_episode())
    return unserialisable.episode_id


def test_a_save_that_fails_half_way_leaves_no_episode_and_the_store_still_loads(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    failed_id = failing_save(store)
    assert failed_id == "online_00001"
    assert not (store.episodes_dir / failed_id).exists()
    assert [r.episode_id for r, _ in EpisodeStore(tmp_path).load_all()] == ["online_00000"]
    assert list(store.quarantine_dir.iterdir()) == []  # nothing half-written reached episodes/ to be quarantined
    assert [entry["episode_id"] for entry in store.records()] == ["online_00000"]
    store.save(make_record(store), make_episode(steps=2))  # the id is free again
    assert store.load_episode(failed_id)[0].steps == 2


def test_a_save_that_fails_half_way_cleans_the_staging_area(tmp_path):
    store = EpisodeStore(tmp_path)
    failing_save(store)
    assert os.listdir(store.incoming_dir) == []


def test_reopening_the_store_removes_staging_left_by_a_dead_process_only(tmp_path):
    import subprocess
    import sys

    store = EpisodeStore(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    crashed = store.incoming_dir / f"online_00004.{int(dead.stdout)}"  # that process has exited
    crashed.mkdir()
    (crashed / "arrays.npz").write_bytes(b"half an episode")
    running = store.incoming_dir / f"online_00005.{os.getppid()}"  # a live process's save in progress
    running.mkdir()
    EpisodeStore(tmp_path)
    assert sorted(os.listdir(store.incoming_dir)) == [running.name]


def test_every_file_and_the_staging_directory_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    store = EpisodeStore(tmp_path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, destination):
        events.append(("replace", str(source), str(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    final = store.save(make_record(store), make_episode())
    rename = next(i for i, event in enumerate(events) if event[0] == "replace" and event[2] == str(final))
    staging = events[rename][1]
    assert os.path.dirname(staging) == str(store.incoming_dir)
    synced_before = [event[1] for event in events[:rename] if event[0] == "fsync"]
    for name in ("arrays.npz", "meta.json"):
        assert os.path.join(staging, name) in synced_before
    assert synced_before[-1] == staging  # the directory entry itself, after its files
    assert ("fsync", str(store.episodes_dir)) in events[rename:]  # the rename is made durable too
    assert sorted(os.listdir(final)) == ["arrays.npz", "meta.json"] and not os.listdir(store.incoming_dir)


def test_a_stale_staging_directory_of_the_same_save_is_replaced(tmp_path):
    store = EpisodeStore(tmp_path)
    stale = store.incoming_dir / f"online_00000.{os.getpid()}"
    stale.mkdir()
    (stale / "arrays.npz").write_bytes(b"left by a crash")
    store.save(make_record(store), make_episode())
    assert store.load_episode("online_00000")[0].steps == 4 and not stale.exists()


def test_saving_an_existing_id_raises_and_keeps_the_stored_episode(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode(steps=3))
    with pytest.raises(FileExistsError, match="episode online_00000 already stored at .*online_00000"):
        store.save(make_record(store, episode_id="online_00000"), make_episode(steps=5))
    assert store.load_episode("online_00000")[0].steps == 3


def test_quarantine_keeps_the_original_files_and_the_reason(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    episode_dir = store.episodes_dir / "online_00000"
    (episode_dir / "arrays.npz").write_bytes(b"garbage")
    meta = (episode_dir / "meta.json").read_bytes()
    assert store.load_all() == []
    (quarantined,) = store.quarantine_dir.iterdir()
    assert quarantined.name.startswith("online_00000.") and not episode_dir.exists()
    assert (quarantined / "arrays.npz").read_bytes() == b"garbage" and (quarantined / "meta.json").read_bytes() == meta
    reason = (quarantined / "reason.txt").read_text()
    assert reason.endswith("\n") and ":" in reason and reason.split(":")[0].isidentifier()  # "ErrorType: message"
    assert store.records() == [] and json.loads((tmp_path / "index.json").read_text()) == []


def _rewrite_arrays(episode_dir, **changes):
    with np.load(episode_dir / "arrays.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays.update(changes)
    np.savez_compressed(episode_dir / "arrays.npz", **arrays)


NON_FINITE = "ValueError: non-finite values in arrays\n"
BAD_EPISODES = {  # defect: (changed arrays of a 4-step episode, the quarantine reason)
    "one state too few": (lambda e: dict(states=e.states[:-1]),
                          "ValueError: inconsistent lengths: 4 states, 4 actions, 4 rewards\n"),
    "one state too many": (lambda e: dict(states=np.concatenate([e.states, e.states[-1:]])),
                           "ValueError: inconsistent lengths: 6 states, 4 actions, 4 rewards\n"),
    "one reward too few": (lambda e: dict(rewards=e.rewards[:-1]),
                           "ValueError: inconsistent lengths: 5 states, 4 actions, 3 rewards\n"),
    "one reward too many": (lambda e: dict(rewards=np.append(e.rewards, -1.0).astype(np.float32)),
                            "ValueError: inconsistent lengths: 5 states, 4 actions, 5 rewards\n"),
    "NaN state": (lambda e: dict(states=np.where(np.arange(len(e.states))[:, None] == 2, np.nan, e.states)),
                  NON_FINITE),
    "NaN action": (lambda e: dict(actions=np.where(np.arange(len(e.actions))[:, None] == 0, np.nan, e.actions)),
                   NON_FINITE),
    "infinite reward": (lambda e: dict(rewards=np.append(e.rewards[:-1], -np.inf).astype(np.float32)), NON_FINITE),
}


@pytest.mark.parametrize("defect", sorted(BAD_EPISODES))
def test_episodes_with_mismatched_lengths_or_non_finite_values_are_quarantined(tmp_path, defect):
    store = EpisodeStore(tmp_path)
    for _ in range(3):
        store.save(make_record(store), make_episode())
    change, reason = BAD_EPISODES[defect]
    _rewrite_arrays(store.episodes_dir / "online_00001", **change(make_episode()))
    loaded = store.load_all()
    assert [r.episode_id for r, _ in loaded] == ["online_00000", "online_00002"]
    (quarantined,) = store.quarantine_dir.iterdir()
    assert quarantined.name.startswith("online_00001.")
    assert (quarantined / "reason.txt").read_text() == reason
    assert [entry["episode_id"] for entry in store.records()] == ["online_00000", "online_00002"]


def test_an_episode_whose_metadata_disagrees_on_the_step_count_is_quarantined(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    meta_path = store.episodes_dir / "online_00000" / "meta.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "steps": 5}))
    assert store.load_all() == [] and len(list(store.quarantine_dir.iterdir())) == 1


def test_a_consistent_episode_loads_exactly_with_its_timestamps_and_kind_filter(tmp_path):
    store = EpisodeStore(tmp_path)
    demo = make_episode(steps=3)
    store.save(make_record(store, kind="demo", success=True, label="success"), demo, timestamps=np.arange(4.0) + 0.5)
    store.save(make_record(store), make_episode(steps=2))
    (record, loaded), = store.load_all(kind="demo")
    assert record.episode_id == "demo_00000" and record.steps == 3 and record.success
    assert np.array_equal(loaded.states, demo.states) and np.array_equal(loaded.actions, demo.actions)
    assert np.array_equal(loaded.rewards, demo.rewards) and loaded.terminal is False and loaded.images is None
    assert loaded.timestamps.tolist() == [0.5, 1.5, 2.5, 3.5]
    assert store.load_episode("online_00000")[1].timestamps.tolist() == [0.0, 0.0, 0.0]  # none given: zeros
    assert [r.episode_id for r, _ in store.load_all(kind="online")] == ["online_00000"]
    assert [r.episode_id for r, _ in store.load_all()] == ["demo_00000", "online_00000"]


def test_episode_ids_count_up_per_kind_and_ignore_other_names(tmp_path):
    store = EpisodeStore(tmp_path)
    assert store.next_episode_id("online") == "online_00000"
    (store.episodes_dir / "online_00007").mkdir()
    (store.episodes_dir / "online_backup").mkdir()
    (store.episodes_dir / "demo_00041").mkdir()
    assert store.next_episode_id("online") == "online_00008" and store.next_episode_id("demo") == "demo_00042"


def test_relabel_rules_for_demonstrations_aborted_and_unknown_episodes(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store, kind="demo", success=True, label="success"), make_episode())
    store.save(make_record(store, aborted=True, abort_reason="e-stop", label="unlabelled"), make_episode())
    store.save(make_record(store, episode_id="demo_from_operator"), make_episode())
    with pytest.raises(PermissionError, match="'demo_00000' is a demonstration: demonstrations are read-only"):
        store.relabel("demo_00000", "failure")
    with pytest.raises(PermissionError, match="read-only"):
        store.relabel("demo_from_operator", "success")  # a demo id is a demonstration whatever its kind says
    with pytest.raises(ValueError, match=r"safety hold \(e-stop\): it is kept for inspection and cannot be labelled"):
        store.relabel("online_00000", "success")
    with pytest.raises(KeyError, match="no stored episode 'online_00099'"):
        store.relabel("online_00099", "success")
    with pytest.raises(ValueError, match="label must be 'success' or 'failure', got 'maybe'"):
        store.relabel("online_00000", "maybe")
    assert is_demonstration({"kind": "demo"}) and not is_demonstration({"kind": "online", "episode_id": "online_1"})
    assert [entry["label"] for entry in store.records()] == ["success", "failure", "unlabelled"]


def test_relabel_to_failure_without_a_reward_keeps_the_arrays(tmp_path):
    store = EpisodeStore(tmp_path)
    episode = make_episode()
    store.save(make_record(store, success=True, label="success"), episode)
    arrays_before = (store.episodes_dir / "online_00000" / "arrays.npz").read_bytes()
    record = store.relabel("online_00000", "failure", source="reviewer")
    assert (record.label, record.label_source, record.success) == ("failure", "reviewer", False)
    assert (store.episodes_dir / "online_00000" / "arrays.npz").read_bytes() == arrays_before
    relabelled = store.relabel("online_00000", "failure", final_reward=-7.0)
    _, loaded = store.load_episode("online_00000")
    assert loaded.rewards.tolist() == [-1.0, -1.0, -1.0, -7.0] and loaded.terminal is False
    assert relabelled.label == "failure" and sorted(os.listdir(store.episodes_dir / "online_00000")) == ["arrays.npz", "meta.json"]
    assert store.records()[0]["label_source"] == "operator"


def test_thumbnail_paths_never_escape_the_store(tmp_path):
    store = EpisodeStore(tmp_path)
    frame = np.zeros((8, 8, 3), np.uint8)
    store.save(make_record(store), make_episode(), thumbnail=frame)
    assert store.thumbnail_path("online_00000") == store.episodes_dir / "online_00000" / "thumbnail.jpg"
    # Each refused id names a real thumbnail file, so only the id check stands between it and the page.
    for planted in (store.episodes_dir, tmp_path / "private", store.episodes_dir / "a\\b", store.episodes_dir / ".hidden"):
        planted.mkdir(exist_ok=True)
        (planted / "thumbnail.jpg").write_bytes(b"jpeg")
    for bad in ("", "online_00000/../../private", "a\\b", ".hidden", "online_00099"):
        assert store.thumbnail_path(bad) is None, bad


def test_the_index_is_rebuilt_when_missing_or_not_a_list_and_skips_unreadable_metadata(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    store.save(make_record(store), make_episode())
    store.save(make_record(store), make_episode())
    (store.episodes_dir / "online_00001" / "meta.json").write_text("{not json")
    (tmp_path / "index.json").write_text(json.dumps({"episode_id": "stale"}))
    assert [entry["episode_id"] for entry in store.records()] == ["online_00000", "online_00002"]
    (tmp_path / "index.json").unlink()
    assert [entry["episode_id"] for entry in store.records()] == ["online_00000", "online_00002"]
    assert json.loads((tmp_path / "index.json").read_text())[0]["steps"] == 4
    assert not (tmp_path / ".index.json.tmp").exists()


@pytest.mark.parametrize("steps", [1, 3])
def test_relabel_to_success_rewrites_the_final_reward_and_terminal_flag(tmp_path, steps):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode(steps=steps))
    record = store.relabel("online_00000", "success", final_reward=0.0)
    assert (record.label, record.label_source, record.success) == ("success", "operator", True)
    stored_record, loaded = store.load_episode("online_00000")
    assert loaded.terminal is True and loaded.rewards.tolist() == [-1.0] * (steps - 1) + [0.0]
    assert stored_record.success is True and store.records()[0]["success"] is True
    meta_text = (store.episodes_dir / "online_00000" / "meta.json").read_text()
    assert meta_text == json.dumps(json.loads(meta_text), indent=2)  # stays as readable as save wrote it


def test_relabel_of_an_episode_without_steps_changes_only_the_label(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), EpisodeData(np.zeros((1, 3), np.float32), np.zeros((0, 2), np.float32),
                                               np.zeros(0, np.float32), False))
    assert store.relabel("online_00000", "success", final_reward=0.0).success
    _, loaded = store.load_episode("online_00000")
    assert loaded.rewards.shape == (0,) and loaded.terminal is False


def test_quarantine_is_logged_with_the_episode_and_reason(tmp_path, caplog):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    with caplog.at_level("WARNING", logger="parl_robot.data.episode_store"):
        store.quarantine("online_00000", "checked by hand")
    assert caplog.messages == ["quarantined episode online_00000: checked by hand"]


def test_images_terminal_flag_and_older_stores_without_timestamps_load(tmp_path):
    store = EpisodeStore(tmp_path)
    ramp = np.linspace(0, 255, 16)
    frame = np.stack([np.tile(ramp, (16, 1)), np.full((16, 16), 40.0), np.full((16, 16), 200.0)], axis=-1)
    images = np.stack([frame, frame + [0.0, 80.0, 0.0], frame]).astype(np.uint8)  # RGB, channels distinct
    episode = make_episode(steps=2)
    episode.images, episode.terminal = images, True
    store.save(make_record(store, success=True, label="success"), episode)
    with np.load(store.episodes_dir / "online_00000" / "arrays.npz") as stored:
        arrays = {name: stored[name] for name in stored.files if name != "timestamps"}
    np.savez_compressed(store.episodes_dir / "online_00000" / "arrays.npz", **arrays)  # as older stores wrote it
    _, loaded = store.load_episode("online_00000")
    assert loaded.terminal is True and loaded.timestamps is None
    assert loaded.images.shape == images.shape and loaded.images.dtype == np.uint8
    assert np.abs(loaded.images.astype(int) - images.astype(int)).mean() < 4  # JPEG, in RGB order
    assert np.abs(loaded.images[1].astype(int) - images[1].astype(int)).mean() < 4  # frames in order


def test_records_reads_the_stored_index_without_rescanning(tmp_path):
    store = EpisodeStore(tmp_path)
    store.save(make_record(store), make_episode())
    (tmp_path / "index.json").write_text(json.dumps([{"episode_id": "from_the_index"}]))
    assert store.records() == [{"episode_id": "from_the_index"}]


def test_arrays_are_stored_in_the_documented_dtypes_even_if_the_staging_parent_was_removed(tmp_path):
    store = EpisodeStore(tmp_path)
    store.incoming_dir.rmdir()  # e.g. an operator tidied the store while the learner ran
    episode = EpisodeData(np.zeros((3, 3)), np.zeros((2, 2)), -np.ones(2), False)  # float64 in
    store.save(make_record(store), episode, timestamps=np.arange(3))
    with np.load(store.episodes_dir / "online_00000" / "arrays.npz") as stored:
        dtypes = {name: stored[name].dtype for name in stored.files}
    assert dtypes == {"states": np.float32, "actions": np.float32, "rewards": np.float32, "terminal": np.bool_,
                      "timestamps": np.float64}


def test_the_store_layout_is_created_under_a_new_root_as_documented(tmp_path):
    store = EpisodeStore(tmp_path / "runs" / "store")
    assert sorted(p.name for p in (tmp_path / "runs" / "store").iterdir()) == [".incoming", "episodes", "quarantine"]
    assert (store.episodes_dir, store.incoming_dir, store.quarantine_dir) == (
        tmp_path / "runs" / "store" / "episodes", tmp_path / "runs" / "store" / ".incoming",
        tmp_path / "runs" / "store" / "quarantine")


def test_the_thumbnail_is_the_given_rgb_frame_and_meta_is_indented(tmp_path):
    import cv2

    store = EpisodeStore(tmp_path)
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    store.save(make_record(store), make_episode(), thumbnail=red)
    decoded = cv2.imdecode(np.fromfile(store.thumbnail_path("online_00000"), np.uint8), cv2.IMREAD_COLOR)  # BGR
    assert decoded[..., 2].min() > 240 and decoded[..., :2].max() < 15
    meta_text = (store.episodes_dir / "online_00000" / "meta.json").read_text()
    assert meta_text == json.dumps(json.loads(meta_text), indent=2)
    store.relabel("online_00000", "success", final_reward=0.0)
    with np.load(store.episodes_dir / "online_00000" / "arrays.npz") as stored:
        assert sorted(stored.files) == ["actions", "rewards", "states", "terminal", "timestamps"]
