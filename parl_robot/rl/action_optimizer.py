"""PA-RL Stage I: global + local action optimization against the critic, batched over states.

Global: rank k policy samples (plus, optionally, the dataset action) by Q and keep the top m.
Local: T gradient-ascent steps of size alpha on each kept action; a step is kept only if it raises
Q, and a candidate whose step is rejected stops. The result is the softmax-Q distribution over the
candidates, from which the argmax or a sample is returned.

Q here is the minimum of the twin heads (or their mean, `ensemble`), and the state features are
computed once by the caller and reused for every candidate and every local step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parl_robot.nets.critic import TwinCritic


@dataclass(frozen=True)
class ActionOptimizerConfig:
    num_kept: int = 10  # m
    local_steps: int = 10  # T
    step_size: float = 3e-4  # alpha
    selection: str = "argmax"  # or "softmax"
    temperature: float = 1.0
    ensemble: str = "min"  # how the twin heads' Q values combine for ranking and ascent: "min" or "mean"


@dataclass
class OptimizedActions:
    actions: torch.Tensor  # (batch, action_dim), the selected action per state
    candidates: torch.Tensor  # (batch, c, action_dim), after local optimization
    q_values: torch.Tensor  # (batch, c)
    initial_q_values: torch.Tensor  # (batch, c) of the candidates before local optimization
    sample_q_values: torch.Tensor | None = None  # (batch, k) of the policy's samples as drawn

    def optimization_gain(self) -> float:
        """Mean over states of (best optimized Q − mean Q of the policy's samples): how much global
        selection and local ascent raised Q above what the policy proposes."""
        if self.sample_q_values is None:
            return float("nan")
        return (self.q_values.max(dim=1).values - self.sample_q_values.mean(dim=1)).mean().item()


def _ensemble_q(critic: TwinCritic, features: torch.Tensor, actions: torch.Tensor, ensemble: str) -> torch.Tensor:
    heads = critic.q_values(features, actions)
    return heads.mean(dim=0) if ensemble == "mean" else heads.min(dim=0).values


def optimize_actions(
    critic: TwinCritic,
    features: torch.Tensor,
    samples: torch.Tensor,
    cfg: ActionOptimizerConfig,
    dataset_actions: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> OptimizedActions:
    """features (batch, F) from `critic.encode`; samples (batch, k, action_dim) from the policy."""
    features = features.detach()
    with torch.no_grad():
        sample_q = _ensemble_q(critic, features, samples, cfg.ensemble)  # (batch, k)
        kept = min(cfg.num_kept, samples.shape[1])
        top_q, top_index = sample_q.topk(kept, dim=1)
        candidates = torch.gather(samples, 1, top_index.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))
        q_values = top_q
        if dataset_actions is not None:
            candidates = torch.cat([candidates, dataset_actions.unsqueeze(1)], dim=1)  # (batch, m + 1, A)
            q_values = torch.cat([q_values, _ensemble_q(critic, features, dataset_actions.unsqueeze(1), cfg.ensemble)], dim=1)
    initial_q = q_values.clone()
    active = torch.ones_like(q_values, dtype=torch.bool)
    for _ in range(cfg.local_steps):
        if not active.any():
            break
        with torch.enable_grad():
            trial = candidates.detach().requires_grad_(True)
            gradient = torch.autograd.grad(_ensemble_q(critic, features, trial, cfg.ensemble).sum(), trial)[0]
        with torch.no_grad():
            stepped = (candidates + cfg.step_size * gradient).clamp(-1.0, 1.0)
            stepped_q = _ensemble_q(critic, features, stepped, cfg.ensemble)
            accept = active & (stepped_q > q_values)  # (batch, c)
            candidates = torch.where(accept.unsqueeze(-1), stepped, candidates)
            q_values = torch.where(accept, stepped_q, q_values)
            active = accept
    with torch.no_grad():
        if cfg.selection == "softmax":
            probabilities = torch.softmax(q_values / cfg.temperature, dim=1)
            choice = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        else:
            choice = q_values.argmax(dim=1)
        selected = candidates[torch.arange(candidates.shape[0], device=candidates.device), choice]
    return OptimizedActions(selected, candidates, q_values, initial_q, sample_q)
