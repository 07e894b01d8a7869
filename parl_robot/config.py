"""Task configuration: YAML files mapped onto validated dataclasses.

Every tunable of the system lives here with its default, so a reader sees the whole
experiment in one place. Loading is strict: an unknown key, a wrong type or an
out-of-range value raises :class:`ConfigError` naming the key path, the value and the file.
Each section checks itself in `__post_init__` (types, ranges, choices, vector lengths, its
cross-field rules), so every way of building one is checked: YAML, overrides, a constructor call
in code, `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOG = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
TASKS = ("cup_to_rack", "pot_to_sink", "vegetable_to_sink")


class ConfigError(ValueError):
    """A configuration value is missing, unknown, mistyped or out of range.

    Raised by a section's own check with `key` (the field) and `detail` (what is wrong with its
    value), which the loader turns into the full key path and the file it came from."""

    def __init__(self, message: str, key: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.key, self.detail = key, detail


def _field(default: Any, low: float | None = None, high: float | None = None, choices: tuple | None = None,
           length: int | None = None):
    """A field with its default and what `Section` checks: a range, choices, or (lists) a length of numbers."""
    metadata = {"low": low, "high": high, "choices": choices, "length": length}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: json.loads(json.dumps(d)), metadata=metadata)
    return field(default=default, metadata=metadata)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked_value(value: Any, annotation: Any, metadata: Any) -> Any:
    """`value` as the field stores it (ints of float fields become floats); raises ConfigError with
    the detail only (the caller names the key)."""
    def fail(detail: str):
        raise ConfigError(detail, detail=detail)

    given = value
    if annotation is float:
        if not _is_number(value):
            fail(f"must be a number, got {value!r}")
        value = float(value)
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"must be an integer, got {value!r}")
    elif annotation is bool:
        if not isinstance(value, bool):
            fail(f"must be true or false, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str):
            fail(f"must be a string, got {value!r}")
    elif annotation is list or typing.get_origin(annotation) is list:
        if not isinstance(value, list):
            fail(f"must be a list, got {value!r}")
    elif dataclasses.is_dataclass(annotation):
        if not isinstance(value, annotation):
            fail(f"must be a {annotation.__name__} (a mapping in YAML), got {value!r}")
    low, high, choices, length = (metadata.get(k) for k in ("low", "high", "choices", "length"))
    if choices is not None and value not in choices:
        fail(f"= {given!r} is not one of {list(choices)}")
    if low is not None and value < low or high is not None and value > high:
        fail(f"= {given!r} is out of range [{low}, {high}]")
    if length is not None and (len(value) != length or not all(_is_number(v) for v in value)):
        fail(f"must be a list of {length} numbers, got {value!r}")
    return value


class Section:
    """A config dataclass that validates itself on construction: every field's type and
    `_field` limits, then the section's cross-field rules (`check`)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            try:
                setattr(self, f.name, _checked_value(getattr(self, f.name), hints[f.name], f.metadata))
            except ConfigError as err:
                raise _field_error(self, f.name, err.detail) from None
        self.check()

    def check(self) -> None:
        """Rules between fields; raise `self.error(key, detail)`."""

    def error(self, key: str, detail: str) -> ConfigError:
        return _field_error(self, key, detail)


def _field_error(section: Section, key: str, detail: str) -> ConfigError:
    return ConfigError(f"'{type(section).__name__}.{key}' {detail}", key=key, detail=detail)


def _check_order(section: Section, low_key: str, high_key: str) -> None:
    low, high = getattr(section, low_key), getattr(section, high_key)
    if any(lo >= hi for lo, hi in zip(low, high)):
        raise section.error(low_key, f"{low} must be below '{high_key}' {high} in every axis")


@dataclass
class TaskInfo(Section):
    name: str = _field("cup_to_rack", choices=TASKS)
    instruction: str = "put the cup on the drying rack"


@dataclass
class ControlConfig(Section):
    """How the arm is commanded: rate, action scaling and the safety limits."""

    rate_hz: float = _field(5.0, low=0.5, high=20.0)
    max_episode_steps: int = _field(40, low=1, high=10_000)
    # Per-dimension scale mapping a [-1, 1] action onto metres / radians / gripper.
    action_scale: list = _field([0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0], length=7)
    # Hold still after this many control periods without a fresh action.
    watchdog_periods: float = _field(2.0, low=1.0, high=20.0)
    max_translation_per_step_m: float = _field(0.05, low=0.0, high=0.2)
    max_rotation_per_step_rad: float = _field(0.25, low=0.0, high=1.0)
    gripper_threshold: float = _field(0.5, low=0.0, high=1.0)
    # Calibrated workspace box for the end-effector position (metres, robot base frame).
    safety_box_low: list = _field([0.15, -0.25, 0.04], length=3)
    safety_box_high: list = _field([0.45, 0.25, 0.35], length=3)
    home_xyz: list = _field([0.30, 0.0, 0.20], length=3)
    # Orientation bounds of the commanded gripper: yaw about world z, and tilt away from pointing down.
    yaw_limits_rad: list = _field([-1.2, 1.2], length=2)
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

    def check(self) -> None:
        _check_order(self, "safety_box_low", "safety_box_high")
        if self.neutral_joints and (len(self.neutral_joints) != 6 or not all(_is_number(v) for v in self.neutral_joints)):
            raise self.error("neutral_joints", f"must be empty or 6 joint angles (rad), got {self.neutral_joints!r}")
        if self.accel_time_periods > self.moving_time_periods / 2:
            raise self.error("accel_time_periods", f"({self.accel_time_periods}) must be at most half of "
                             f"'moving_time_periods' ({self.moving_time_periods}): the motors' time profile needs it")
        yaw_low, yaw_high = self.yaw_limits_rad
        if not -3.15 <= yaw_low < yaw_high <= 3.15:
            raise self.error("yaw_limits_rad", f"{self.yaw_limits_rad} must be [low, high] within [-pi, pi]")


@dataclass
class SimConfig(Section):
    camera_width: int = _field(128, low=16, high=1024)
    camera_height: int = _field(128, low=16, high=1024)
    camera_rate_hz: float = _field(10.0, low=0.5, high=60.0)
    physics_dt: float = _field(0.002, low=1e-4, high=0.01)
    # Object start region (x, y) and yaw range randomized at every reset.
    object_xy_low: list = _field([0.26, -0.14], length=2)
    object_xy_high: list = _field([0.34, -0.06], length=2)
    object_yaw_range: float = _field(0.6, low=0.0, high=3.1416)
    # Distractor objects of the scene: "always" on the table, "never", or "online" = only in
    # online fine-tuning episodes (the paper's pot_to_sink adds its distractor online only).
    distractors: str = _field("always", choices=("always", "never", "online"))
    seed: int = 0

    def check(self) -> None:
        _check_order(self, "object_xy_low", "object_xy_high")


@dataclass
class RewardConfig(Section):
    """Sparse success reward from object position and gripper state (paper Sec. 5.2)."""

    object_name: str = "cup"
    target_low: list = _field([0.26, 0.06, 0.02], length=3)
    target_high: list = _field([0.36, 0.16, 0.20], length=3)
    require_gripper_open: bool = True
    # Binary success tasks: reward 0 on success, -1 otherwise (best step reward is 0).
    success_reward: float = 1.0
    reward_bias: float = -1.0
    # What decides success: "positions" (the object's detected position in the target region, above)
    # or "classifier" (a success classifier on the camera's frames, trained from the operator's labels
    # with `parl-robot reward train`; parl_robot/perception/success_classifier.py).
    detector: str = _field("positions", choices=("positions", "classifier"))
    classifier_file: str = "models/success_classifier.pt"
    classifier_threshold: float = _field(0.0, low=0.0, high=1.0)  # 0 = the threshold saved with the model
    classifier_consecutive_frames: int = _field(2, low=1, high=100)  # positive frames in a row (one per control step)
    classifier_precision_target: float = _field(0.95, low=0.5, high=1.0)  # held-out precision the threshold is chosen for
    # Shadow mode (success_classifier:=true): retrain after this many newly labelled episodes, once the
    # store holds classifier_min_episodes labelled episodes with frames.
    classifier_retrain_every: int = _field(10, low=1, high=100_000)
    classifier_min_episodes: int = _field(20, low=2, high=100_000)

    def check(self) -> None:
        _check_order(self, "target_low", "target_high")

    def final_reward(self, success: bool) -> float:
        """The last step's reward of an episode labelled `success` (or failure): what a label sets."""
        return self.success_reward + self.reward_bias if success else self.reward_bias


@dataclass
class OptimizerConfig(Section):
    """Stage I, action optimization (`learner.optimizer`): k policy samples, the top m by Q, T
    accepted-only gradient-ascent steps on Q; which candidate is executed."""

    num_samples: int = _field(32, low=1, high=4096)  # k
    num_kept: int = _field(10, low=1, high=4096)  # m
    local_steps: int = _field(10, low=0, high=1000)  # T
    step_size: float = _field(3e-4, low=0.0, high=10.0)  # alpha
    include_dataset_action: bool = True  # the batch's dataset action among the distillation candidates
    selection: str = _field("argmax", choices=("argmax", "softmax"))  # the acting rule
    softmax_temperature: float = _field(1.0, low=1e-6, high=1e6)
    # How the twin critic heads combine when actions are ranked and optimized: the pessimistic min,
    # or the mean (the reference ranks by its ensemble's mean; no measurable difference in the study).
    # TD targets always take the min.
    q_ensemble: str = _field("min", choices=("min", "mean"))
    # Who chooses the executed gripper value (parl_robot/rl/executed_action.py): "critic" (PA-RL as
    # published) or "policy" (a policy sample's; in the study it doubles the offline start, 36 % -> 63 %).
    gripper_from: str = _field("critic", choices=("critic", "policy"))
    # Local steps: "accepted_only" (a step is kept only if it raises Q; a candidate stops at its first
    # rejected step) or "best_iterate" (the reference: all T steps clipped to [-1, 1], the best of the
    # T + 1 iterates by Q is kept).
    local_search: str = _field("accepted_only", choices=("accepted_only", "best_iterate"))
    # Where the dataset action goes among the distillation candidates: an extra candidate after the top
    # m ("extra"), or in place of the worst of the top m ("replace_worst", the reference).
    dataset_action_slot: str = _field("extra", choices=("extra", "replace_worst"))

    def check(self) -> None:
        if self.num_kept > self.num_samples:
            raise self.error("num_kept", f"({self.num_kept}) must not exceed 'num_samples' ({self.num_samples})")
        if self.dataset_action_slot == "replace_worst" and self.include_dataset_action and self.num_kept < 2:
            raise self.error("dataset_action_slot", "replace_worst needs num_kept >= 2 (with one candidate the "
                                                    "dataset action would replace every policy sample)")


@dataclass
class CriticConfig(Section):
    """The critic (`learner.critic`): Cal-QL (or IQL) twin Q heads, concatenating the action at every layer."""

    kind: str = _field("calql", choices=("calql", "iql"))
    discount: float = _field(0.97, low=0.0, high=1.0)
    cql_alpha: float = _field(5.0, low=0.0, high=1e4)
    cql_num_actions: int = _field(10, low=1, high=1024)  # policy and uniform actions per state in the CQL term
    cql_temperature: float = _field(1.0, low=1e-3, high=1e3)
    iql_expectile: float = _field(0.7, low=0.5, high=1.0)
    target_update_rate: float = _field(0.005, low=0.0, high=1.0)
    hidden: int = _field(256, low=8, high=8192)
    layers: int = _field(3, low=1, high=16)
    hl_gauss_bins: int = _field(0, low=0, high=1024)  # 0 = scalar critic; > 0: HL-Gauss distributional head
    lr: float = _field(3e-4, low=0.0, high=1.0)
    # Q heads on the shared encoder (the reference robot critic has 10) and how many of them, drawn
    # at random with replacement, give each TD target's min and each conservative term (0 = all
    # heads, the twin critic's min; the reference draws 2, independently for the two).
    members: int = _field(2, low=2, high=64)
    sampled_members: int = _field(0, low=0, high=64)
    # TD loss: "half_mse" = sum over heads of ½·mean squared error (this project); "mse" = mean squared
    # error over heads and batch (the PA-RL reference's `mean((Q - y)²)`); "sum_mse" = sum over heads
    # of the mean squared error (the Cal-QL reference's qf1_loss + qf2_loss).
    td_loss: str = _field("half_mse", choices=("half_mse", "mse", "sum_mse"))
    # Which actions the conservative term pushes down (parl_robot/rl/losses.py):
    # "policy_samples" = cql_num_actions raw policy samples at s and as many uniform actions with their
    # density (this project); "optimized_actions" = the reference's: pi_opt(s) and pi_opt(s') (each
    # repeated cql_num_actions times), cql_num_actions uniform actions and Q(s, a_D), minus log N, the
    # Cal-QL bound on the pi_opt terms only, averaged over the heads; "importance_sampled" = the Cal-QL
    # reference's (tanh-Gaussian policy): cql_num_actions uniform actions and policy samples at s and at
    # s′ (scored at s), each corrected by its log-density, the bound on the policy terms, no Q(s, a_D).
    cql_term: str = _field("policy_samples", choices=("policy_samples", "optimized_actions", "importance_sampled"))
    # A fresh critic Adam when offline pre-training ends (the reference resets it for online training).
    reset_optimizer_online: bool = False

    def check(self) -> None:
        if self.sampled_members > self.members:
            raise self.error("sampled_members", f"({self.sampled_members}) must not exceed 'members' ({self.members})")
        if self.hl_gauss_bins > 0 and self.td_loss != "half_mse":
            raise self.error("td_loss", f"{self.td_loss!r} does not apply to the HL-Gauss critic (hl_gauss_bins > 0), "
                                        "which is trained with its cross-entropy loss")


@dataclass
class PolicyUpdateConfig(Section):
    """Stage II, how the policy learns online (`learner.policy_update`)."""

    # The rule (parl_robot/rl/policy_updates.py): "distill" (PA-RL: the policy's own supervised loss on
    # optimized actions); the baselines "reparameterized" (the Cal-QL actor: maximize Q - alpha log pi;
    # tanh-Gaussian only), "filtered_bc" (behaviour cloning on successful episodes) and "none" (the
    # offline policy, re-ranked by the online critic).
    rule: str = _field("distill", choices=("distill", "reparameterized", "filtered_bc", "none"))
    distill_lr: float = _field(5e-5, low=0.0, high=1.0)
    # Distillation targets: a sample from softmax(Q / temperature) over the candidates (the reference
    # implementation's default) or the argmax candidate.
    distill_selection: str = _field("softmax", choices=("argmax", "softmax"))
    # States distilled on: only states of successful episodes (demos and successful online episodes),
    # or every replay state as published. On the policy's own failed episodes a young critic's targets
    # teach it to defer the grasp: distilling every state took the study's PA-RL from 30 % to 7 %.
    distill_states: str = _field("successful", choices=("all", "successful"))
    # Behaviour-cloning steps on successful episodes after each policy update (parl_robot/rl/filtered_bc.py);
    # 0 = PA-RL as published. With gripper_from: policy, 1 step is the study's best setting.
    filtered_bc_steps: int = _field(0, low=0, high=100)
    # Steps where the operator intervened (teleop) are distillation targets as they were executed (no
    # critic-based optimization), this weight against an optimized target; 0 = not distilled (the
    # critic still learns from them: they are ordinary transitions in the replay buffer).
    intervention_weight: float = _field(1.0, low=0.0, high=100.0)
    # The distillation optimizer: "shared" = the policy's Adam (behaviour cloning's too) at distill_lr
    # from the first online step (this project); "fresh" = its own Adam, created at the first
    # distillation step (the reference). Either way the rate rises linearly from 0 to distill_lr over
    # `distill_warmup_steps` distillation steps (the reference: 2000; 0 = no warm-up).
    distill_optimizer: str = _field("shared", choices=("shared", "fresh"))
    distill_warmup_steps: int = _field(0, low=0, high=10_000_000)
    entropy_alpha: float = _field(0.01, low=0.0, high=10.0)  # rule reparameterized only
    # Rule reparameterized: tune the entropy weight (from 1) toward a target entropy of −action_dim
    # with its own Adam at `entropy_lr`, as the Cal-QL reference does, instead of a fixed entropy_alpha.
    entropy_autotune: bool = False
    entropy_lr: float = _field(1e-4, low=0.0, high=1.0)
    # The online rule's policy update also runs after every offline critic step (the Cal-QL reference
    # trains its actor offline with the critic); off: the offline policy is behaviour cloning only.
    pretrain_actor: bool = False


@dataclass
class ScheduleConfig(Section):
    """Offline pre-training, warm-up, the critic's catch-up and the online update budget
    (`learner.schedule`, run by parl_robot/rl/trainer.py)."""

    batch_size: int = _field(256, low=1, high=65536)
    offline_critic_steps: int = _field(300, low=0, high=10_000_000)
    offline_policy_steps: int = _field(600, low=0, high=10_000_000)
    updates_per_step: float = _field(2.0, low=0.0, high=1000.0)  # UTD: updates per executed online step
    warmup_episodes: int = _field(2, low=0, high=100_000)
    # Critic updates on demos + warm-up episodes when warm-up ends, before the first policy update: a
    # critic pre-trained on a few demos mis-ranks the policy's own samples (without it the study's
    # PA-RL reached 42 % instead of 80 % after 40 online episodes, 3 seeds).
    warmup_critic_steps: int = _field(1000, low=0, high=10_000_000)
    online_fraction: float = _field(0.5, low=0.0, high=1.0)  # of each batch, from the online buffer
    replay_capacity: int = _field(100_000, low=100, high=100_000_000)
    checkpoint_every_updates: int = _field(500, low=1, high=10_000_000)


@dataclass
class LearnerConfig(Section):
    """PA-RL + Cal-QL hyper-parameters; defaults from the paper's Appendix B unless noted."""

    policy: str = _field("diffusion", choices=("diffusion", "gaussian", "transformer", "openvla"))
    observation: str = _field("state", choices=("state", "image"))
    device: str = _field("cpu", choices=("cpu", "cuda", "auto"))
    # How action optimization and the updates are computed (the same rule on every path;
    # parl_robot/rl/control_step.py): "eager" (the autograd reference), "static" (analytic dQ/da for
    # all critic heads at once, static shapes, fused Adam: fewer operator calls, no compilation) or
    # "compiled" (the static computations through torch.compile; CUDA graphs on a GPU; the first call
    # per shape compiles, minutes on a CPU).
    compute_path: str = _field("static", choices=("eager", "static", "compiled"))
    # The loss passes of critic, BC and distillation updates: "float32", or "bfloat16" autocast (bf16
    # matrix products and convolutions, float32 losses, weights and optimizer state; for a GPU with
    # bf16 tensor cores). TD targets and action optimization always run in float32.
    update_precision: str = _field("float32", choices=("float32", "bfloat16"))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    policy_update: PolicyUpdateConfig = field(default_factory=PolicyUpdateConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # Policy.
    policy_lr: float = _field(3e-4, low=0.0, high=1.0)  # behaviour cloning (offline start, filtered BC)
    # Actions are sampled from an exponential moving average of the policy weights (as the PA-RL
    # reference's DDPM samples with its target parameters): distillation trains on the policy's own
    # samples, and without the lag that loop amplifies its own sampling errors. 0 = no average
    # (required for openvla: it would be a second 7B copy).
    policy_ema_rate: float = _field(0.005, low=0.0, high=1.0)
    policy_hidden: int = _field(256, low=8, high=8192)
    policy_blocks: int = _field(3, low=1, high=32)
    policy_dropout: float = _field(0.0, low=0.0, high=0.9)  # diffusion noise model (the reference: 0.1)
    diffusion_steps: int = _field(5, low=1, high=1000)
    transformer_layers: int = _field(4, low=1, high=48)
    transformer_heads: int = _field(8, low=1, high=64)
    action_bins: int = _field(128, low=2, high=4096)
    # OpenVLA (policy: openvla; needs observation: image and the `openvla` extra).
    openvla_path: str = ""  # local directory: config.json, *.safetensors, tokenizer.json, dataset_statistics.json
    openvla_unnorm_key: str = "bridge_orig"
    openvla_dtype: str = _field("bfloat16", choices=("bfloat16", "float16", "float32"))
    openvla_temperature: float = _field(1.0, low=0.0, high=100.0)  # 0 = greedy
    # Sequences decoded at once when sampling (acting, training targets, cache rebuilds): a 7B model's
    # KV cache takes ~150 MiB per sequence, so 64 rows ~ 10 GiB. Larger batches are decoded in parts.
    openvla_max_decode_rows: int = _field(64, low=1, high=65536)
    lora_rank: int = _field(32, low=0, high=1024)  # 0 = train every weight
    lora_alpha: float = _field(16.0, low=0.0, high=1e4)
    lora_dropout: float = _field(0.0, low=0.0, high=1.0)
    lora_target_modules: str = "all-linear"  # or comma-separated suffixes, e.g. "q_proj,v_proj"
    load_in_4bit: bool = False
    # Recompute the transformer blocks' activations in the backward pass of a LoRA step instead of
    # keeping them (OpenVLAModel.enable_gradient_checkpointing): the step's activation memory falls
    # to one tensor per block, for one more forward pass.
    openvla_gradient_checkpointing: bool = True
    action_cache_size: int = _field(0, low=0, high=4096)  # cached policy samples per state; 0 = sample live
    # The actor does not act on object poses / images older than this (a lost camera pauses control).
    max_observation_age_s: float = _field(0.5, low=0.05, high=10.0)
    # Learner stats as TensorBoard scalars in <store_dir>/tensorboard (parl_robot/rl/scalar_log.py),
    # when the `tensorboard` package is installed.
    tensorboard: bool = True
    seed: int = 0

    def check(self) -> None:
        if self.policy == "openvla" and self.observation != "image":
            raise self.error("policy", "openvla reads camera images; set 'observation' to image")
        if self.policy == "openvla" and self.policy_ema_rate > 0:
            raise self.error("policy_ema_rate", "must be 0 for openvla (an averaged copy of 7B weights does not fit "
                                                "beside them); config/profiles/openvla.yaml sets it")
        if self.action_cache_size and self.action_cache_size < self.optimizer.num_samples:
            raise self.error("action_cache_size", f"({self.action_cache_size}) must be 0 or at least "
                                                  f"'optimizer.num_samples' ({self.optimizer.num_samples}), the "
                                                  "samples the optimizer draws from it")
        if self.critic.cql_term == "importance_sampled" and self.policy != "gaussian":
            raise self.error("critic.cql_term", "importance_sampled needs the policy's log-densities: the gaussian "
                                                f"policy, not {self.policy!r}")
        if self.policy_update.pretrain_actor and self.policy_update.rule != "reparameterized":
            raise self.error("policy_update.pretrain_actor", f"trains the reparameterized actor offline (Cal-QL); rule "
                                                            f"{self.policy_update.rule!r} has no such actor")
        if self.policy_update.entropy_autotune and self.policy_update.rule != "reparameterized":
            raise self.error("policy_update.entropy_autotune", f"tunes the reparameterized actor's entropy weight; rule "
                                                               f"{self.policy_update.rule!r} has none")
        if self.policy_dropout > 0 and self.policy != "diffusion":
            raise self.error("policy_dropout", f"applies to the diffusion policy's noise model, not {self.policy!r}")
        if self.policy_update.rule == "reparameterized" and self.policy != "gaussian":
            raise self.error("policy_update.rule", f"reparameterized needs the gaussian policy (its "
                                                   f"reparameterized samples), not {self.policy!r}")


# Learner keys from before the nested sections, and where they live now. A file or override that
# still uses one is migrated with a warning naming the new key.
FLAT_LEARNER_KEYS = {
    **{key: f"optimizer.{key}" for key in ("num_samples", "num_kept", "local_steps", "include_dataset_action", "selection",
                                           "softmax_temperature", "q_ensemble", "gripper_from")},
    "local_step_size": "optimizer.step_size",
    "critic": "critic.kind",
    **{key: f"critic.{key}" for key in ("discount", "cql_alpha", "cql_num_actions", "cql_temperature", "iql_expectile",
                                        "target_update_rate", "hl_gauss_bins")},
    "critic_hidden": "critic.hidden", "critic_layers": "critic.layers", "critic_lr": "critic.lr",
    "policy_update": "policy_update.rule",
    **{key: f"policy_update.{key}" for key in ("distill_lr", "distill_selection", "distill_states", "filtered_bc_steps",
                                               "entropy_alpha")},
    **{key: f"schedule.{key}" for key in ("batch_size", "offline_critic_steps", "offline_policy_steps", "updates_per_step",
                                          "warmup_episodes", "warmup_critic_steps", "online_fraction", "replay_capacity",
                                          "checkpoint_every_updates")},
}


@dataclass
class EpisodeConfig(Section):
    num_demos: int = _field(10, low=0, high=100_000)
    num_online_episodes: int = _field(12, low=0, high=1_000_000)
    auto_reset: bool = True  # sim: reset without an operator
    auto_label: bool = True  # use the detector's success label without waiting for the operator
    store_dir: str = "runs/cup_to_rack"
    # Store the camera frame of every step even when the policy reads states only (the frames a
    # success classifier is trained on; image observations store them anyway).
    record_frames: bool = False


@dataclass
class TeleopConfig(Section):
    """Operator take-over: `sensor_msgs/Joy` mapping (SpaceMouse / joystick) and stream timeouts."""

    # Joy axis index for each of dx, dy, dz, droll, dpitch, dyaw (-1: unused), and a scale (sign) each.
    joy_axes: list = _field([0, 1, 2, 3, 4, 5], length=6)
    joy_axis_scale: list = _field([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], length=6)
    deadband: float = _field(0.1, low=0.0, high=0.9)
    gripper_button: int = _field(0, low=-1, high=64)  # a press toggles open/closed
    takeover_button: int = _field(1, low=-1, high=64)  # a press toggles the intervention
    # Operator actions older than this are not executed (the arm holds); after this plus the
    # watchdog period without teleop input, control goes back to the policy.
    stream_timeout_s: float = _field(0.5, low=0.05, high=10.0)


@dataclass
class UIConfig(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = _field(8080, low=1, high=65535)
    token: str = ""


@dataclass
class PerceptionConfig(Section):
    """How the hardware graph knows where the task object is (the sim publishes ground truth)."""

    # "colour": largest blob in an HSV range; "aruco": an ArUco marker stuck on top of the object.
    detector: str = _field("colour", choices=("colour", "aruco"))
    # Camera model from `parl-robot calibrate`: intrinsics + robot->camera pose of the published images.
    calibration_file: str = "calibration/camera.yaml"
    # HSV (OpenCV: H 0-179, S and V 0-255) range of the task object's colour.
    object_hsv_low: list = _field([95, 120, 50], length=3)
    object_hsv_high: list = _field([125, 255, 255], length=3)
    # Height above the table of the plane the blob's centroid is mapped onto (about the object's centre).
    object_plane_height_m: float = _field(0.04, low=0.0, high=0.5)
    min_blob_area_px: int = _field(15, low=1, high=1_000_000)
    object_marker_id: int = _field(0, low=0, high=999)
    aruco_dictionary: str = _field("DICT_4X4_50", choices=("DICT_4X4_50", "DICT_5X5_100", "DICT_6X6_250", "DICT_ARUCO_ORIGINAL"))

    def check(self) -> None:
        _check_order(self, "object_hsv_low", "object_hsv_high")


@dataclass
class TaskConfig(Section):
    task: TaskInfo = field(default_factory=TaskInfo)
    control: ControlConfig = field(default_factory=ControlConfig)
    teleop: TeleopConfig = field(default_factory=TeleopConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Short stable hash stored with every episode, to tell which setup produced it."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """A section from a mapping: unknown keys refused, nested sections built, then the section's
    own checks, with errors naming the full key path and `source`."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    if cls is LearnerConfig:
        data = _migrate_flat_learner_keys(data, prefix, source)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            raise ConfigError(f"{source}: unknown key '{dotted}' (known: {', '.join(sorted(known))})")
        kwargs[key] = _build(hints[key], value, dotted, source) if dataclasses.is_dataclass(hints[key]) else value
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.key is None:  # already names its key path and source
            raise
        dotted = f"{prefix}.{err.key}" if prefix else err.key
        raise ConfigError(f"{source}: '{dotted}' {err.detail}", key=None) from None


def _migrate_flat_learner_keys(data: dict, prefix: str, source: str) -> dict:
    """Old flat learner keys (`learner.num_samples`) moved into their sections (`learner.optimizer.num_samples`),
    with a warning naming the new key; both forms at once is an error."""
    migrated = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items()}
    for key, value in data.items():
        if key not in FLAT_LEARNER_KEYS or isinstance(value, dict):  # `critic: {...}` is the section itself
            continue
        section, name = FLAT_LEARNER_KEYS[key].split(".")
        old, new = f"{prefix}.{key}" if prefix else key, f"{prefix}.{section}.{name}" if prefix else f"{section}.{name}"
        target = migrated.get(section) if isinstance(migrated.get(section), dict) else {}
        if name in target:
            raise ConfigError(f"{source}: '{old}' and '{new}' both set; '{old}' is the old name of '{new}': keep only '{new}'")
        LOG.warning(f"{source}: '{old}' is now '{new}'; migrated (rename it there)")
        del migrated[key]
        migrated[section] = {**target, name: value}
    return migrated


def _migrate_layer(data: dict, source: str) -> dict:
    """One task file, overlay or override set with its old learner keys migrated (before merging, so
    that a later layer's old key still overrides an earlier layer's new one)."""
    learner = data.get("learner")
    if not isinstance(learner, dict):
        return data
    return {**data, "learner": _migrate_flat_learner_keys(learner, "learner", source)}


def _migrate_dotted(overrides: dict, source: str) -> dict:
    """Dotted overrides with old learner keys (`learner.num_samples`) renamed, as `_migrate_layer` does."""
    migrated = {}
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        if section == "learner" and key in FLAT_LEARNER_KEYS and not isinstance(value, dict):
            new = f"learner.{FLAT_LEARNER_KEYS[key]}"
            if new in overrides:
                raise ConfigError(f"{source}: '{dotted}' and '{new}' both set; '{dotted}' is the old name of '{new}': "
                                  f"keep only '{new}'")
            LOG.warning(f"{source}: '{dotted}' is now '{new}'; migrated (rename it there)")
            dotted = new
        migrated[dotted] = value
    return migrated


def config_from_dict(data: dict, source: str = "<dict>") -> TaskConfig:
    return _build(TaskConfig, data, "", source)


def _set_dotted(data: dict, overrides: dict, source: str) -> None:
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: override '{dotted}' goes through a non-mapping value")
        node[parts[-1]] = value


def with_overrides(section, overrides) -> Any:
    """A copy of a config section (TaskConfig, LearnerConfig, ...) with dotted overrides relative to
    it (`{"optimizer.num_samples": 8}`, or any form `parse_overrides` reads), checked like file values."""
    data = dataclasses.asdict(section)
    _set_dotted(data, parse_overrides(overrides), "overrides")
    return _build(type(section), data, "", "overrides")


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
    and the study (`--set`) all accept: a JSON object (`{"learner.critic.cql_alpha": 1.0}`, or such a dict),
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
            raise ConfigError(f"override '{item}' is not key=value (e.g. learner.critic.cql_alpha=1.0)")
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
    data = _migrate_layer(_read_yaml(path), str(path))
    sources = [str(path)]
    for overlay in overlays or []:
        overlay_path = Path(overlay)
        if not overlay_path.is_file():
            for directory in config_search_dirs():
                if (directory / "profiles" / f"{overlay}.yaml").is_file():
                    overlay_path = directory / "profiles" / f"{overlay}.yaml"
                    break
        merged = _deep_merge(data, _migrate_layer(_read_yaml(overlay_path), str(overlay_path)))
        config_from_dict(merged, str(overlay_path))  # errors name the overlay that brought the key
        data = merged
        sources.append(str(overlay_path))
    if task is not None and data.get("task", {}).get("name", task) != task:
        raise ConfigError(f"{path}: task.name is '{data['task']['name']}' but task '{task}' was requested")
    _set_dotted(data, _migrate_dotted(overrides, "overrides"), str(path))
    return config_from_dict(data, " + ".join(sources) + (" + overrides" if overrides else ""))
