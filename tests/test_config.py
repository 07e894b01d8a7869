import dataclasses
import json

import pytest

from parl_robot.config import (
    TASKS,
    ConfigError,
    CriticConfig,
    LearnerConfig,
    PolicyUpdateConfig,
    load_config,
    parse_overrides,
    with_overrides,
)


def test_packaged_task_config_loads():
    cfg = load_config(task="cup_to_rack")
    assert cfg.task.name == "cup_to_rack"
    optimizer = cfg.learner.optimizer
    assert (optimizer.num_samples, optimizer.num_kept, optimizer.local_steps) == (32, 10, 10)
    assert cfg.learner.optimizer.step_size == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"learner.nope": 1}, "unknown key 'learner.nope'"),
        ({"learner.optimizer.num_samples": "many"}, "'learner.optimizer.num_samples' must be an integer, got 'many'"),
        ({"control.rate_hz": 100}, "'control.rate_hz' = 100 is out of range"),
        ({"learner.policy": "mlp"}, "'learner.policy' = 'mlp' is not one of"),
        ({"learner.optimizer.gripper_from": "robot"}, "'learner.optimizer.gripper_from' = 'robot' is not one of"),
        ({"learner.policy_update.filtered_bc_steps": -1}, "'learner.policy_update.filtered_bc_steps' = -1 is out of range"),
        ({"control.safety_box_low": [0.1, 0.1]}, "'control.safety_box_low' must be a list of 3 numbers"),
        ({"learner.optimizer.num_kept": 40}, "'learner.optimizer.num_kept' (40) must not exceed"),
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
    with pytest.raises(ConfigError, match=r"bad.yaml: 'learner.schedule.batch_size' = 0 is out of range"):
        load_config(path)


def test_overlay_merges_and_names_itself(tmp_path):
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"])
    assert cfg.learner.optimizer.num_samples == 8 and cfg.control.rate_hz == 5.0
    overlay = tmp_path / "o.yaml"
    overlay.write_text("sim:\n  camera_width: 2\n")
    with pytest.raises(ConfigError, match=r"o.yaml: 'sim.camera_width' = 2"):
        load_config(task="cup_to_rack", overlays=[overlay])


def test_config_hash_changes_with_content():
    a = load_config(task="cup_to_rack")
    b = load_config(task="cup_to_rack", overrides={"learner.schedule.batch_size": 128})
    assert a.config_hash() != b.config_hash() and a.config_hash() == load_config(task="cup_to_rack").config_hash()


def test_known_tasks_list():
    assert "cup_to_rack" in TASKS


def test_openvla_refuses_a_policy_moving_average():
    with pytest.raises(ConfigError, match="'learner.policy_ema_rate' must be 0 for openvla"):
        load_config(task="cup_to_rack", overrides={"learner.policy": "openvla", "learner.observation": "image"})
    cfg = load_config(task="cup_to_rack", overlays=["openvla"])
    assert cfg.learner.policy_ema_rate == 0.0 and cfg.learner.policy_update.distill_lr == cfg.learner.policy_lr


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda cfg: dataclasses.replace(cfg.learner.optimizer, num_samples=0), "'OptimizerConfig.num_samples' = 0 is out of range"),
        (lambda cfg: dataclasses.replace(cfg.learner.optimizer, num_kept=64), "'OptimizerConfig.num_kept' (64) must not exceed"),
        (lambda cfg: CriticConfig(cql_alpha="high"), "'CriticConfig.cql_alpha' must be a number, got 'high'"),
        (lambda cfg: dataclasses.replace(cfg.control, home_xyz=[0.3, 0.0]), "'ControlConfig.home_xyz' must be a list of 3"),
        (lambda cfg: dataclasses.replace(cfg, learner={"policy": "gaussian"}), "'TaskConfig.learner' must be a LearnerConfig"),
        (lambda cfg: LearnerConfig(policy_update=PolicyUpdateConfig(rule="reparameterized")),
         "'LearnerConfig.policy_update.rule' reparameterized needs"),
        (lambda cfg: with_overrides(cfg.learner, {"schedule.batch_size": 0}), "'schedule.batch_size' = 0 is out of range"),
    ],
)
def test_every_construction_path_checks_ranges_naming_key_and_value(build, fragment):
    with pytest.raises(ConfigError) as err:
        build(load_config(task="cup_to_rack"))
    assert fragment in str(err.value)


def test_float_fields_take_integers_as_floats():
    assert CriticConfig(cql_alpha=1).cql_alpha == 1.0 and isinstance(CriticConfig(cql_alpha=1).cql_alpha, float)


def test_old_flat_learner_keys_are_migrated_with_a_message_naming_the_new_key(tmp_path, caplog):
    overlay = tmp_path / "old.yaml"
    overlay.write_text("learner:\n  num_samples: 16\n  critic: iql\n  warmup_episodes: 3\n")
    cfg = load_config(task="cup_to_rack", overlays=[overlay], overrides={"learner.cql_alpha": 1.0, "learner.policy_update": "none"})
    learner = cfg.learner
    assert (learner.optimizer.num_samples, learner.critic.kind, learner.schedule.warmup_episodes) == (16, "iql", 3)
    assert learner.critic.cql_alpha == 1.0 and learner.policy_update.rule == "none"
    assert learner.optimizer.num_kept == 10  # the task file's nested keys stay
    messages = caplog.text
    assert "'learner.num_samples' is now 'learner.optimizer.num_samples'" in messages and "old.yaml" in messages
    assert "'learner.critic' is now 'learner.critic.kind'" in messages
    assert "'learner.cql_alpha' is now 'learner.critic.cql_alpha'" in messages
    with pytest.raises(ConfigError, match="'learner.num_samples' and 'learner.optimizer.num_samples' both set"):
        load_config(task="cup_to_rack", overrides={"learner.num_samples": 16, "learner.optimizer.num_samples": 8})
    both = tmp_path / "both.yaml"
    both.write_text("learner:\n  batch_size: 16\n  schedule:\n    batch_size: 32\n")
    with pytest.raises(ConfigError, match="both.yaml: 'learner.batch_size' and 'learner.schedule.batch_size' both set"):
        load_config(task="cup_to_rack", overlays=[both])


def test_one_override_parser_reads_json_and_key_value_forms():
    expected = {"learner.critic.cql_alpha": 1.5, "learner.optimizer.include_dataset_action": False,
                "control.home_xyz": [0.3, 0, 0.2], "episodes.store_dir": "runs/x"}
    as_json = json.dumps(expected)
    as_text = ("learner.critic.cql_alpha=1.5, learner.optimizer.include_dataset_action=false,"
               "control.home_xyz=[0.3,0,0.2],episodes.store_dir=runs/x")
    as_items = ["learner.critic.cql_alpha=1.5", "learner.optimizer.include_dataset_action=false",
                "control.home_xyz=[0.3, 0, 0.2]", "episodes.store_dir=runs/x"]
    for form in (as_json, as_text, as_items, expected):
        assert parse_overrides(form) == expected
    assert parse_overrides("") == parse_overrides(None) == {}
    cfg = load_config(task="cup_to_rack", overrides=as_text)
    assert cfg.learner.critic.cql_alpha == 1.5 and cfg.control.home_xyz == [0.3, 0, 0.2]
    for bad, fragment in (("{not json", "not valid JSON"), ("[1, 2]", "not key=value"), ("learner.critic", "not key=value")):
        with pytest.raises(ConfigError, match=fragment):
            parse_overrides(bad)


def test_recommended_profile_is_the_study_setup_plus_its_best_variant():
    recommended = load_config(task="cup_to_rack", overlays=["recommended"])
    study = load_config(task="cup_to_rack", overlays=["study"],
                        overrides={"learner.optimizer.gripper_from": "policy", "learner.policy_update.filtered_bc_steps": 1})
    assert recommended == study
    assert recommended.learner.critic.cql_alpha == 0.1 and recommended.learner.optimizer.gripper_from == "policy"


def test_demo_profile_is_the_study_setup_with_the_demos_episode_counts():
    demo = load_config(task="pot_to_sink", overlays=["demo"])
    study = load_config(task="pot_to_sink", overlays=["study"],
                        overrides={"learner.schedule.warmup_episodes": 10, "episodes.num_online_episodes": 40})
    assert demo == study


def test_paper_profile_is_pa_rl_as_published_without_the_projects_additions():
    learner = load_config(task="cup_to_rack", overlays=["paper"]).learner
    optimizer, schedule, policy_update = learner.optimizer, learner.schedule, learner.policy_update
    assert (optimizer.num_samples, optimizer.num_kept, optimizer.local_steps, optimizer.step_size) == (32, 10, 10, 3e-4)
    # Batch 256: the reference robot config (issue 31), not IDQL's 1024.
    assert (schedule.batch_size, schedule.warmup_episodes, learner.diffusion_steps) == (256, 20, 5)
    assert (schedule.warmup_critic_steps, policy_update.distill_states, optimizer.gripper_from,
            policy_update.filtered_bc_steps) == (0, "all", "critic", 0)
