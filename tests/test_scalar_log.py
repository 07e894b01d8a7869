"""TensorBoard scalars of the learner (parl_robot/rl/scalar_log.py), read back with TensorBoard's own reader."""

import calendar
import time

import numpy as np
import pytest

from parl_robot.rl import scalar_log
from parl_robot.rl.scalar_log import ScalarLog
from test_trainer import episode, make_trainer, through_warmup


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_trainer_stats_and_episodes_become_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    trainer, _ = make_trainer()
    through_warmup(trainer)
    assert trainer.catch_up()
    rng = np.random.default_rng(2)
    lines = []
    log = ScalarLog(tmp_path / "tensorboard", log=lines.append, run_name="run")
    assert log.active and "tensorboard --logdir" in lines[0]
    log.stats(trainer.stats())  # after the catch-up: no distillation yet (its NaN gain is left out)
    assert trainer.online_updates(new_transitions=3) == 3
    stats = trainer.stats()
    assert np.isfinite(stats["q_optimization_gain"]) and stats["q_optimization_gain"] >= -1e-6  # argmax over samples
    log.stats(stats)
    for index, success in enumerate([True, False, True]):
        log.episode(index, success, steps=5, intervention_steps=index)
    log.close()

    scalars = _scalars(tmp_path / "tensorboard" / "run")
    assert [step for step, _ in scalars["loss/critic"]] == [6, 9]  # against the critic update count
    assert scalars["loss/policy"][-1] == (9, pytest.approx(stats["policy_loss"]))
    assert scalars["q/optimization_gain"] == [(9, pytest.approx(stats["q_optimization_gain"]))]
    assert [value for _, value in scalars["episodes/success"]] == [1.0, 0.0, 1.0]
    assert [value for _, value in scalars["episodes/success_rate_last_10"]] == pytest.approx([1.0, 0.5, 2 / 3])
    assert [value for _, value in scalars["episodes/intervention_steps"]] == [0.0, 1.0, 2.0]


def test_without_the_tensorboard_package_it_says_so_once_and_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(scalar_log, "_summary_writer_class", lambda: None)
    lines = []
    log = ScalarLog(tmp_path / "tensorboard", log=lines.append)
    log.stats({"critic_loss": 1.0, "critic_updates": 3})
    log.episode(0, True, 5)
    log.close()
    assert not log.active and log.directory is None
    assert lines == ["TensorBoard logging off: the `tensorboard` package is not installed (pip install tensorboard)"]
    assert not (tmp_path / "tensorboard").exists()


def test_switched_off_it_writes_nothing(tmp_path):
    log = ScalarLog(tmp_path / "tensorboard", enabled=False, log=lambda line: pytest.fail(line))
    log.episode(0, True, 5)
    assert not log.active and log.directory is None and not (tmp_path / "tensorboard").exists()


def test_every_stat_has_its_tag_and_only_finite_numbers_are_written(tmp_path):
    pytest.importorskip("tensorboard")
    lines = []
    log = ScalarLog(tmp_path / "tb", log=lines.append)
    run_directory = log.directory
    assert run_directory.parent == tmp_path / "tb" and run_directory.name.count("-") == 1  # UTC start: 20261130-012345
    assert run_directory.name.replace("-", "").isdigit() and len(run_directory.name) == 15
    assert lines == [f"TensorBoard scalars in {run_directory} (tensorboard --logdir {tmp_path / 'tb'})"]
    stats = {key: float(index) + 0.5 for index, key in enumerate(scalar_log.STAT_SCALARS)}
    stats["critic_updates"] = 40
    log.stats(stats)
    log.stats({"critic_loss": float("nan"), "policy_loss": True, "q_data": "1.0", "q_optimized": float("inf"),
               "policy_version": 7})  # no critic_updates: step 0; NaN, inf, bools and strings are left out
    log.flush()  # readable before close
    scalars = _scalars(run_directory)
    expected = {tag: [(40, pytest.approx(stats[key]))] for key, tag in scalar_log.STAT_SCALARS.items()}
    expected["updates/policy_version"] = [(40, pytest.approx(stats["policy_version"])), (0, 7.0)]
    assert scalars == expected
    log.close()
    assert not log.active
    log.close()  # twice is fine
    log.stats({"critic_loss": 1.0})  # after close: nothing, no error


def test_the_run_directory_is_named_by_the_utc_start_time_whatever_the_local_zone(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("TZ", "Etc/GMT-14")  # local time 14 h ahead of UTC: a local-time name would differ
    time.tzset()
    try:
        before = time.time()
        log = ScalarLog(tmp_path / "tb", log=lambda line: None)
        after = time.time()
        log.close()
    finally:
        monkeypatch.undo()
        time.tzset()
    named = calendar.timegm(time.strptime(log.directory.name, "%Y%m%d-%H%M%S"))
    assert int(before) - 1 <= named <= after + 1


def test_episode_scalars_use_the_store_index_and_a_window_of_the_last_10(tmp_path):
    pytest.importorskip("tensorboard")
    log = ScalarLog(tmp_path / "tb", log=lambda line: None, run_name="episodes")
    outcomes = [True] * 3 + [False] * 9  # after 12 episodes the last 10 hold one success
    for index, success in enumerate(outcomes):
        log.episode(100 + index, success, steps=20 + index)
    log.close()
    scalars = _scalars(tmp_path / "tb" / "episodes")
    for tag in ("episodes/success", "episodes/steps", "episodes/intervention_steps", "episodes/success_rate_last_10"):
        assert [step for step, _ in scalars[tag]] == list(range(100, 112)), tag  # each against the store index
    assert [value for _, value in scalars["episodes/steps"]] == [float(20 + i) for i in range(12)]
    assert [value for _, value in scalars["episodes/intervention_steps"]] == [0.0] * 12
    rates = [value for _, value in scalars["episodes/success_rate_last_10"]]
    assert rates[:3] == [1.0, 1.0, 1.0] and rates[9] == pytest.approx(0.3)
    assert rates[10:] == pytest.approx([0.2, 0.1])  # the window drops the oldest
    assert scalar_log.SUCCESS_WINDOW == 10 and "episodes/success_rate_last_10" in scalars
