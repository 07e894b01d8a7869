"""A tiny random-weight OpenVLA checkpoint directory written the way the release is, so the whole
OpenVLA path (load, sample, optimize, distil, cache rebuild, checkpoint) runs on a CPU and a drift
from the release's naming or layout fails the tests:

- `config.json` in OpenVLAConfig's layout (the release's fields; `text_config` with the tiny Llama sizes
  and, as released, no rms_norm_eps), plus the ViT sizes under `parl_robot_vision_shapes` — the one
  field the release does not have, since its sizes follow from `timm_model_ids`;
- sharded safetensors with an index, in bfloat16, holding *every* tensor the release holds, named from
  the conventions below rather than from this project's modules: timm 0.9 ViT names with LayerScale
  renamed `scale_factor`, the last ViT blocks, final norms and SigLIP's attention pool included;
  projector `fc1..fc3`; transformers' Llama names under `language_model.`;
- `preprocessor_config.json` with the released normalization, `dataset_statistics.json`, and a
  character-level fast tokenizer with Llama's special ids.

Weights come from numpy's legacy RandomState (its stream is frozen by numpy's policy), one key at a time
in sorted order, so the directory, and the saved expected outputs of the tests, do not change with torch
or transformers releases.

    python -m parl_robot.policies.openvla.tiny runs/tiny_openvla
"""

from __future__ import annotations

import json
import string
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from parl_robot.policies.openvla.action_tokens import BRIDGE_ORIG
from parl_robot.policies.openvla.model import LLAMA_CONFIG_DEFAULTS, VISION_SHAPES_KEY, OpenVLAArchitecture
from parl_robot.policies.openvla.vision import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD, ViTShape


def _timm_vit_shapes(prefix: str, shape: ViTShape, attention_pool: bool) -> dict[str, tuple[int, ...]]:
    """timm 0.9.16 VisionTransformer(num_classes=0) state dict, LayerScale renamed as OpenVLA does."""
    width, hidden = shape.width, shape.mlp_width
    shapes = {f"{prefix}pos_embed": (1, shape.num_patches, width),  # no_embed_class: patches only
              f"{prefix}patch_embed.proj.weight": (width, 3, shape.patch_size, shape.patch_size),
              f"{prefix}patch_embed.proj.bias": (width,),
              f"{prefix}norm.weight": (width,), f"{prefix}norm.bias": (width,)}
    if shape.class_token:
        shapes[f"{prefix}cls_token"] = (1, 1, width)
    if shape.register_tokens:
        shapes[f"{prefix}reg_token"] = (1, shape.register_tokens, width)
    for index in range(shape.depth):
        block = f"{prefix}blocks.{index}."
        shapes.update({
            f"{block}norm1.weight": (width,), f"{block}norm1.bias": (width,),
            f"{block}attn.qkv.weight": (3 * width, width), f"{block}attn.qkv.bias": (3 * width,),
            f"{block}attn.proj.weight": (width, width), f"{block}attn.proj.bias": (width,),
            f"{block}norm2.weight": (width,), f"{block}norm2.bias": (width,),
            f"{block}mlp.fc1.weight": (hidden, width), f"{block}mlp.fc1.bias": (hidden,),
            f"{block}mlp.fc2.weight": (width, hidden), f"{block}mlp.fc2.bias": (width,),
        })
        if shape.layer_scale:
            shapes.update({f"{block}ls1.scale_factor": (width,), f"{block}ls2.scale_factor": (width,)})
    if attention_pool:  # timm's AttentionPoolLatent (global_pool='map'), kept although unused
        pool = f"{prefix}attn_pool."
        shapes.update({
            f"{pool}latent": (1, 1, width), f"{pool}q.weight": (width, width), f"{pool}q.bias": (width,),
            f"{pool}kv.weight": (2 * width, width), f"{pool}kv.bias": (2 * width,),
            f"{pool}proj.weight": (width, width), f"{pool}proj.bias": (width,),
            f"{pool}norm.weight": (width,), f"{pool}norm.bias": (width,),
            f"{pool}mlp.fc1.weight": (hidden, width), f"{pool}mlp.fc1.bias": (hidden,),
            f"{pool}mlp.fc2.weight": (width, hidden), f"{pool}mlp.fc2.bias": (width,),
        })
    return shapes


def released_tensor_shapes(architecture: OpenVLAArchitecture) -> dict[str, tuple[int, ...]]:
    """Every tensor of a released-layout checkpoint of these sizes, by the release's names."""
    shapes = _timm_vit_shapes("vision_backbone.featurizer.", architecture.dino, attention_pool=False)
    shapes.update(_timm_vit_shapes("vision_backbone.fused_featurizer.", architecture.siglip, attention_pool=True))
    vision, llm = architecture.dino.width + architecture.siglip.width, architecture.llama["hidden_size"]
    shapes.update({"projector.fc1.weight": (4 * vision, vision), "projector.fc1.bias": (4 * vision,),
                   "projector.fc2.weight": (llm, 4 * vision), "projector.fc2.bias": (llm,),
                   "projector.fc3.weight": (llm, llm), "projector.fc3.bias": (llm,)})
    llama = architecture.llama
    vocab, inner = llama["vocab_size"], llama["intermediate_size"]
    kv_width = llama.get("num_key_value_heads", llama["num_attention_heads"]) * llm // llama["num_attention_heads"]
    shapes.update({"language_model.model.embed_tokens.weight": (vocab, llm),
                   "language_model.model.norm.weight": (llm,), "language_model.lm_head.weight": (vocab, llm)})
    for index in range(llama["num_hidden_layers"]):
        layer = f"language_model.model.layers.{index}."
        shapes.update({
            f"{layer}self_attn.q_proj.weight": (llm, llm), f"{layer}self_attn.k_proj.weight": (kv_width, llm),
            f"{layer}self_attn.v_proj.weight": (kv_width, llm), f"{layer}self_attn.o_proj.weight": (llm, llm),
            f"{layer}mlp.gate_proj.weight": (inner, llm), f"{layer}mlp.up_proj.weight": (inner, llm),
            f"{layer}mlp.down_proj.weight": (llm, inner),
            f"{layer}input_layernorm.weight": (llm,), f"{layer}post_attention_layernorm.weight": (llm,),
        })
    return shapes


def _random_tensor(name: str, shape: tuple[int, ...], rng: np.random.RandomState) -> torch.Tensor:
    """Values that keep every part of the computation visible: unit-scale activations, non-zero biases,
    norm weights and LayerScale away from 1 / 0, and a wide LM head (a trained head has large rows; a
    0.02-std one caps every logit near 1 and no adapter could fit a token, as LoRA never trains it)."""
    noise = rng.standard_normal(shape)
    if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "layernorm.weight")):
        values = 1.0 + 0.1 * noise
    elif name.endswith("scale_factor"):
        values = 0.5 + 0.1 * noise
    elif name.endswith("bias"):
        values = 0.1 * noise
    elif name.endswith("lm_head.weight"):
        values = 4.0 * noise / np.sqrt(shape[1])
    elif name.endswith(("cls_token", "reg_token", "pos_embed", "latent", "embed_tokens.weight")):
        values = noise
    else:  # linear and patch-convolution weights: unit-scale outputs
        values = noise / np.sqrt(np.prod(shape[1:]))
    return torch.from_numpy(values.astype(np.float32))


def released_config(architecture: OpenVLAArchitecture, statistics: dict) -> dict:
    """config.json as the release writes it (OpenVLAConfig.save_pretrained, transformers 4.40.1)."""
    llama = architecture.llama
    text_config = {"model_type": "llama", "pad_token_id": architecture.pad_token_id, "torch_dtype": "bfloat16",
                   "vocab_size": llama["vocab_size"]}
    # Like transformers' to_diff_dict: only what differs from LlamaConfig's defaults (nothing, for the 7B).
    text_config.update({key: value for key, value in llama.items()
                        if key != "vocab_size" and value != LLAMA_CONFIG_DEFAULTS.get(key)})
    config = {
        "arch_specifier": "no-align+fused-gelu-mlp", "architectures": ["OpenVLAForActionPrediction"],
        "hf_llm_id": "meta-llama/Llama-2-7b-hf", "image_resize_strategy": "resize-naive",
        "image_sizes": [architecture.dino.image_size, architecture.siglip.image_size],
        "llm_backbone_id": "llama2-7b-pure", "llm_max_length": 2048, "model_type": "openvla",
        "n_action_bins": 256, "norm_stats": statistics, "output_projector_states": False,
        "pad_to_multiple_of": 64, "pad_token_id": architecture.pad_token_id, "text_config": text_config,
        "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
        "timm_override_act_layers": [None, None], "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True, "vision_backbone_id": "dinosiglip-vit-so-224px",
    }
    released = OpenVLAArchitecture.openvla_7b()
    if (architecture.dino, architecture.siglip) != (released.dino, released.siglip):
        config[VISION_SHAPES_KEY] = {"dino": asdict(architecture.dino), "siglip": asdict(architecture.siglip)}
    return config


def released_preprocessor_config(architecture: OpenVLAArchitecture) -> dict:
    """preprocessor_config.json's fields that decide the pixels (PrismaticImageProcessor)."""
    sizes = [architecture.dino.image_size, architecture.siglip.image_size]
    return {"image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
            "input_sizes": [[3, size, size] for size in sizes], "interpolations": ["bicubic", "bicubic"],
            "means": [list(DINO_MEAN), list(SIGLIP_MEAN)], "stds": [list(DINO_STD), list(SIGLIP_STD)],
            "use_fused_vision_backbone": True}


def tiny_tokenizer():
    """Character-level fast tokenizer with Llama's special ids (<unk> 0, <s> 1, </s> 2; BOS added)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for character in string.printable:
        vocab.setdefault(character, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def write_tiny_openvla(path: str | Path, seed: int = 0, architecture: OpenVLAArchitecture | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    architecture = architecture or OpenVLAArchitecture.tiny()
    rng = np.random.RandomState(seed)
    tensors = {name: _random_tensor(name, shape, rng).to(torch.bfloat16)
               for name, shape in sorted(released_tensor_shapes(architecture).items())}
    # Two shards and an index, like the release's model-0000k-of-0000n.safetensors.
    shards = {"model-00001-of-00002.safetensors": {n: t for n, t in tensors.items() if not n.startswith("language_model.")},
              "model-00002-of-00002.safetensors": {n: t for n, t in tensors.items() if n.startswith("language_model.")}}
    for filename, shard in shards.items():
        save_file(shard, str(path / filename), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
             "weight_map": {name: filename for filename, shard in shards.items() for name in sorted(shard)}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    statistics = {"bridge_orig": {"action": {"q01": list(BRIDGE_ORIG.q01), "q99": list(BRIDGE_ORIG.q99),
                                             "mask": list(BRIDGE_ORIG.mask)}}}
    (path / "config.json").write_text(json.dumps(released_config(architecture, statistics), indent=2))
    (path / "preprocessor_config.json").write_text(json.dumps(released_preprocessor_config(architecture), indent=2))
    (path / "dataset_statistics.json").write_text(json.dumps(statistics, indent=2))
    tiny_tokenizer().save_pretrained(str(path))
    return path


if __name__ == "__main__":
    target = write_tiny_openvla(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_openvla")
    print(f"wrote a tiny random OpenVLA to {target}")
