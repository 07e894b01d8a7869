"""The weights an acting copy of the agent needs, out of one agent and into another.

Acting on the robot host (`acting:=robot`) runs the same acting rule as the learner (policy
samples, the critic's action optimization, selection), so it needs the sampling policy and the
critic. Only what training changes travels: the policy's trainable parameters and its buffers
(state normalization), so a frozen base (OpenVLA's 4-bit weights under LoRA) is loaded once on
the robot host from the same config and never sent; the critic travels whole.
"""

from __future__ import annotations

import torch

from parl_robot.rl.agent import PARLAgent


def _trained_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    trained = {name for name, parameter in module.named_parameters() if parameter.requires_grad}
    trained |= {name for name, _ in module.named_buffers()}
    return {name: value.detach().cpu().clone() for name, value in module.state_dict().items() if name in trained}


def acting_weights(agent: PARLAgent) -> dict[str, dict[str, torch.Tensor]]:
    """{"policy": trained state of the sampling policy, "critic": the critic's state} on the CPU."""
    return {"policy": _trained_state(agent.sampling_policy),
            "critic": {name: value.detach().cpu().clone() for name, value in agent.critic.state_dict().items()}}


def _load_into(module: torch.nn.Module, state: dict, what: str) -> None:
    frozen = {name for name, parameter in module.named_parameters() if not parameter.requires_grad}
    result = module.load_state_dict(state, strict=False)
    missing = [name for name in result.missing_keys if name not in frozen]
    if result.unexpected_keys or missing:
        raise ValueError(
            f"published {what} weights do not fit this {what} (is the robot host's config the learner's?): "
            f"unexpected {sorted(result.unexpected_keys)[:5]}, missing {sorted(missing)[:5]}"
        )


def load_acting_weights(agent: PARLAgent, weights: dict) -> None:
    """Load `acting_weights(...)` of another agent built from the same config; ValueError when they do not fit."""
    if not isinstance(weights, dict) or set(weights) != {"policy", "critic"}:
        raise ValueError(f"acting weights must hold 'policy' and 'critic', got {sorted(weights) if isinstance(weights, dict) else type(weights).__name__}")
    try:
        _load_into(agent.sampling_policy, weights["policy"], "policy")
        _load_into(agent.critic, weights["critic"], "critic")
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"published weights do not fit this agent (is the robot host's config the learner's?): {err}") from None
