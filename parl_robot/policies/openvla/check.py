"""`parl-robot openvla check DIR`: verify a downloaded OpenVLA checkpoint directory before the robot moves.

    parl-robot openvla check DIR [unnorm_key:=bridge_orig] [task:=cup_to_rack] [instruction:=TEXT]

Reads headers and small files only (no weights are loaded, so it runs in seconds on any machine):
- config.json maps onto the supported architecture (the values it implies are printed);
- every tensor name and shape in the safetensors shards against the model: missing, unexpected and
  shape-differing tensors are listed one per line; the released entries the model does not use (last
  ViT blocks, final norms, SigLIP's attention pool) are counted; the shard index names existing files;
- the un-normalization statistics for `unnorm_key` (default: the openvla profile's) exist and have 7 dims;
- preprocessor_config.json, when present, normalizes and resizes as the policy does;
- the prompt for the task's instruction is tokenized and its ids printed.
Exit status 1 when something would stop the policy or silently change what it computes, else 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from parl_robot.policies.openvla.action_tokens import BASE_VOCAB_SIZE, NUM_ACTION_BINS
from parl_robot.policies.openvla.model import (
    LLAMA_CONFIG_DEFAULTS,
    OpenVLAArchitecture,
    checkpoint_shapes,
    compare_keys,
    model_shapes,
    read_config,
    weight_shards,
)
from parl_robot.policies.openvla.vision import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD, unused_checkpoint_prefixes

USAGE = "usage: parl-robot openvla check DIR [unnorm_key:=KEY] [task:=NAME] [instruction:=TEXT]"
ACTION_DIM = 7


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def info(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, message: str) -> None:
        self.problems.append(message)
        self.lines.append(f"  PROBLEM: {message}")

    def warning(self, message: str) -> None:
        self.warnings.append(message)
        self.lines.append(f"  warning: {message}")


def check_checkpoint(path: Path, unnorm_key: str, instruction: str) -> CheckReport:
    report = CheckReport()
    report.info(f"OpenVLA checkpoint {path}")
    if not path.is_dir():
        report.problem(f"{path} is not a directory")
        return report
    architecture = _check_config(path, report)
    if architecture is not None:
        _check_weights(path, architecture, report)
    _check_statistics(path, unnorm_key, report)
    _check_processor(path, architecture, report)
    _check_prompt(path, instruction, architecture, report)
    return report


def _check_config(path: Path, report: CheckReport) -> OpenVLAArchitecture | None:
    try:
        config = read_config(path)
        architecture = OpenVLAArchitecture.from_config_json(config)
    except (FileNotFoundError, ValueError, TypeError, KeyError) as error:
        report.problem(f"config.json: {error}")
        return None
    llama, dino, siglip = architecture.llama, architecture.dino, architecture.siglip
    stated = "rms_norm_eps" in (config.get("text_config") or {})
    report.info(f"config.json: {config.get('vision_backbone_id')}: DINOv2 ViT width {dino.width} x {dino.depth} blocks + "
                f"SigLIP ViT width {siglip.width} x {siglip.depth} blocks at {architecture.image_size} px; Llama "
                f"{llama['num_hidden_layers']} layers x {llama['hidden_size']}, vocab {llama['vocab_size']}, pad id "
                f"{architecture.pad_token_id}, rms_norm_eps {llama['rms_norm_eps']:g}"
                f"{'' if stated else ' (LlamaConfig default, as released)'}")
    if llama["rms_norm_eps"] != LLAMA_CONFIG_DEFAULTS["rms_norm_eps"]:
        report.warning(f"text_config.rms_norm_eps {llama['rms_norm_eps']:g} differs from the release's "
                       f"{LLAMA_CONFIG_DEFAULTS['rms_norm_eps']:g}; the model uses the stated value")
    return architecture


def _check_weights(path: Path, architecture: OpenVLAArchitecture, report: CheckReport) -> None:
    from safetensors import SafetensorError

    try:
        shards = weight_shards(path)
        found = checkpoint_shapes(shards)
    except (OSError, SafetensorError) as error:
        report.problem(f"weights: {error}")
        return
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        try:
            weight_map = json.loads(index_file.read_text()).get("weight_map", {})
        except json.JSONDecodeError as error:
            report.problem(f"{index_file.name} is not valid JSON: {error}")
            weight_map = {}
        for filename in sorted(set(weight_map.values()) - {shard.name for shard in shards}):
            report.problem(f"{index_file.name} names {filename}, which is not in the directory (incomplete download?)")
    keys = compare_keys(model_shapes(architecture), found, unused_checkpoint_prefixes(architecture.dino, architecture.siglip))
    report.info(f"weights: {len(shards)} shard(s); {keys.matched} tensors match the model; {keys.skipped} released "
                "entries the model does not use (last ViT blocks, final norms, SigLIP attention pool) skipped")
    for name, shape in keys.missing:
        report.problem(f"missing tensor {name} (the model's shape {shape})")
    for name, shape in keys.unexpected:
        report.problem(f"unexpected tensor {name} {shape}")
    for name, found_shape, model_shape in keys.reshaped:
        report.problem(f"shape differs: {name} is {found_shape} in the checkpoint, {model_shape} in the model")


def _check_statistics(path: Path, unnorm_key: str, report: CheckReport) -> None:
    from parl_robot.policies.openvla.build import action_statistics

    source = "dataset_statistics.json" if (path / "dataset_statistics.json").is_file() else "config.json norm_stats"
    try:
        statistics = action_statistics(path, unnorm_key)
    except KeyError as error:
        report.problem(f"statistics ({source}): {error.args[0]}")
        return
    except (FileNotFoundError, ValueError) as error:
        report.problem(f"statistics: {error}")
        return
    rounded = lambda values: [round(value, 5) for value in values]  # noqa: E731
    report.info(f"statistics {unnorm_key!r} ({source}): q01 {rounded(statistics.q01)}, q99 {rounded(statistics.q99)}, "
                f"mask {list(statistics.mask)}")
    if len(statistics.q01) != ACTION_DIM:
        report.problem(f"statistics {unnorm_key!r} have {len(statistics.q01)} action dims; the policy acts in {ACTION_DIM}")
    inverted = [dim for dim, (low, high, used) in enumerate(zip(statistics.q01, statistics.q99, statistics.mask))
                if used and low > high]
    if inverted:
        report.problem(f"statistics {unnorm_key!r}: q01 > q99 in dims {inverted}")


def _check_processor(path: Path, architecture: OpenVLAArchitecture | None, report: CheckReport) -> None:
    processor_file = path / "preprocessor_config.json"
    if not processor_file.is_file():
        report.info("processor: no preprocessor_config.json; the policy resizes and normalizes as the release does")
        return
    try:
        processor = json.loads(processor_file.read_text())
    except json.JSONDecodeError as error:
        report.problem(f"{processor_file.name} is not valid JSON: {error}")
        return
    expected = {"means": [list(DINO_MEAN), list(SIGLIP_MEAN)], "stds": [list(DINO_STD), list(SIGLIP_STD)],
                "image_resize_strategy": "resize-naive", "interpolations": ["bicubic", "bicubic"]}
    if architecture is not None:
        expected["input_sizes"] = [[3, shape.image_size, shape.image_size] for shape in (architecture.dino, architecture.siglip)]
    differing = [key for key, value in expected.items() if not _close(processor.get(key), value)]
    for key in differing:
        report.problem(f"{processor_file.name} {key} {processor.get(key)} differs from the policy's {expected[key]}")
    if not differing:
        report.info(f"processor: {processor_file.name} resizes and normalizes as the policy does "
                    "(resize-naive, bicubic; DINOv2 mean/std = ImageNet's in bfloat16, SigLIP 0.5 / 0.5)")


def _close(value, expected, tolerance: float = 1e-6) -> bool:
    if isinstance(expected, list):
        return isinstance(value, list) and len(value) == len(expected) and all(map(_close, value, expected))
    if isinstance(expected, float):
        return isinstance(value, (int, float)) and abs(value - expected) <= tolerance
    return value == expected


def _check_prompt(path: Path, instruction: str, architecture: OpenVLAArchitecture | None, report: CheckReport) -> None:
    from parl_robot.policies.openvla.policy import PROMPT, load_prompt_tokenizer, prompt_token_ids

    try:
        tokenizer = load_prompt_tokenizer(path)
    except (FileNotFoundError, OSError, ValueError) as error:
        report.problem(f"tokenizer: {error}")
        return
    prompt = PROMPT.format(instruction=instruction.lower())
    ids = prompt_token_ids(tokenizer, instruction)
    report.info(f"prompt: {prompt!r} + '▁'")
    report.info(f"prompt ids ({len(ids)}): {ids}")
    if tokenizer.bos_token_id != 1:
        report.problem(f"tokenizer BOS id is {tokenizer.bos_token_id}, Llama's (and OpenVLA's) is 1")
    vocab_size = architecture.llama["vocab_size"] if architecture is not None else None
    if vocab_size is not None and any(not 0 <= token < vocab_size for token in ids):
        report.problem(f"prompt ids outside the model's vocabulary of {vocab_size}")
    first_action_id = BASE_VOCAB_SIZE - NUM_ACTION_BINS
    if any(first_action_id <= token < BASE_VOCAB_SIZE for token in ids):
        report.warning(f"the prompt holds ids in the action-token range {first_action_id}..{BASE_VOCAB_SIZE - 1}")
    decoded = tokenizer.decode(ids[1:-1] if len(ids) > 2 else ids)
    if decoded != prompt:
        report.warning(f"the prompt ids decode to {decoded!r}, not the prompt; check the tokenizer files")


def main(argv: list[str], parse_assignments) -> int:
    if any(item in ("-h", "--help", "help") for item in argv):
        print(__doc__)
        return 0
    if len(argv) < 2 or argv[0] != "check" or ":=" in argv[1]:
        raise ValueError(USAGE)
    args = parse_assignments(argv[2:])
    unknown = sorted(set(args) - {"unnorm_key", "task", "instruction"})
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; {USAGE}")
    from parl_robot.config import load_config

    cfg = load_config(task=args.get("task", "cup_to_rack"), overlays=["openvla"])
    report = check_checkpoint(Path(argv[1]).expanduser(), args.get("unnorm_key", cfg.learner.openvla_unnorm_key),
                              args.get("instruction", cfg.task.instruction))
    print("\n".join(report.lines))
    if report.problems:
        print(f"FAILED: {len(report.problems)} problem(s), {len(report.warnings)} warning(s)")
        return 1
    print(f"OK: no problems, {len(report.warnings)} warning(s)")
    return 0
