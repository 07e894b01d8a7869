"""Policy classes behind one protocol (`parl_robot.policies.base.Policy`)."""

from __future__ import annotations

from torch import nn

from parl_robot.config import LearnerConfig
from parl_robot.nets.encoders import ObservationSpec


def build_policy(
    cfg: LearnerConfig,
    spec: ObservationSpec,
    action_dim: int = 7,
    instruction: str | None = None,
    action_scale: list[float] | tuple[float, ...] | None = None,
) -> nn.Module:
    """The configured policy class. OpenVLA also needs the task's instruction and action scale."""
    if cfg.policy == "diffusion":
        from parl_robot.policies.diffusion import DiffusionPolicy

        return DiffusionPolicy(spec, action_dim, cfg.observation, cfg.policy_hidden, cfg.policy_blocks, cfg.diffusion_steps,
                               dropout=cfg.policy_dropout)
    if cfg.policy == "gaussian":
        from parl_robot.policies.gaussian import TanhGaussianPolicy

        return TanhGaussianPolicy(spec, action_dim, cfg.observation, cfg.policy_hidden)
    if cfg.policy == "transformer":
        from parl_robot.policies.transformer import TokenTransformerPolicy

        return TokenTransformerPolicy(
            spec, action_dim, cfg.observation, cfg.policy_hidden, cfg.transformer_layers, cfg.transformer_heads, cfg.action_bins
        )
    if cfg.policy == "openvla":
        from parl_robot.policies.openvla.build import build_openvla_policy

        if instruction is None or action_scale is None:
            raise ValueError("the openvla policy needs the task instruction and control.action_scale")
        if action_dim != 7:
            raise ValueError(f"OpenVLA predicts 7-D actions, not {action_dim}")
        return build_openvla_policy(cfg, instruction, action_scale)
    raise ValueError(f"unknown policy class '{cfg.policy}'")
