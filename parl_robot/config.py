"""Task configuration: YAML files mapped onto validated dataclasses.

Every tunable of the system lives here with its default, so a reader sees the whole
experiment in one place. Loading is strict: an unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` naming the key path, the value and the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
TASKS = ("cup_to_rack", "pot_to_sink", "vegetable_to_sink")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range."""


def _range(low: float | None = None, high: float | None = None, choices: tuple | None = None) -> dict:
    return {"low": low, "high": high, "choices": choices}


def _field(default: Any, low: float | None = None, high: float | None = None, choices: tuple | None = None):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=_range(low, high, choices))
    return field(default=default, metadata=_range(low, high, choices))


@dataclass
class TaskInfo:
    name: str = _field("cup_to_rack", choices=TASKS)
    instruction: str = "put the cup on the drying rack"


@dataclass
class ControlConfig:
    """How the arm is commanded: rate, action scaling and the safety limits."""

    rate_hz: float = _field(5.0, low=0.5, high=20.0)
    max_episode_steps: int = _field(40, low=1, high=10_000)
    # Per-dimension scale mapping a [-1, 1] action onto metres / radians / gripper.
    action_scale: list = _field([0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0])
    # Hold still after this many control periods without a fresh action.
    watchdog_periods: float = _field(2.0, low=1.0, high=20.0)
    max_translation_per_step_m: float = _field(0.05, low=0.0, high=0.2)
    max_rotation_per_step_rad: float = _field(0.25, low=0.0, high=1.0)
    gripper_threshold: float = _field(0.5, low=0.0, high=1.0)
    # Calibrated workspace box for the end-effector position (metres, robot base frame).
    safety_box_low: list = _field([0.15, -0.25, 0.04])
    safety_box_high: list = _field([0.45, 0.25, 0.35])
    home_xyz: list = _field([0.30, 0.0, 0.20])
    # Orientation bounds of the commanded gripper: yaw about world z, and tilt away from pointing down.
    yaw_limits_rad: list = _field([-1.2, 1.2])
    max_tilt_rad: float = _field(0.6, low=0.0, high=1.6)
    # Non-blocking steps as Bridge commands them: the trajectory lasts a little longer than a period
    # (no stop-start between steps), with a short acceleration phase. Both relative to the period.
    moving_time_periods: float = _field(1.25, low=0.5, high=5.0)
    accel_time_periods: float = _field(0.5, low=0.05, high=2.5)
    # Resets: a joint-space move to this neutral pose (empty: IK of home_xyz pointing down), lifting
    # the gripper to the home height first; joints move at most this fast.
    neutral_joints: list = _field([])
    home_joint_speed_rad_s: float = _field(1.0, low=0.05, high=3.0)
    home_tolerance_rad: float = _field(0.03, low=0.001, high=0.5)
    # Hold (and report) when the measured gripper position trails the command settled
    # `moving_time` ago by more than this, or when a motor reports a hardware error (polled).
    tracking_tolerance_m: float = _field(0.03, low=0.002, high=0.5)
    motor_poll_period_s: float = _field(1.0, low=0.1, high=60.0)


@dataclass
class SimConfig:
    camera_width: int = _field(128, low=16, high=1024)
    camera_height: int = _field(128, low=16, high=1024)
    camera_rate_hz: float = _field(10.0, low=0.5, high=60.0)
    physics_dt: float = _field(0.002, low=1e-4, high=0.01)
    # Object start region (x, y) and yaw range randomized at every reset.
    object_xy_low: list = _field([0.26, -0.14])
    object_xy_high: list = _field([0.34, -0.06])
    object_yaw_range: float = _field(0.6, low=0.0, high=3.1416)
    # Distractor objects of the scene: "always" on the table, "never", or "online" = only in
    # online fine-tuning episodes (the paper's pot_to_sink adds its distractor online only).
    distractors: str = _field("always", choices=("always", "never", "online"))
    seed: int = 0


@dataclass
class RewardConfig:
    """Sparse success reward from object position and gripper state (paper Sec. 5.2)."""

    object_name: str = "cup"
    target_low: list = _field([0.26, 0.06, 0.02])
    target_high: list = _field([0.36, 0.16, 0.20])
    require_gripper_open: bool = True
    # Binary success tasks: reward 0 on success, -1 otherwise (best step reward is 0).
    success_reward: float = 1.0
    reward_bias: float = -1.0


@dataclass
class LearnerConfig:
    """PA-RL + Cal-QL hyper-parameters; defaults from the paper's Appendix B unless noted."""

    policy: str = _field("diffusion", choices=("diffusion", "gaussian", "transformer", "openvla"))
    observation: str = _field("state", choices=("state", "image"))
    device: str = _field("cpu", choices=("cpu", "cuda", "auto"))
    # Stage I: action optimization.
    num_samples: int = _field(32, low=1, high=4096)  # k
    num_kept: int = _field(10, low=1, high=4096)  # m
    local_steps: int = _field(10, low=0, high=1000)  # T
    local_step_size: float = _field(3e-4, low=0.0, high=10.0)  # alpha
    include_dataset_action: bool = True
    selection: str = _field("argmax", choices=("argmax", "softmax"))  # acting
    # Distillation targets: a sample from softmax(Q / temperature) over the candidates (the reference
    # implementation's default) or the argmax candidate.
    distill_selection: str = _field("softmax", choices=("argmax", "softmax"))
    # States distilled on: every replay state, or only states of successful episodes (demos and
    # successful online episodes). On the policy's own failed episodes a young critic's targets
    # reinforce the failure (docs/finetune_study.md, session 5).
    distill_states: str = _field("successful", choices=("all", "successful"))
    softmax_temperature: float = _field(1.0, low=1e-6, high=1e6)
    # Who chooses the executed gripper value (the last action dimension). "critic": PA-RL as
    # published, the optimized action is executed whole. "policy": the critic still ranks and optimizes
    # whole actions and its pick moves the arm, but the gripper value executed is a policy sample's (the
    # first of the k). Acting only: TD targets and distillation targets are unchanged. An offline
    # critic rates "stay open" above "close now" near the grasp and defers it (docs/finetune_study.md,
    # sessions 8-9).
    gripper_from: str = _field("critic", choices=("critic", "policy"))
    # Behaviour-cloning steps on transitions of successful episodes (demos + successful online
    # episodes) after each online policy update; 0 = PA-RL as published. With gripper_from: policy,
    # 1 step gave the study's best 5-seed result on cup_to_rack (docs/finetune_study.md, session 10).
    filtered_bc_steps: int = _field(0, low=0, high=100)
    # How the twin critic heads combine when actions are ranked and optimized: the pessimistic min,
    # or the mean (the reference ranks by its ensemble's mean). TD targets always take the min.
    q_ensemble: str = _field("min", choices=("min", "mean"))
    # Critic.
    critic: str = _field("calql", choices=("calql", "iql"))
    discount: float = _field(0.97, low=0.0, high=1.0)
    cql_alpha: float = _field(5.0, low=0.0, high=1e4)
    cql_num_actions: int = _field(10, low=1, high=1024)  # policy and uniform actions per state in the CQL term
    cql_temperature: float = _field(1.0, low=1e-3, high=1e3)
    iql_expectile: float = _field(0.7, low=0.5, high=1.0)
    target_update_rate: float = _field(0.005, low=0.0, high=1.0)
    critic_hidden: int = _field(256, low=8, high=8192)
    critic_layers: int = _field(3, low=1, high=16)
    hl_gauss_bins: int = _field(0, low=0, high=1024)  # 0 = scalar critic
    critic_lr: float = _field(3e-4, low=0.0, high=1.0)
    # Policy.
    policy_lr: float = _field(3e-4, low=0.0, high=1.0)  # behaviour cloning (offline start, filtered BC)
    distill_lr: float = _field(5e-5, low=0.0, high=1.0)  # online distillation of optimized actions
    # Actions are sampled from an exponential moving average of the policy weights (as the PA-RL
    # reference's DDPM samples with its target parameters): distillation trains on the policy's own
    # samples, and without the lag that loop amplifies its own sampling errors. 0 = no average
    # (required for openvla: it would be a second 7B copy).
    policy_ema_rate: float = _field(0.005, low=0.0, high=1.0)
    policy_hidden: int = _field(256, low=8, high=8192)
    policy_blocks: int = _field(3, low=1, high=32)
    diffusion_steps: int = _field(5, low=1, high=1000)
    transformer_layers: int = _field(4, low=1, high=48)
    transformer_heads: int = _field(8, low=1, high=64)
    action_bins: int = _field(128, low=2, high=4096)
    # OpenVLA (policy: openvla; needs observation: image and the `openvla` extra).
    openvla_path: str = ""  # local directory: config.json, *.safetensors, tokenizer.json, dataset_statistics.json
    openvla_unnorm_key: str = "bridge_orig"
    openvla_dtype: str = _field("bfloat16", choices=("bfloat16", "float16", "float32"))
    openvla_temperature: float = _field(1.0, low=0.0, high=100.0)  # 0 = greedy
    lora_rank: int = _field(32, low=0, high=1024)  # 0 = train every weight
    lora_alpha: float = _field(16.0, low=0.0, high=1e4)
    lora_dropout: float = _field(0.0, low=0.0, high=1.0)
    lora_target_modules: str = "all-linear"  # or comma-separated suffixes, e.g. "q_proj,v_proj"
    load_in_4bit: bool = False
    action_cache_size: int = _field(0, low=0, high=4096)  # cached policy samples per state; 0 = sample live
    # Schedule.
    batch_size: int = _field(256, low=1, high=65536)
    offline_critic_steps: int = _field(300, low=0, high=10_000_000)
    offline_policy_steps: int = _field(600, low=0, high=10_000_000)
    updates_per_step: float = _field(2.0, low=0.0, high=1000.0)  # UTD
    warmup_episodes: int = _field(2, low=0, high=100_000)
    # Critic updates on demos + warm-up episodes when warm-up ends, before the first policy update:
    # a critic pre-trained on a few demos mis-ranks the policy's own samples (docs/finetune_study.md).
    warmup_critic_steps: int = _field(1000, low=0, high=10_000_000)
    online_fraction: float = _field(0.5, low=0.0, high=1.0)
    replay_capacity: int = _field(100_000, low=100, high=100_000_000)
    checkpoint_every_updates: int = _field(500, low=1, high=10_000_000)
    # How the policy learns in each online update (parl_robot/rl/policy_updates.py): "distill" (PA-RL:
    # supervised loss on optimized actions), "reparameterized" (the standard Cal-QL actor: maximize
    # Q - alpha log pi; tanh-Gaussian only), "filtered_bc" (behaviour cloning on successful episodes)
    # or "none" (the offline policy, re-ranked by the online critic). The last three are baselines.
    policy_update: str = _field("distill", choices=("distill", "reparameterized", "filtered_bc", "none"))
    entropy_alpha: float = _field(0.01, low=0.0, high=10.0)
    # The actor does not act on object poses / images older than this (a lost camera pauses control).
    max_observation_age_s: float = _field(0.5, low=0.05, high=10.0)
    seed: int = 0


@dataclass
class EpisodeConfig:
    num_demos: int = _field(10, low=0, high=100_000)
    num_online_episodes: int = _field(12, low=0, high=1_000_000)
    auto_reset: bool = True  # sim: reset without an operator
    auto_label: bool = True  # use the detector's success label without waiting for the operator
    store_dir: str = "runs/cup_to_rack"


@dataclass
class UIConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = _field(8080, low=1, high=65535)
    token: str = ""


@dataclass
class PerceptionConfig:
    """How the hardware graph knows where the task object is (the sim publishes ground truth)."""

    # "colour": largest blob in an HSV range; "aruco": an ArUco marker stuck on top of the object.
    detector: str = _field("colour", choices=("colour", "aruco"))
    # Camera model from `parl-robot calibrate`: intrinsics + robot->camera pose of the published images.
    calibration_file: str = "calibration/camera.yaml"
    # HSV (OpenCV: H 0-179, S and V 0-255) range of the task object's colour.
    object_hsv_low: list = _field([95, 120, 50])
    object_hsv_high: list = _field([125, 255, 255])
    # Height above the table of the plane the blob's centroid is mapped onto (about the object's centre).
    object_plane_height_m: float = _field(0.04, low=0.0, high=0.5)
    min_blob_area_px: int = _field(15, low=1, high=1_000_000)
    object_marker_id: int = _field(0, low=0, high=999)
    aruco_dictionary: str = _field("DICT_4X4_50", choices=("DICT_4X4_50", "DICT_5X5_100", "DICT_6X6_250", "DICT_ARUCO_ORIGINAL"))


@dataclass
class TaskConfig:
    task: TaskInfo = field(default_factory=TaskInfo)
    control: ControlConfig = field(default_factory=ControlConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def __post_init__(self) -> None:
        _check_lengths(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash stored with every episode, to tell which setup produced it."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_VECTOR_LENGTHS = {
    "control.action_scale": 7,
    "control.safety_box_low": 3,
    "control.safety_box_high": 3,
    "control.home_xyz": 3,
    "sim.object_xy_low": 2,
    "sim.object_xy_high": 2,
    "reward.target_low": 3,
    "reward.target_high": 3,
    "control.yaw_limits_rad": 2,
    "perception.object_hsv_low": 3,
    "perception.object_hsv_high": 3,
}


def _get_path(cfg: TaskConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _check_lengths(cfg: TaskConfig, source: str = "<defaults>") -> None:
    for dotted, length in _VECTOR_LENGTHS.items():
        value = _get_path(cfg, dotted)
        if len(value) != length or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{source}: '{dotted}' must be a list of {length} numbers, got {value!r}")
    for low_key, high_key in (
        ("control.safety_box_low", "control.safety_box_high"),
        ("sim.object_xy_low", "sim.object_xy_high"),
        ("reward.target_low", "reward.target_high"),
        ("perception.object_hsv_low", "perception.object_hsv_high"),
    ):
        low, high = _get_path(cfg, low_key), _get_path(cfg, high_key)
        if any(lo >= hi for lo, hi in zip(low, high)):
            raise ConfigError(f"{source}: '{low_key}' {low} must be below '{high_key}' {high} in every axis")
    if cfg.control.neutral_joints and (
        len(cfg.control.neutral_joints) != 6
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in cfg.control.neutral_joints)
    ):
        raise ConfigError(f"{source}: 'control.neutral_joints' must be empty or 6 joint angles (rad), got {cfg.control.neutral_joints!r}")
    if cfg.control.accel_time_periods > cfg.control.moving_time_periods / 2:
        raise ConfigError(
            f"{source}: 'control.accel_time_periods' ({cfg.control.accel_time_periods}) must be at most half of "
            f"'control.moving_time_periods' ({cfg.control.moving_time_periods}): the motors' time profile needs it"
        )
    yaw_low, yaw_high = cfg.control.yaw_limits_rad
    if not -3.15 <= yaw_low < yaw_high <= 3.15:
        raise ConfigError(f"{source}: 'control.yaw_limits_rad' {cfg.control.yaw_limits_rad} must be [low, high] within [-pi, pi]")
    if cfg.learner.num_kept > cfg.learner.num_samples:
        raise ConfigError(
            f"{source}: 'learner.num_kept' ({cfg.learner.num_kept}) must not exceed "
            f"'learner.num_samples' ({cfg.learner.num_samples})"
        )
    if cfg.learner.policy == "openvla" and cfg.learner.observation != "image":
        raise ConfigError(f"{source}: 'learner.policy' openvla reads camera images; set 'learner.observation' to image")
    if cfg.learner.policy == "openvla" and cfg.learner.policy_ema_rate > 0:
        raise ConfigError(
            f"{source}: 'learner.policy_ema_rate' must be 0 for openvla (an averaged copy of 7B weights "
            "does not fit beside them); config/profiles/openvla.yaml sets it"
        )
    if cfg.learner.action_cache_size and cfg.learner.action_cache_size < cfg.learner.num_samples:
        raise ConfigError(
            f"{source}: 'learner.action_cache_size' ({cfg.learner.action_cache_size}) must be 0 or at least "
            f"'learner.num_samples' ({cfg.learner.num_samples}), the samples the optimizer draws from it"
        )


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    if annotation is list or origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key, source)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{source}: '{key}' has an unsupported union type")
    return value


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{dotted}' (known: {', '.join(sorted(known))})")
        coerced = _coerce(value, hints[key], dotted, source)
        meta = known[key].metadata
        low, high, choices = meta.get("low"), meta.get("high"), meta.get("choices")
        if choices is not None and coerced not in choices:
            raise ConfigError(f"{source}: '{dotted}' = {value!r} is not one of {list(choices)}")
        if low is not None and coerced < low or high is not None and coerced > high:
            raise ConfigError(f"{source}: '{dotted}' = {value!r} is out of range [{low}, {high}]")
        kwargs[key] = coerced
    if cls is TaskConfig:
        cfg = TaskConfig.__new__(TaskConfig)
        for f in dataclasses.fields(TaskConfig):
            setattr(cfg, f.name, kwargs.get(f.name, f.default_factory()))  # type: ignore[misc]
        _check_lengths(cfg, source)
        return cfg
    return cls(**kwargs)


def config_from_dict(data: dict, source: str = "<dict>") -> TaskConfig:
    return _build(TaskConfig, data, "", source)


def config_search_dirs() -> list[Path]:
    """Where packaged configs live: the source tree, then a colcon/ament or pip `share/` install."""
    import sys

    dirs = [REPO_ROOT / "config"]
    try:
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("parl_robot")) / "config")
    except Exception:  # not installed through ament, or no ament index on this machine
        pass
    dirs.append(Path(sys.prefix) / "share" / "parl_robot" / "config")
    return dirs


def task_config_path(task: str) -> Path:
    for directory in config_search_dirs():
        candidate = directory / "tasks" / f"{task}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no config file for task '{task}' in {[str(d / 'tasks') for d in config_search_dirs()]}")


def _deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


_OVERRIDE_SEPARATOR = re.compile(r",(?=\s*[A-Za-z_][\w.]*\s*=)")  # a comma that starts the next key=value


def parse_overrides(overrides: str | list[str] | dict | None) -> dict:
    """Dotted-key overrides in the one form the nodes (`overrides` parameter), the CLI (`overrides:=`)
    and the study (`--set`) all accept: a JSON object (`{"learner.cql_alpha": 1.0}`, or such a dict),
    or `key=value` items (a list, or one string with the items separated by commas). A value is
    parsed as JSON when it parses (`1.5`, `10`, `true`, `[0.3, 0, 0.2]`) and kept as a string
    otherwise. Keys and values are checked by `load_config`, like file values."""
    if overrides is None or isinstance(overrides, dict):
        return dict(overrides or {})
    if isinstance(overrides, str):
        text = overrides.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as err:
                raise ConfigError(f"overrides are not valid JSON ({err}): {text}") from None
            if not isinstance(value, dict):
                raise ConfigError(f"overrides must be a JSON object of dotted keys, got {text}")
            return value
        overrides = [item for item in _OVERRIDE_SEPARATOR.split(text) if item.strip()]
    parsed = {}
    for item in overrides:
        key, separator, raw = (part.strip() for part in item.partition("="))
        if not separator or not key:
            raise ConfigError(f"override '{item}' is not key=value (e.g. learner.cql_alpha=1.0)")
        try:
            parsed[key] = json.loads(raw)
        except ValueError:
            parsed[key] = raw
    return parsed


def load_config(
    path: str | Path | None = None,
    task: str | None = None,
    overrides: dict | str | list[str] | None = None,
    overlays: list[str | Path] | None = None,
) -> TaskConfig:
    """Load a task config from `path` (or the packaged file for `task`), merge `overlays` (partial
    YAML files, e.g. `config/profiles/cpu_demo.yaml`), then apply dotted `overrides` such as
    ``{"episodes.num_online_episodes": 3}`` (any form `parse_overrides` reads). Everything is
    validated like file values.
    """
    overrides = parse_overrides(overrides)
    if not path:
        if task is None:
            raise ConfigError("load_config needs a config path or a task name")
        path = task_config_path(task)
    path = Path(path)
    data = _read_yaml(path)
    sources = [str(path)]
    for overlay in overlays or []:
        overlay_path = Path(overlay)
        if not overlay_path.is_file():
            for directory in config_search_dirs():
                if (directory / "profiles" / f"{overlay}.yaml").is_file():
                    overlay_path = directory / "profiles" / f"{overlay}.yaml"
                    break
        merged = _deep_merge(data, _read_yaml(overlay_path))
        config_from_dict(merged, str(overlay_path))  # errors name the overlay that brought the key
        data = merged
        sources.append(str(overlay_path))
    if task is not None and data.get("task", {}).get("name", task) != task:
        raise ConfigError(f"{path}: task.name is '{data['task']['name']}' but task '{task}' was requested")
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: override '{dotted}' goes through a non-mapping value")
        node[parts[-1]] = value
    return config_from_dict(data, " + ".join(sources) + (" + overrides" if overrides else ""))
