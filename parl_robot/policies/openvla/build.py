"""Build the OpenVLA policy from a local checkpoint directory and the learner config."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from parl_robot.config import LearnerConfig
from parl_robot.policies.openvla.action_tokens import ActionSpaceMap, ActionStatistics
from parl_robot.policies.openvla.lora import apply_lora, quantize_4bit
from parl_robot.policies.openvla.model import load_openvla_weights
from parl_robot.policies.openvla.policy import OpenVLAPolicy, load_prompt_tokenizer, prompt_token_ids

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# learner.compute_path -> how the 7 action tokens are decoded (policy.py, static_decode.py)
DECODING_FOR_COMPUTE_PATH = {"eager": "dynamic", "static": "static", "compiled": "compiled"}


def action_statistics(path: Path, key: str) -> ActionStatistics:
    """`dataset_statistics.json` beside the weights, else config.json's `norm_stats` (released model)."""
    statistics_file = path / "dataset_statistics.json"
    if statistics_file.is_file():
        return ActionStatistics.from_dataset_statistics(statistics_file, key)
    config = json.loads((path / "config.json").read_text())
    if "norm_stats" in config:
        return ActionStatistics.from_dataset_statistics(config["norm_stats"], key)
    raise FileNotFoundError(f"{path}: no dataset_statistics.json and no norm_stats in config.json to un-normalize actions")


def build_openvla_policy(
    cfg: LearnerConfig, instruction: str, action_scale, device: torch.device | str | None = None
) -> OpenVLAPolicy:
    if not cfg.openvla_path:
        raise ValueError("learner.policy 'openvla' needs learner.openvla_path (a local directory with the weights)")
    path = Path(cfg.openvla_path).expanduser()
    model = load_openvla_weights(path, DTYPES[cfg.openvla_dtype])  # clear error when the path is missing
    statistics = action_statistics(path, cfg.openvla_unnorm_key)
    tokenizer = load_prompt_tokenizer(path)
    if device is None:
        device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    device = torch.device(device)
    if cfg.load_in_4bit:  # NF4 on CUDA; bitsandbytes >= 0.45 also runs it (slowly) on CPU
        model = quantize_4bit(model, DTYPES[cfg.openvla_dtype], str(device))
    if cfg.openvla_gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if cfg.lora_rank > 0:
        model = apply_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    policy = OpenVLAPolicy(model, prompt_token_ids(tokenizer, instruction), ActionSpaceMap(statistics, action_scale),
                           cfg.openvla_temperature, decoding=DECODING_FOR_COMPUTE_PATH[cfg.compute_path],
                           max_decode_rows=cfg.openvla_max_decode_rows)
    return policy.to(device)
