"""LoRA (peft) and 4-bit NF4 loading (bitsandbytes) for the OpenVLA model, injected in place.

`all-linear` targets every nn.Linear except the LM head, as OpenVLA's finetune.py does (vision
backbone, projector and Llama). Checkpoints hold the adapter weights only; `merge_lora` folds them
into the base weights for deployment (run it offline: merging a 7B model next to training OOMs).
"""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"


def linear_module_names(model: nn.Module, exclude: tuple[str, ...] = ("lm_head",)) -> list[str]:
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and not name.split(".")[-1] in exclude]


def resolve_target_modules(model: nn.Module, targets: str) -> list[str]:
    """'all-linear' or comma-separated module-name suffixes (e.g. 'q_proj,v_proj')."""
    if targets.strip() == "all-linear":
        return linear_module_names(model)
    suffixes = [t.strip() for t in targets.split(",") if t.strip()]
    names = [name for name in linear_module_names(model) if any(name == s or name.endswith("." + s) for s in suffixes)]
    if not names:
        raise ValueError(f"learner.lora_target_modules {targets!r} matches no linear layer of the model")
    return names


def apply_lora(model: nn.Module, rank: int, alpha: float, dropout: float, targets: str) -> nn.Module:
    """Freeze the model and inject trainable LoRA adapters (gaussian init: the model starts unchanged)."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian",
                        target_modules=resolve_target_modules(model, targets))
    model.requires_grad_(False)
    model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def has_lora(model: nn.Module) -> bool:
    from peft.tuners.lora import LoraLayer

    return any(isinstance(module, LoraLayer) for module in model.modules())


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items() if "lora_" in name}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]):
    expected = {name: tensor.shape for name, tensor in model.state_dict().items() if "lora_" in name}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    reshaped = sorted(name for name in set(expected) & set(state) if state[name].shape != expected[name])
    if reshaped:
        raise ValueError(f"adapter checkpoint shapes differ from the model's (different lora_rank?): {reshaped[0]} is "
                         f"{tuple(state[reshaped[0]].shape)}, the model has {tuple(expected[reshaped[0]])}")
    if missing or unexpected:
        raise ValueError(f"adapter checkpoint does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         "(different lora_rank or lora_target_modules?)")
    return model.load_state_dict(state, strict=False)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer and remove the LoRA modules (in place)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            model.set_submodule(name, module.get_base_layer())
    return model


# Kept in the compute dtype under 4-bit: the vision backbones and the projector (0.7 B of 7.5 B
# weights). Quantizing the ViTs loses accuracy where OpenVLA's features come from, and SigLIP's
# 4304-wide MLP has no fast NF4 kernel (bitsandbytes falls back to a slow one for a width that is
# not a multiple of its block).
NOT_QUANTIZED = ("vision_backbone.", "projector.")


def quantize_4bit(model: nn.Module, compute_dtype: torch.dtype = torch.bfloat16, device: str = "cuda") -> nn.Module:
    """Replace every nn.Linear of the language model except its head by a bitsandbytes NF4 Linear4bit
    (weights quantize when moved to `device`); the vision backbones, the projector and the head stay as
    loaded (in the compute dtype). The base stays frozen, LoRA adapters train in `compute_dtype`."""
    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise ImportError("learner.load_in_4bit needs bitsandbytes: pip install -e .[openvla]") from error
    for name in linear_module_names(model):
        if name.startswith(NOT_QUANTIZED):
            continue
        linear = model.get_submodule(name)
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=compute_dtype, quant_type="nf4", quant_storage=torch.uint8)
        quantized.weight = bnb.nn.Params4bit(linear.weight.data.to(compute_dtype), requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        model.set_submodule(name, quantized.to(device))
    return model.requires_grad_(False)
