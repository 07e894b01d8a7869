"""The weights an acting copy of the agent needs, out of one agent and into another.

Acting on the robot host (`acting:=robot`) runs the same acting rule as the learner (policy
samples, the critic's action optimization, selection), so it needs the sampling policy (the moving
average when there is one) and the critic. Only what training changes travels: the parameters
that are trained in the policy (those of `agent.policy` that require gradients; the moving average
has the same names and tracks them) and the sampling policy's buffers (state normalization), so a
frozen base (OpenVLA's 4-bit weights under LoRA) is loaded once on the robot host from the same
config and never sent; the critic travels whole.
"""

from __future__ import annotations

import torch

from parl_robot.rl.agent import PARLAgent


def _trained_names(agent: PARLAgent) -> set[str]:
    """Names, in the sampling policy's state dict, of what training changes."""
    trained = {name for name, parameter in agent.policy.named_parameters() if parameter.requires_grad}
    return trained | {name for name, _ in agent.sampling_policy.named_buffers()}


def acting_weights(agent: PARLAgent) -> dict[str, dict[str, torch.Tensor]]:
    """{"policy": trained state of the sampling policy, "critic": the critic's state} on the CPU."""
    trained = _trained_names(agent)
    policy = {name: value.detach().cpu().clone() for name, value in agent.sampling_policy.state_dict().items()
              if name in trained}
    return {"policy": policy,
            "critic": {name: value.detach().cpu().clone() for name, value in agent.critic.state_dict().items()}}


def _load_into(module: torch.nn.Module, state: dict, what: str, needed: set[str]) -> None:
    result = module.load_state_dict(state, strict=False)
    missing = sorted(name for name in result.missing_keys if name in needed)
    if result.unexpected_keys or missing:
        raise ValueError(
            f"published {what} weights do not fit this {what} (is the robot host's config the learner's?): "
            f"unexpected {sorted(result.unexpected_keys)[:5]}, missing {missing[:5]}"
        )


def load_acting_weights(agent: PARLAgent, weights: dict) -> None:
    """Load `acting_weights(...)` of another agent built from the same config; ValueError when they do not fit."""
    if not isinstance(weights, dict) or set(weights) != {"policy", "critic"}:
        got = sorted(weights) if isinstance(weights, dict) else type(weights).__name__
        raise ValueError(f"acting weights must hold 'policy' and 'critic', got {got}")
    try:
        _load_into(agent.sampling_policy, weights["policy"], "policy", _trained_names(agent))
        _load_into(agent.critic, weights["critic"], "critic", set(agent.critic.state_dict()))
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"published weights do not fit this agent (is the robot host's config the learner's?): {err}") from None
