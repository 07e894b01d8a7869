"""The two ViT featurizers of OpenVLA's fused vision backbone, in plain torch.

They compute what the released model computes with timm 0.9.x, the version its remote code pins:
`timm.create_model(id, num_classes=0, img_size=224, act_layer=None)` and the patch tokens of
`get_intermediate_layers(n={depth - 2})`. That is: pre-norm blocks (LayerNorm eps 1e-6), exact
`nn.GELU` in both ViTs (timm builds `vit_so400m_patch14_siglip_224` with its default activation; the
tanh approximation of transformers' SigLIP and of timm's newer SigLIP variants is not what OpenVLA
trained or runs with), DINOv2's LayerScale, class and register tokens put in front *after* the
position embedding is added to the patches (`no_embed_class`), and the output of the second-to-last
block without the final norm. So the last block, the final norms and SigLIP's attention-pool head are
not built; their checkpoint entries are listed by `unused_checkpoint_prefixes` and skipped at load.

Parameter names are the released checkpoint's, i.e. timm's, except LayerScale's: OpenVLA's conversion
renames timm's `ls1.gamma` / `ls2.gamma` to `scale_factor` (transformers' loader rewrites parameter
names containing "gamma"), and so does this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# Per-channel normalizations of the 6-channel pixel input, DINOv2 then SigLIP, exactly as the released
# processor (preprocessor_config.json) applies them. OpenVLA's conversion script built timm's transforms
# with bfloat16 as torch's default dtype, so the DINOv2 mean/std it saved, and every model fine-tuned or
# evaluated through that processor saw, are ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
# rounded to bfloat16. Pre-training (Prismatic's own code) used the exact values; the two differ by at most
# 0.008 in normalized units (under half an 8-bit grey level), far below training's colour jitter. We follow
# the release: its weights are what we load and fine-tune, and OpenVLA's own fine-tuning saw these values.
DINO_MEAN, DINO_STD = (0.484375, 0.455078125, 0.40625), (0.228515625, 0.2236328125, 0.224609375)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ViTShape:
    width: int
    depth: int  # blocks in the released model; depth - 1 are built (features after block depth - 2)
    heads: int
    mlp_width: int
    class_token: bool
    register_tokens: int
    layer_scale: bool
    patch_size: int = 14
    image_size: int = 224

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


# timm 0.9.16 `vit_large_patch14_reg4_dinov2` and `vit_so400m_patch14_siglip_224` (mlp_ratio 3.7362 -> 4304).
DINOV2_VIT_L14_REG4 = ViTShape(1024, 24, 16, 4096, class_token=True, register_tokens=4, layer_scale=True)
SIGLIP_SO400M_14 = ViTShape(1152, 27, 16, 4304, class_token=False, register_tokens=0, layer_scale=False)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, patch_size, patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)  # (batch, patches, width)


class LayerScale(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((width,), 1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()  # exact (erf) GELU in both ViTs, as timm 0.9 builds them
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, shape: ViTShape):
        super().__init__()
        self.norm1 = nn.LayerNorm(shape.width, eps=1e-6)
        self.attn = Attention(shape.width, shape.heads)
        self.ls1 = LayerScale(shape.width) if shape.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(shape.width, eps=1e-6)
        self.mlp = Mlp(shape.width, shape.mlp_width)
        self.ls2 = LayerScale(shape.width) if shape.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTFeaturizer(nn.Module):
    """Patch features (batch, patches, width) after block `depth - 2`, prefix tokens removed."""

    def __init__(self, shape: ViTShape):
        super().__init__()
        self.shape = shape
        self.patch_embed = PatchEmbed(shape.patch_size, shape.width)
        self.num_prefix_tokens = int(shape.class_token) + shape.register_tokens
        if shape.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, shape.width))
        if shape.register_tokens:
            self.reg_token = nn.Parameter(torch.zeros(1, shape.register_tokens, shape.width))
        # Position embeddings cover the patches only (timm's no_embed_class for DINOv2-reg; SigLIP has no prefix).
        self.pos_embed = nn.Parameter(torch.randn(1, shape.num_patches, shape.width) * 0.02)
        self.blocks = nn.ModuleList([Block(shape) for _ in range(shape.depth - 1)])
        # Recompute each block's activations in the backward pass instead of keeping them (training only).
        self.gradient_checkpointing = False

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels) + self.pos_embed
        prefix = []
        if self.shape.class_token:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.shape.register_tokens:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*prefix, x], dim=1)
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
        return x[:, self.num_prefix_tokens :]


class FusedVisionBackbone(nn.Module):
    """DINOv2 on channels 0-2 and SigLIP on channels 3-5, patch features concatenated."""

    def __init__(self, dino: ViTShape, siglip: ViTShape):
        super().__init__()
        if dino.num_patches != siglip.num_patches:
            raise ValueError(f"featurizers disagree on patches: {dino.num_patches} vs {siglip.num_patches}")
        self.featurizer = ViTFeaturizer(dino)
        self.fused_featurizer = ViTFeaturizer(siglip)
        self.embed_dim = dino.width + siglip.width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dino_pixels, siglip_pixels = torch.split(pixel_values, 3, dim=1)
        return torch.cat([self.featurizer(dino_pixels), self.fused_featurizer(siglip_pixels)], dim=2)


def unused_checkpoint_prefixes(dino: ViTShape, siglip: ViTShape) -> tuple[str, ...]:
    """Released checkpoint entries this backbone does not build (see the module docstring)."""
    return (
        f"vision_backbone.featurizer.blocks.{dino.depth - 1}.",
        "vision_backbone.featurizer.norm.",
        f"vision_backbone.fused_featurizer.blocks.{siglip.depth - 1}.",
        "vision_backbone.fused_featurizer.norm.",
        "vision_backbone.fused_featurizer.attn_pool.",
    )
