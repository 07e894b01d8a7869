"""Atomic learner checkpoints (parl_robot/rl/checkpoint.py): staged, fsynced, renamed; the previous one
kept and used when the latest is torn; concurrent savers never collide."""

from pathlib import Path

import pytest
import torch

from parl_robot.rl.checkpoint import load_checkpoint, save_checkpoint


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path):
    save_checkpoint(tmp_path, {"value": 1})
    save_checkpoint(tmp_path, {"value": 2})
    (tmp_path / "latest.pt").write_bytes(b"torn write")
    assert load_checkpoint(tmp_path) == {"value": 1}


def test_checkpoint_is_fsynced_before_it_replaces_the_latest_and_rotates_one_back(tmp_path, monkeypatch):
    import os as os_module

    from parl_robot.rl import checkpoint

    directory = tmp_path / "new" / "checkpoints"  # created, parents too
    assert load_checkpoint(directory) is None  # nothing there yet
    calls = []
    real_fsync, real_replace = os_module.fsync, os_module.replace
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: (calls.append(("fsync", os_module.fstat(fd).st_size)), real_fsync(fd)))
    monkeypatch.setattr(checkpoint.os, "replace", lambda a, b: (calls.append(("replace", Path(a).name, Path(b).name)), real_replace(a, b)))
    for value in (1, 2, 3):
        assert save_checkpoint(directory, {"value": value}) == directory / "latest.pt"
    fsyncs = [i for i, call in enumerate(calls) if call[0] == "fsync"]
    into_latest = [i for i, call in enumerate(calls) if call[0] == "replace" and call[2] == "latest.pt"]
    assert len(fsyncs) == len(into_latest) == 3 and all(f < r for f, r in zip(fsyncs, into_latest))
    assert all(calls[i][1] > 0 for i in fsyncs)  # the whole file was written (flushed) when it was fsynced
    assert ("replace", "latest.pt", "previous.pt") in calls
    assert torch.load(directory / "latest.pt", weights_only=False) == {"value": 3}
    assert torch.load(directory / "previous.pt", weights_only=False) == {"value": 2}
    assert sorted(p.name for p in directory.iterdir()) == ["latest.pt", "previous.pt"]  # no temporary left


def test_unreadable_checkpoints_raise_naming_each_file(tmp_path):
    (tmp_path / "latest.pt").write_bytes(b"torn")
    with pytest.raises(RuntimeError, match="no readable checkpoint: .*latest.pt: "):
        load_checkpoint(tmp_path)
    (tmp_path / "previous.pt").write_bytes(b"also torn")
    with pytest.raises(RuntimeError) as raised:
        load_checkpoint(tmp_path)
    message = str(raised.value)
    assert message.startswith(f"no readable checkpoint: {tmp_path / 'latest.pt'}: ")
    assert f"; {tmp_path / 'previous.pt'}: " in message  # each file's own error, in order
    for name in ("latest.pt", "previous.pt"):
        (tmp_path / name).unlink()
    save_checkpoint(tmp_path, {"value": 5})
    save_checkpoint(tmp_path, {"value": 6})
    (tmp_path / "latest.pt").unlink()  # only a previous one, and readable
    assert load_checkpoint(tmp_path) == {"value": 5}


def test_concurrent_checkpoints_from_two_threads_never_collide(tmp_path):
    """The learner saves from its learning thread and its ROS thread; the soak benchmark once caught
    the latest -> previous rotation of one racing the other's."""
    import threading

    errors = []

    def save_many(tag):
        try:
            for i in range(40):
                save_checkpoint(tmp_path, {"tag": tag, "i": i})
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            errors.append(err)

    threads = [threading.Thread(target=save_many, args=(tag,)) for tag in ("learning", "episodes")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and load_checkpoint(tmp_path)["i"] == 39
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]


def test_a_learners_checkpoint_round_trips_tensor_for_tensor(tmp_path):
    """What the learner node saves (the agent's state with its policy average, optimizers, RNG states
    and stats, and the online episode count) comes back equal."""
    from test_trainer import make_trainer

    trainer, _ = make_trainer({"policy_ema_rate": 0.005})
    state = {"agent": trainer.agent.state_dict(), "online_episodes": 3}
    save_checkpoint(tmp_path, state)
    loaded = load_checkpoint(tmp_path)
    assert loaded["online_episodes"] == 3 and loaded["agent"].keys() == state["agent"].keys()
    for part in ("policy", "critic", "target_critic", "policy_ema"):
        for name, tensor in state["agent"][part].items():
            assert torch.equal(loaded["agent"][part][name], tensor), (part, name)
    assert loaded["agent"]["numpy_rng"] == state["agent"]["numpy_rng"]
    assert loaded["agent"]["stats"] == pytest.approx(state["agent"]["stats"], nan_ok=True)
    trainer.agent.load_state_dict(loaded["agent"])


def test_a_checkpoint_written_on_a_gpu_loads_onto_the_cpu(tmp_path, monkeypatch):
    """A GPU learner's checkpoint read on a CPU-only machine: its storages are tagged `cuda:0` (a tagger
    ahead of torch's own makes this CPU's tensors look so when saved)."""
    import torch.serialization as serialization

    registry = list(serialization._package_registry)
    serialization.register_package(1, lambda storage: "cuda:0" if storage.device.type == "cpu" else None,
                                   lambda storage, location: None)
    try:
        save_checkpoint(tmp_path, {"weight": torch.arange(3.0)})
    finally:
        serialization._package_registry[:] = registry
    if not torch.cuda.is_available():  # what a load that kept the saved device does here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "latest.pt", weights_only=True)
    loaded = load_checkpoint(tmp_path)["weight"]
    assert loaded.device.type == "cpu" and torch.equal(loaded, torch.arange(3.0))


class _RunsCode:
    """A pickle that calls a function when it is loaded (what a forged checkpoint would carry)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code_ran"
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    torch.save({"agent": {}, "payload": _RunsCode(marker)}, directory / "latest.pt")
    with pytest.raises(RuntimeError, match="no readable checkpoint: .*latest.pt: .*Weights only load failed"):
        load_checkpoint(directory)
    assert not marker.exists()
