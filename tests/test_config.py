import dataclasses
import json

import pytest

from parl_robot.config import TASKS, ConfigError, LearnerConfig, load_config, parse_overrides


def test_packaged_task_config_loads():
    cfg = load_config(task="cup_to_rack")
    assert cfg.task.name == "cup_to_rack"
    assert (cfg.learner.num_samples, cfg.learner.num_kept, cfg.learner.local_steps) == (32, 10, 10)
    assert cfg.learner.local_step_size == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"learner.nope": 1}, "unknown key 'learner.nope'"),
        ({"learner.num_samples": "many"}, "'learner.num_samples' must be an integer, got 'many'"),
        ({"control.rate_hz": 100}, "'control.rate_hz' = 100 is out of range"),
        ({"learner.policy": "mlp"}, "'learner.policy' = 'mlp' is not one of"),
        ({"learner.gripper_from": "robot"}, "'learner.gripper_from' = 'robot' is not one of"),
        ({"learner.filtered_bc_steps": -1}, "'learner.filtered_bc_steps' = -1 is out of range"),
        ({"control.safety_box_low": [0.1, 0.1]}, "'control.safety_box_low' must be a list of 3 numbers"),
        ({"learner.num_kept": 40}, "'learner.num_kept' (40) must not exceed"),
        ({"control.safety_box_low": [0.5, 0.0, 0.0]}, "must be below"),
    ],
)
def test_bad_values_name_key_value_and_file(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(task="cup_to_rack", overrides=overrides)
    assert fragment in str(err.value)
    assert "cup_to_rack.yaml" in str(err.value)


def test_bad_yaml_file_is_reported(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    path.write_text("learner:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: 'learner.batch_size' = 0 is out of range"):
        load_config(path)


def test_overlay_merges_and_names_itself(tmp_path):
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"])
    assert cfg.learner.num_samples == 8 and cfg.control.rate_hz == 5.0
    overlay = tmp_path / "o.yaml"
    overlay.write_text("sim:\n  camera_width: 2\n")
    with pytest.raises(ConfigError, match=r"o.yaml: 'sim.camera_width' = 2"):
        load_config(task="cup_to_rack", overlays=[overlay])


def test_config_hash_changes_with_content():
    a = load_config(task="cup_to_rack")
    b = load_config(task="cup_to_rack", overrides={"learner.batch_size": 128})
    assert a.config_hash() != b.config_hash() and a.config_hash() == load_config(task="cup_to_rack").config_hash()


def test_known_tasks_list():
    assert "cup_to_rack" in TASKS


def test_openvla_refuses_a_policy_moving_average():
    with pytest.raises(ConfigError, match="'learner.policy_ema_rate' must be 0 for openvla"):
        load_config(task="cup_to_rack", overrides={"learner.policy": "openvla", "learner.observation": "image"})
    cfg = load_config(task="cup_to_rack", overlays=["openvla"])
    assert cfg.learner.policy_ema_rate == 0.0 and cfg.learner.distill_lr == cfg.learner.policy_lr


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda cfg: dataclasses.replace(cfg.learner, num_samples=0), "'LearnerConfig.num_samples' = 0 is out of range"),
        (lambda cfg: dataclasses.replace(cfg.learner, num_kept=64), "'LearnerConfig.num_kept' (64) must not exceed"),
        (lambda cfg: LearnerConfig(cql_alpha="high"), "'LearnerConfig.cql_alpha' must be a number, got 'high'"),
        (lambda cfg: dataclasses.replace(cfg.control, home_xyz=[0.3, 0.0]), "'ControlConfig.home_xyz' must be a list of 3"),
        (lambda cfg: dataclasses.replace(cfg, learner={"policy": "gaussian"}), "'TaskConfig.learner' must be a LearnerConfig"),
        (lambda cfg: LearnerConfig(policy_update="reparameterized"), "'LearnerConfig.policy_update' reparameterized needs"),
    ],
)
def test_every_construction_path_checks_ranges_naming_key_and_value(build, fragment):
    with pytest.raises(ConfigError) as err:
        build(load_config(task="cup_to_rack"))
    assert fragment in str(err.value)


def test_float_fields_take_integers_as_floats():
    assert LearnerConfig(cql_alpha=1).cql_alpha == 1.0 and isinstance(LearnerConfig(cql_alpha=1).cql_alpha, float)


def test_one_override_parser_reads_json_and_key_value_forms():
    expected = {"learner.cql_alpha": 1.5, "learner.include_dataset_action": False, "control.home_xyz": [0.3, 0, 0.2],
                "episodes.store_dir": "runs/x"}
    as_json = json.dumps(expected)
    as_text = "learner.cql_alpha=1.5, learner.include_dataset_action=false,control.home_xyz=[0.3,0,0.2],episodes.store_dir=runs/x"
    as_items = ["learner.cql_alpha=1.5", "learner.include_dataset_action=false", "control.home_xyz=[0.3, 0, 0.2]",
                "episodes.store_dir=runs/x"]
    for form in (as_json, as_text, as_items, expected):
        assert parse_overrides(form) == expected
    assert parse_overrides("") == parse_overrides(None) == {}
    cfg = load_config(task="cup_to_rack", overrides=as_text)
    assert cfg.learner.cql_alpha == 1.5 and cfg.control.home_xyz == [0.3, 0, 0.2]
    for bad, fragment in (("{not json", "not valid JSON"), ("[1, 2]", "not key=value"), ("learner.cql_alpha", "not key=value")):
        with pytest.raises(ConfigError, match=fragment):
            parse_overrides(bad)


def test_recommended_profile_is_the_study_setup_plus_its_best_variant():
    recommended = load_config(task="cup_to_rack", overlays=["recommended"])
    study = load_config(task="cup_to_rack", overlays=["study"],
                        overrides={"learner.gripper_from": "policy", "learner.filtered_bc_steps": 1})
    assert recommended == study
    assert recommended.learner.cql_alpha == 0.1 and recommended.learner.gripper_from == "policy"
