"""PA-RL Stage I: global + local action optimization against the critic, batched over states.

Global: rank k policy samples by Q and keep the top m; the dataset action, when given, joins them
as an extra candidate or replaces the worst of the m (`dataset_action_slot`).
Local: T gradient-ascent steps of size alpha on each candidate, clipped to [-1, 1]. "accepted_only":
a step is kept only if it raises Q, and a candidate whose step is rejected stops; "best_iterate"
(the reference): all T steps are taken and the best of the T + 1 iterates by Q is kept. The result
is the softmax-Q distribution over the candidates, from which the argmax or a sample is returned.

Q here is the minimum of the critic's heads (or their mean, `ensemble`), and the state features are
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
    ensemble: str = "min"  # how the heads' Q values combine for ranking and ascent: "min" or "mean"
    local_search: str = "accepted_only"  # or "best_iterate"
    dataset_action_slot: str = "extra"  # or "replace_worst"


@dataclass
class OptimizedActions:
    actions: torch.Tensor  # (batch, action_dim), the selected action per state
    candidates: torch.Tensor  # (batch, c, action_dim), after local optimization
    q_values: torch.Tensor  # (batch, c)
    initial_q_values: torch.Tensor  # (batch, c) of the candidates before local optimization
    sample_q_values: torch.Tensor | None = None  # (batch, k) of the policy's samples as drawn
    samples: torch.Tensor | None = None  # (batch, k, action_dim), the policy's samples (set by ControlStep)

    def optimization_gain(self) -> float:
        """Mean over states of (best optimized Q − mean Q of the policy's samples): how much global
        selection and local ascent raised Q above what the policy proposes."""
        return optimization_gain(self.q_values, self.sample_q_values)


def optimization_gain(q_values: torch.Tensor, sample_q_values: torch.Tensor | None) -> float:
    """Mean over states of (best Q among `q_values` (batch, c) − mean of `sample_q_values` (batch, k))."""
    if sample_q_values is None:
        return float("nan")
    return (q_values.max(dim=1).values - sample_q_values.mean(dim=1)).mean().item()


def ensemble_q(critic: TwinCritic, features: torch.Tensor, actions: torch.Tensor, ensemble: str) -> torch.Tensor:
    """Q of `actions` with the critic's heads combined by `ensemble` ("min" or "mean")."""
    heads = critic.q_values(features, actions)
    return heads.mean(dim=0) if ensemble == "mean" else heads.min(dim=0).values


def _gradient(critic: TwinCritic, features: torch.Tensor, candidates: torch.Tensor, ensemble: str) -> torch.Tensor:
    with torch.enable_grad():
        trial = candidates.detach().requires_grad_(True)
        return torch.autograd.grad(ensemble_q(critic, features, trial, ensemble).sum(), trial)[0]


def _accepted_only(critic: TwinCritic, features: torch.Tensor, candidates: torch.Tensor, q_values: torch.Tensor,
                   cfg: ActionOptimizerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps kept only where they raise Q; a candidate stops at its first rejected step."""
    active = torch.ones_like(q_values, dtype=torch.bool)
    for _ in range(cfg.local_steps):
        if not active.any():
            break
        gradient = _gradient(critic, features, candidates, cfg.ensemble)
        with torch.no_grad():
            stepped = (candidates + cfg.step_size * gradient).clamp(-1.0, 1.0)
            stepped_q = ensemble_q(critic, features, stepped, cfg.ensemble)
            accept = active & (stepped_q > q_values)  # (batch, c)
            candidates = torch.where(accept.unsqueeze(-1), stepped, candidates)
            q_values = torch.where(accept, stepped_q, q_values)
            active = accept
    return candidates, q_values


def _best_iterate(critic: TwinCritic, features: torch.Tensor, candidates: torch.Tensor, q_values: torch.Tensor,
                  cfg: ActionOptimizerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """All T steps taken (each clipped to [-1, 1]); per candidate, the best of the T + 1 iterates."""
    best, best_q, current = candidates, q_values, candidates
    for _ in range(cfg.local_steps):
        gradient = _gradient(critic, features, current, cfg.ensemble)
        with torch.no_grad():
            current = (current + cfg.step_size * gradient).clamp(-1.0, 1.0)
            current_q = ensemble_q(critic, features, current, cfg.ensemble)
            better = current_q > best_q
            best = torch.where(better.unsqueeze(-1), current, best)
            best_q = torch.where(better, current_q, best_q)
    return best, best_q


def global_candidates(samples: torch.Tensor, sample_q: torch.Tensor, cfg: ActionOptimizerConfig,
                      dataset_actions: torch.Tensor | None = None, dataset_q: torch.Tensor | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The global step: the top m of the samples (batch, k, A) by `sample_q` (batch, k), with the
    dataset action (batch, A) and its Q (batch, 1), when given, as an extra candidate or in place of
    the worst kept one (`dataset_action_slot`). Returns the candidates and their Q values."""
    kept = min(cfg.num_kept, samples.shape[1])
    top_q, top_index = sample_q.topk(kept, dim=1)
    candidates = torch.gather(samples, 1, top_index.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))
    if dataset_actions is None:
        return candidates, top_q
    keep = kept - 1 if cfg.dataset_action_slot == "replace_worst" else kept  # topk is sorted: the worst is last
    candidates = torch.cat([candidates[:, :keep], dataset_actions.unsqueeze(1)], dim=1)  # (batch, m or m + 1, A)
    return candidates, torch.cat([top_q[:, :keep], dataset_q], dim=1)


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
        sample_q = ensemble_q(critic, features, samples, cfg.ensemble)  # (batch, k)
        dataset_q = None
        if dataset_actions is not None:
            dataset_q = ensemble_q(critic, features, dataset_actions.unsqueeze(1), cfg.ensemble)
        candidates, q_values = global_candidates(samples, sample_q, cfg, dataset_actions, dataset_q)
    initial_q = q_values.clone()
    if cfg.local_search == "best_iterate":
        candidates, q_values = _best_iterate(critic, features, candidates, q_values, cfg)
    else:
        candidates, q_values = _accepted_only(critic, features, candidates, q_values, cfg)
    with torch.no_grad():
        if cfg.selection == "softmax":
            probabilities = torch.softmax(q_values / cfg.temperature, dim=1)
            choice = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        else:
            choice = q_values.argmax(dim=1)
        selected = candidates[torch.arange(candidates.shape[0], device=candidates.device), choice]
    return OptimizedActions(selected, candidates, q_values, initial_q, sample_q)
