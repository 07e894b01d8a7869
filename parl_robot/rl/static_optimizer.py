"""PA-RL action optimization with static shapes and no autograd: the same rule as
`action_optimizer.optimize_actions` (global top-m by Q, T local ascent steps, selection), computed so
that it can be captured as one graph.

What differs from the eager reference, and why the result is the same:
- Q and ∂Q/∂a come from `nets.critic_ascent` (all heads in one batched pass, the state's share of the
  first layer once), not from an autograd graph per step. Equal to autograd to rounding.
- One critic pass per local step instead of two: the pass at the stepped candidates gives their Q
  (accept or not) and their gradient, which is the next step's gradient exactly when the step is
  accepted; a rejected candidate never moves again ("accepted_only"), so its gradient is not needed.
- All T steps always run. The eager loop stops when no candidate is still active; here inactive
  candidates are masked, so the extra steps change nothing but there is no `.any()` host sync.
- Softmax selection draws with the Gumbel-max trick from uniform noise passed in (`selection_noise`),
  the same distribution as `torch.multinomial` over softmax(Q / temperature) but without a host sync
  and with the randomness outside the graph.
"""

from __future__ import annotations

import torch

from parl_robot.gumbel import gumbel_from_uniform, gumbel_max
from parl_robot.nets.critic import TwinCritic
from parl_robot.nets.critic_ascent import first_layer_state_part, q_and_action_gradient, q_only, stack_heads
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, OptimizedActions, global_candidates


def optimize_actions_static(
    critic: TwinCritic,
    features: torch.Tensor,
    samples: torch.Tensor,
    cfg: ActionOptimizerConfig,
    dataset_actions: torch.Tensor | None = None,
    selection_noise: torch.Tensor | None = None,
) -> OptimizedActions:
    """features (batch, F) from `critic.encode`; samples (batch, k, A) from the policy; selection_noise
    (batch, c) uniform in (0, 1) when `cfg.selection` is "softmax" (c = the number of candidates)."""
    with torch.no_grad():
        heads = stack_heads(critic)
        state_part = first_layer_state_part(heads, features.detach())
        sample_q = q_only(heads, state_part, samples, cfg.ensemble)  # (batch, k)
        dataset_q = None
        if dataset_actions is not None:
            dataset_q = q_only(heads, state_part, dataset_actions.unsqueeze(1), cfg.ensemble)  # (batch, 1)
        candidates, q_values = global_candidates(samples, sample_q, cfg, dataset_actions, dataset_q)
        initial_q = q_values.clone()
        if cfg.local_steps > 0:
            _, gradient = q_and_action_gradient(heads, state_part, candidates, cfg.ensemble)
        if cfg.local_search == "best_iterate":
            current = candidates
            for _ in range(cfg.local_steps):
                current = (current + cfg.step_size * gradient).clamp(-1.0, 1.0)
                current_q, gradient = q_and_action_gradient(heads, state_part, current, cfg.ensemble)
                better = current_q > q_values
                candidates = torch.where(better.unsqueeze(-1), current, candidates)
                q_values = torch.where(better, current_q, q_values)
        else:
            active = torch.ones_like(q_values, dtype=torch.bool)
            for _ in range(cfg.local_steps):
                stepped = (candidates + cfg.step_size * gradient).clamp(-1.0, 1.0)
                stepped_q, stepped_gradient = q_and_action_gradient(heads, state_part, stepped, cfg.ensemble)
                active = active & (stepped_q > q_values)  # accepted; a rejected candidate stops
                candidates = torch.where(active.unsqueeze(-1), stepped, candidates)
                q_values = torch.where(active, stepped_q, q_values)
                gradient = torch.where(active.unsqueeze(-1), stepped_gradient, gradient)
        if cfg.selection == "softmax":
            if selection_noise is None:
                raise ValueError("softmax selection needs selection_noise (uniform, one per candidate)")
            choice = gumbel_max(q_values, gumbel_from_uniform(selection_noise), cfg.temperature, dim=1)
        else:
            choice = q_values.argmax(dim=1)
        selected = torch.gather(candidates, 1, choice.view(-1, 1, 1).expand(-1, 1, candidates.shape[-1])).squeeze(1)
    return OptimizedActions(selected, candidates, q_values, initial_q, sample_q)


def candidate_count(cfg: ActionOptimizerConfig, num_samples: int, with_dataset_action: bool) -> int:
    """How many candidates the local search keeps per state (the width of `selection_noise`)."""
    kept = min(cfg.num_kept, num_samples)
    if with_dataset_action and cfg.dataset_action_slot != "replace_worst":
        return kept + 1
    return kept
