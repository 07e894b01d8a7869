"""How the policy learns in each online update (`learner.policy_update.rule`), one function per rule.

`distill` is PA-RL: the policy imitates the critic's optimized actions with its own supervised loss
(`PARLAgent.update_policy`). The others are what the fine-tuning study compares it against:
`reparameterized` (the standard Cal-QL / SAC actor, tanh-Gaussian only), `filtered_bc` (behaviour
cloning on transitions of successful episodes, no critic in the policy's loss) and `none` (the
policy stays the offline one; the critic still re-ranks and optimizes its samples when acting).
Each takes the agent and the trainer, whose `batch()` draws the product's mixed replay batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from parl_robot.rl.filtered_bc import clone_successes
from parl_robot.rl.network_modes import training_mode

if TYPE_CHECKING:
    from parl_robot.rl.agent import PARLAgent
    from parl_robot.rl.trainer import Trainer


def distill(agent: PARLAgent, trainer: Trainer) -> None:
    agent.update_policy(trainer.batch())


def reparameterized(agent: PARLAgent, trainer: Trainer) -> None:
    actor_step(agent, trainer.batch())


def actor_step(agent: PARLAgent, batch: dict[str, np.ndarray]) -> float:
    """SAC/Cal-QL actor loss E[alpha log pi(a|s) - min Q(s, a)], a ~ pi reparameterized (the baseline
    PA-RL is compared against; needs a policy with `rsample_with_log_prob`, i.e. tanh-Gaussian). alpha
    is `entropy_alpha`, or tuned after each step toward entropy −action_dim (`entropy_autotune`)."""
    if not hasattr(agent.policy, "rsample_with_log_prob"):
        raise ValueError(f"policy_update 'reparameterized' needs the gaussian policy, not {agent.cfg.policy!r}")
    obs = agent.observation_tensors(batch)
    with training_mode(agent.policy, agent.critic), agent.loss_precision():
        actions, log_prob = agent.policy.rsample_with_log_prob(obs)
        features = agent.critic.encode(obs)
        q = agent.critic.q_values(features, actions.unsqueeze(1)).float().min(dim=0).values.squeeze(-1)  # (batch,)
    log_prob = log_prob.float().reshape(q.shape)
    alpha = agent.cfg.policy_update.entropy_alpha if agent.log_entropy_alpha is None else agent.log_entropy_alpha.exp().item()
    loss = (alpha * log_prob - q).mean()
    agent.stats.entropy_alpha = alpha
    agent.policy_step(loss, "actor", agent.cfg.policy_lr)
    agent.critic_optimizer.zero_grad(set_to_none=True)  # the actor loss must not train the critic
    if agent.log_entropy_alpha is not None:  # Cal-QL's temperature: toward entropy −action_dim
        target_entropy = -float(actions.shape[-1])
        alpha_loss = -(agent.log_entropy_alpha * (log_prob.detach() + target_entropy)).mean()
        agent.entropy_optimizer.zero_grad(set_to_none=True)
        alpha_loss.backward()
        agent.entropy_optimizer.step()
    agent.stats.policy_updates += 1
    agent.stats.policy_loss = loss.item()
    agent.stats.q_optimized = q.mean().item()
    return loss.item()


def filtered_bc(agent: PARLAgent, trainer: Trainer) -> None:
    clone_successes(agent, trainer.offline, trainer.online, agent.rng)


def none(agent: PARLAgent, trainer: Trainer) -> None:
    return None


POLICY_UPDATES: dict[str, Callable[[PARLAgent, Trainer], None]] = {
    "distill": distill,
    "reparameterized": reparameterized,
    "filtered_bc": filtered_bc,
    "none": none,
}
