"""Critic losses: Cal-QL (CQL with the Monte-Carlo calibration bound) and IQL's expectile value."""

from __future__ import annotations

import torch


def td_loss(q_data: torch.Tensor, td_target: torch.Tensor) -> torch.Tensor:
    """½ (Q(s,a) − y)², averaged over the batch and summed over the twin heads. q_data (2, batch)."""
    return 0.5 * (q_data - td_target.unsqueeze(0)).pow(2).mean(dim=1).sum()


def calql_regularizer(q_policy: torch.Tensor, q_data: torch.Tensor, mc_returns: torch.Tensor) -> torch.Tensor:
    """E_{a~π}[max(Q(s,a), V^μ(s))] − E_{a~D}[Q(s,a)], summed over the twin heads.

    q_policy (2, batch, n) for n policy actions per state; q_data (2, batch); mc_returns (batch,).
    Clamping the pushed-down Q at the Monte-Carlo return keeps the critic calibrated: it never goes
    below the value of the behaviour policy, which is what makes online fine-tuning start well.
    """
    calibrated = torch.maximum(q_policy, mc_returns.view(1, -1, 1))
    return (calibrated.mean(dim=2) - q_data).mean(dim=1).sum()


def expectile_loss(difference: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL value loss |τ − 1(u < 0)| u² with u = Q(s,a) − V(s)."""
    weight = torch.where(difference > 0, expectile, 1 - expectile)
    return (weight * difference.pow(2)).mean()


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
