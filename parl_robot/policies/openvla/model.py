"""OpenVLA's model: fused ViT backbone -> 3-layer GELU projector -> Llama-2, patches after BOS.

It reads the released checkpoint directory as it is: `config.json` in OpenVLA's layout (OpenVLAConfig
of the release's remote code) and safetensors shards whose names match this model's state dict
(`vision_backbone.*`, `projector.fc1/fc2/fc3`, `language_model.*`). The language model is
transformers' `LlamaForCausalLM`; nothing here needs OpenVLA's remote code or timm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from parl_robot.policies.openvla.vision import (
    DINOV2_VIT_L14_REG4,
    SIGLIP_SO400M_14,
    FusedVisionBackbone,
    ViTShape,
    unused_checkpoint_prefixes,
)

RELEASED_VISION_BACKBONE = "dinosiglip-vit-so-224px"
RELEASED_TIMM_MODELS = {"vit_large_patch14_reg4_dinov2.lvd142m": DINOV2_VIT_L14_REG4,
                        "vit_so400m_patch14_siglip_224": SIGLIP_SO400M_14}
# Test checkpoints only: ViT sizes other than the released timm models' ({"dino": {...}, "siglip": {...}}).
VISION_SHAPES_KEY = "parl_robot_vision_shapes"

# The Llama settings config.json's `text_config` does not state. The release's remote code builds its
# language model from `LlamaConfig(**text_config)`, and the released text_config holds only vocab_size,
# pad_token_id, torch_dtype and model_type, so everything else is LlamaConfig's default: the Llama-2-7B
# shapes and rms_norm_eps 1e-6 (transformers 4.40.1, which the release pins; still the default in 5.x).
# Llama-2 itself was pre-trained with 1e-5, and Prismatic's training loaded Llama-2's own config with it,
# but the released checkpoint computes with 1e-6, and so do OpenVLA's LoRA fine-tuning (finetune.py) and
# every evaluation through the HF model. We reproduce the release; a checkpoint that states
# `text_config.rms_norm_eps` (e.g. 1e-5) gets that value, here as with the remote code.
LLAMA_CONFIG_DEFAULTS = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6,
                             vocab_size=32000)
LLAMA_OPTIONAL_KEYS = ("num_key_value_heads",)  # LlamaConfig default: num_attention_heads


@dataclass(frozen=True)
class OpenVLAArchitecture:
    dino: ViTShape = DINOV2_VIT_L14_REG4
    siglip: ViTShape = SIGLIP_SO400M_14
    llama: dict = field(default_factory=lambda: dict(LLAMA_CONFIG_DEFAULTS, vocab_size=32064))
    pad_token_id: int = 32000

    @classmethod
    def openvla_7b(cls) -> "OpenVLAArchitecture":
        return cls()

    @classmethod
    def tiny(cls) -> "OpenVLAArchitecture":
        """Same classes and token scheme (vocab 32064), random-weight sizes for CPU tests."""
        # Widths are multiples of 64, the NF4 block size (bitsandbytes' CPU kernel needs whole blocks).
        dino = ViTShape(64, 3, 2, 128, class_token=True, register_tokens=4, layer_scale=True, patch_size=14, image_size=56)
        siglip = ViTShape(64, 3, 2, 128, class_token=False, register_tokens=0, layer_scale=False, patch_size=14, image_size=56)
        llama = dict(LLAMA_CONFIG_DEFAULTS, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=512, vocab_size=32064)
        return cls(dino, siglip, llama)

    @property
    def image_size(self) -> int:
        return self.dino.image_size

    @classmethod
    def from_config_json(cls, config: dict) -> "OpenVLAArchitecture":
        """From OpenVLA's config.json (the release's layout); see LLAMA_CONFIG_DEFAULTS for absent Llama keys."""
        backbone = config.get("vision_backbone_id")
        if backbone != RELEASED_VISION_BACKBONE or not config.get("use_fused_vision_backbone", True):
            raise ValueError(f"config.json vision_backbone_id {backbone!r}: only OpenVLA's fused "
                             f"{RELEASED_VISION_BACKBONE!r} backbone is supported")
        activations = config.get("timm_override_act_layers", [None, None])
        if any(activation is not None for activation in activations):
            raise ValueError(f"config.json timm_override_act_layers {activations}: only timm's default GELU "
                             "(null, as released) is supported")
        dino, siglip = cls._vision_shapes(config)
        text = config.get("text_config") or {}
        llama = {key: text.get(key, value) for key, value in LLAMA_CONFIG_DEFAULTS.items()}
        llama.update({key: text[key] for key in LLAMA_OPTIONAL_KEYS if key in text})
        multiple = int(config.get("pad_to_multiple_of", 64))
        pad_id = int(config.get("pad_token_id", 32000))
        # Prismatic adds <PAD> (id 32000) to Llama's 32000 tokens, then pads the embedding to a multiple of 64.
        llama["vocab_size"] = -(-max(int(llama["vocab_size"]), pad_id + 1) // multiple) * multiple  # -> 32064
        return cls(dino, siglip, llama, pad_id)

    @staticmethod
    def _vision_shapes(config: dict) -> tuple[ViTShape, ViTShape]:
        if VISION_SHAPES_KEY in config:
            return ViTShape(**config[VISION_SHAPES_KEY]["dino"]), ViTShape(**config[VISION_SHAPES_KEY]["siglip"])
        timm_ids = config.get("timm_model_ids", list(RELEASED_TIMM_MODELS))
        unknown = [timm_id for timm_id in timm_ids if timm_id not in RELEASED_TIMM_MODELS]
        if unknown or len(timm_ids) != 2:
            raise ValueError(f"config.json timm_model_ids {timm_ids}: expected {list(RELEASED_TIMM_MODELS)}")
        sizes = config.get("image_sizes", [224, 224])
        return tuple(replace(RELEASED_TIMM_MODELS[timm_id], image_size=int(size)) for timm_id, size in zip(timm_ids, sizes))


class Projector(nn.Module):
    """OpenVLA's fused-GELU MLP projector: D -> 4D -> llm -> llm."""

    def __init__(self, vision_dim: int, llm_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, 4 * vision_dim)
        self.fc2 = nn.Linear(4 * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)
        self.act = nn.GELU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(patches)))))


class OpenVLAModel(nn.Module):
    def __init__(self, architecture: OpenVLAArchitecture):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.architecture = architecture
        self.vision_backbone = FusedVisionBackbone(architecture.dino, architecture.siglip)
        llama_config = LlamaConfig(**architecture.llama, pad_token_id=architecture.pad_token_id,
                                   bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        self.projector = Projector(self.vision_backbone.embed_dim, llama_config.hidden_size)
        self.language_model = LlamaForCausalLM(llama_config)

    def input_embeddings(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[BOS, image patches, rest of the prompt (and action tokens)] as embeddings."""
        pixel_dtype = self.vision_backbone.featurizer.patch_embed.proj.weight.dtype  # never quantized
        patches = self.projector(self.vision_backbone(pixel_values.to(pixel_dtype)))
        tokens = self.language_model.get_input_embeddings()(input_ids)
        return torch.cat([tokens[:, :1], patches.to(tokens.dtype), tokens[:, 1:]], dim=1)

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Keep only each transformer block's input for the backward pass and recompute the rest (the
        Llama layers and both ViTs; training mode only): activation memory of a LoRA step falls from
        every block's intermediates to one tensor per block, for one more forward pass. `enabled`
        False turns it off again."""
        if enabled:
            self.language_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.language_model.activation_checkpointing_disable()
        self.vision_backbone.featurizer.gradient_checkpointing = enabled
        self.vision_backbone.fused_featurizer.gradient_checkpointing = enabled

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, logits_to_keep: int = 0, **kwargs):
        embeddings = self.input_embeddings(pixel_values, input_ids)
        return self.language_model(inputs_embeds=embeddings, logits_to_keep=logits_to_keep, **kwargs)


def read_config(path: Path) -> dict:
    if not path.is_dir():
        raise FileNotFoundError(
            f"OpenVLA weights not found: {path} is not a directory. Download openvla/openvla-7b (config.json, "
            "*.safetensors, tokenizer files, dataset_statistics.json) to a local directory and set "
            "learner.openvla_path to it; nothing is fetched at run time."
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} is missing (expected OpenVLA's config.json)")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_file} is not valid JSON: {error}") from None


def weight_shards(path: Path) -> list[Path]:
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    return shards


def checkpoint_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors headers (no tensor data is read)."""
    from safetensors import safe_open

    shapes = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def model_shapes(architecture: OpenVLAArchitecture) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = OpenVLAModel(architecture)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


@dataclass
class KeyReport:
    """A checkpoint's tensors against the model's state dict (released entries the model skips aside)."""

    matched: int
    missing: list[tuple[str, tuple[int, ...]]]  # (name, model shape)
    unexpected: list[tuple[str, tuple[int, ...]]]  # (name, checkpoint shape)
    reshaped: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (name, checkpoint shape, model shape)
    skipped: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.reshaped)

    def summary(self, limit: int = 8) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected), ("shape differs", self.reshaped)):
            if items:
                names = [item[0] for item in items[:limit]]
                parts.append(f"{label} {names}{' ...' if len(items) > limit else ''} ({len(items)})")
        return "; ".join(parts) or f"{self.matched} tensors match"


def compare_keys(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]],
                 skip: tuple[str, ...]) -> KeyReport:
    used = {name: shape for name, shape in found.items() if not name.startswith(skip)}
    common = sorted(set(expected) & set(used))
    reshaped = [(name, used[name], expected[name]) for name in common if used[name] != expected[name]]
    return KeyReport(matched=len(common) - len(reshaped),
                     missing=[(name, expected[name]) for name in sorted(set(expected) - set(used))],
                     unexpected=[(name, used[name]) for name in sorted(set(used) - set(expected))],
                     reshaped=reshaped, skipped=len(found) - len(used))


def load_openvla_weights(path: str | Path, dtype: torch.dtype = torch.bfloat16) -> OpenVLAModel:
    """Build the model without allocating random weights and assign the checkpoint's tensors."""
    from safetensors import safe_open

    path = Path(path)
    architecture = OpenVLAArchitecture.from_config_json(read_config(path))
    shards = weight_shards(path)
    with torch.device("meta"):
        model = OpenVLAModel(architecture)
    skip = unused_checkpoint_prefixes(architecture.dino, architecture.siglip)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    report = compare_keys(expected, checkpoint_shapes(shards), skip)
    if not report.ok:
        raise ValueError(f"{path}: checkpoint does not match the OpenVLA architecture: {report.summary()} "
                         f"(`parl-robot openvla check {path}` lists every difference)")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as handle:
            for name in handle.keys():
                if not name.startswith(skip):
                    tensor = handle.get_tensor(name)
                    state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    model.load_state_dict(state, assign=True)
    rebuild_rotary_embedding(model)
    return model.eval()


def rebuild_rotary_embedding(model: OpenVLAModel, device: torch.device | str = "cpu") -> None:
    """Llama's rotary buffers are computed, not stored: rebuild them after building on the meta device."""
    rotary = model.language_model.model.rotary_emb
    model.language_model.model.rotary_emb = type(rotary)(rotary.config).to(device)
