"""Critic losses: TD regression, Cal-QL (CQL with the Monte-Carlo calibration bound) in this project's
form and in the PA-RL reference's, and IQL's expectile value."""

from __future__ import annotations

import math

import torch


def td_loss(q_data: torch.Tensor, td_target: torch.Tensor, form: str = "half_mse") -> torch.Tensor:
    """TD regression of every head on one target. q_data (heads, batch). "half_mse": ½ (Q(s,a) − y)²
    averaged over the batch and summed over the heads; "mse": (Q(s,a) − y)² averaged over heads and
    batch (the PA-RL reference's ensemble loss); "sum_mse": the mean squared error summed over the
    heads (the Cal-QL reference's twin critics)."""
    squared = (q_data - td_target.unsqueeze(0)).pow(2)
    if form == "mse":
        return squared.mean()
    if form == "sum_mse":  # the Cal-QL reference: qf1_loss + qf2_loss
        return squared.mean(dim=1).sum()
    return 0.5 * squared.mean(dim=1).sum()


def calql_regularizer(
    q_policy: torch.Tensor,
    q_data: torch.Tensor,
    mc_returns: torch.Tensor,
    q_random: torch.Tensor | None = None,
    random_log_density: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Cal-QL's conservative term: soft-max over out-of-distribution actions minus Q on data actions,
    averaged over the batch and summed over the twin heads.

        τ·logsumexp([max(Q(s,a_π), V^μ(s)) ; Q(s,a_rand) − log p_rand] / τ) − Q(s,a_D)

    q_policy (2, batch, n) for n policy actions per state; q_data (2, batch); mc_returns (batch,);
    q_random (2, batch, r) for r uniform actions with log density `random_log_density`.
    The push-down is a log-sum-exp, so it lands on the actions the critic rates highest among the
    policy's raw samples, and the uniform actions (with their density) keep off-data regions down.
    Clamping the policy actions' Q at the Monte-Carlo return keeps the critic calibrated: it is never
    pushed below the value of the behaviour policy. This is the project's form (`critic.cql_term:
    policy_samples`); the PA-RL reference pushes down the optimizer's own picks instead,
    `calql_reference_regularizer` (`cql_term: optimized_actions`).
    """
    parts = [torch.maximum(q_policy, mc_returns.view(1, -1, 1))]
    if q_random is not None:
        parts.append(q_random - random_log_density)
    out_of_distribution = temperature * torch.logsumexp(torch.cat(parts, dim=-1) / temperature, dim=-1)
    return (out_of_distribution - q_data).mean(dim=1).sum()


def calql_reference_regularizer(
    q_optimized: torch.Tensor,
    q_random: torch.Tensor,
    q_data: torch.Tensor,
    mc_returns: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The PA-RL reference's conservative term (its `cql.py` without importance sampling):

        τ·(logsumexp([Q(s,a_rand) ; max(Q(s,π_opt), V^μ(s)) ; Q(s,a_D)] / τ) − log N) − Q(s,a_D)

    averaged over the heads given and the batch. q_optimized (heads, batch, n) for the optimizer's own
    picks π_opt(s) and π_opt(s′), both scored at s (the only terms the Cal-QL bound applies to);
    q_random (heads, batch, r) for uniform actions, without a density correction; q_data (heads, batch);
    N = r + n + 1 values per state."""
    bounded = torch.maximum(q_optimized, mc_returns.view(1, -1, 1))
    values = torch.cat([q_random, bounded, q_data.unsqueeze(-1)], dim=-1)
    out_of_distribution = temperature * (torch.logsumexp(values / temperature, dim=-1) - math.log(values.shape[-1]))
    return (out_of_distribution - q_data).mean()


def calql_importance_sampled_regularizer(
    q_random: torch.Tensor,
    random_log_density: float,
    q_current: torch.Tensor,
    log_pi_current: torch.Tensor,
    q_next: torch.Tensor,
    log_pi_next: torch.Tensor,
    q_data: torch.Tensor,
    mc_returns: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The Cal-QL reference's conservative term (JaxCQL `conservative_sac.py`, importance sampling on):

        τ·logsumexp([Q(s,a_rand) − log p_rand ; max(Q(s,a_π), V^μ(s)) − log π(a_π|s) ;
                     max(Q(s,a′_π), V^μ(s)) − log π(a′_π|s′)] / τ) − Q(s,a_D)

    averaged over the batch and summed over the heads. q_* (heads, batch, n) with a_π ~ π(·|s) and
    a′_π ~ π(·|s′), both scored at s; log_pi_* (batch, n); q_data (heads, batch)."""
    mc = mc_returns.view(1, -1, 1)
    values = torch.cat([
        q_random - random_log_density,
        torch.maximum(q_current, mc) - log_pi_current.unsqueeze(0),
        torch.maximum(q_next, mc) - log_pi_next.unsqueeze(0),
    ], dim=-1)
    out_of_distribution = temperature * torch.logsumexp(values / temperature, dim=-1)
    return (out_of_distribution - q_data).mean(dim=1).sum()


def expectile_loss(difference: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL value loss |τ − 1(u < 0)| u² with u = Q(s,a) − V(s)."""
    weight = torch.where(difference > 0, expectile, 1 - expectile)
    return (weight * difference.pow(2)).mean()


def achievable_returns(success_reward: float, reward_bias: float, discount: float) -> tuple[float, float]:
    """Bounds on any discounted return with step reward `success_reward * success + reward_bias`,
    success ending the episode: every step earns the failure reward except possibly the last.
    (−1/(1 − γ), 0) for the binary tasks. TD targets are clipped to it and an HL-Gauss head's support
    spans it, so the critic cannot rate an action above the best outcome the task allows — the
    over-estimates the action optimizer would otherwise find and distil."""
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1) for bounded returns, got {discount}")
    fail, success = reward_bias, success_reward + reward_bias
    horizon = 1.0 / (1.0 - discount)
    return min(fail, 0.0) * horizon + min(success, 0.0), max(fail, 0.0) * horizon + max(success, 0.0)


def discounted_returns(rewards: torch.Tensor | list, discount: float, terminal: bool) -> list[float]:
    """Monte-Carlo return-to-go per step. A truncated (non-terminal) episode's tail is assumed to
    keep its last reward forever, the conservative choice for sparse −1/0 rewards (as Cal-QL does)."""
    rewards = [float(r) for r in rewards]
    if not rewards:
        return []
    running = 0.0 if terminal else rewards[-1] / (1 - discount) if discount < 1 else 0.0
    returns = [0.0] * len(rewards)
    for index in reversed(range(len(rewards))):
        running = rewards[index] + discount * running
        returns[index] = running
    return returns
