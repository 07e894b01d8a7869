"""How the policy learns in each online update (`learner.policy_update`), one function per rule.

`distill` is PA-RL: the policy imitates the critic's optimized actions with its own supervised loss
(`PARLAgent.update_policy`). The others are what the fine-tuning study compares it against:
`reparameterized` (the standard Cal-QL actor, tanh-Gaussian only), `filtered_bc` (behaviour cloning
on transitions of successful episodes, no critic in the policy's loss) and `none` (the policy stays
the offline one; the critic still re-ranks and optimizes its samples when acting).
Each takes the agent and the trainer, whose `batch()` draws the product's mixed replay batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from parl_robot.rl.replay_buffer import sample_successful

if TYPE_CHECKING:
    from parl_robot.rl.agent import PARLAgent
    from parl_robot.rl.trainer import Trainer


def distill(agent: PARLAgent, trainer: Trainer) -> None:
    agent.update_policy(trainer.batch())


def reparameterized(agent: PARLAgent, trainer: Trainer) -> None:
    agent.update_actor_reparameterized(trainer.batch())


def filtered_bc(agent: PARLAgent, trainer: Trainer) -> None:
    batch = sample_successful(trainer.offline, trainer.online, agent.cfg.batch_size, agent.rng)
    if batch is not None:  # no successful transition drawn: nothing to clone
        agent.behaviour_clone(batch)


def none(agent: PARLAgent, trainer: Trainer) -> None:
    return None


POLICY_UPDATES: dict[str, Callable[[PARLAgent, Trainer], None]] = {
    "distill": distill,
    "reparameterized": reparameterized,
    "filtered_bc": filtered_bc,
    "none": none,
}
