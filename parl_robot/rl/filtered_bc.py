"""Behaviour cloning on transitions of successful episodes (demos and successful online episodes):
the extra supervised steps after each online policy update (`learner.policy_update.filtered_bc_steps`,
0 = PA-RL as published) and the `filtered_bc` baseline's policy update. Distillation improves the policy
slowly; cloning its own successes at once lifts its early online episodes (on cup_to_rack, 10 seeds,
with `gripper_from: policy`: 76 % instead of 68 % success in online episodes 1-20,
docs/finetune_study.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from parl_robot.rl.replay_buffer import ReplayBuffer, sample_successful

if TYPE_CHECKING:
    from parl_robot.rl.agent import PARLAgent


def clone_successes(agent: PARLAgent, offline: ReplayBuffer, online: ReplayBuffer, rng: np.random.Generator) -> bool:
    """One behaviour-cloning step on successful transitions; False (no step) when none was drawn."""
    batch = sample_successful(offline, online, agent.cfg.schedule.batch_size, rng)
    if batch is None:
        return False
    agent.behaviour_clone(batch)
    return True


def filtered_bc_steps(agent: PARLAgent, offline: ReplayBuffer, online: ReplayBuffer, rng: np.random.Generator) -> int:
    """`learner.policy_update.filtered_bc_steps` steps (fewer when no successful transition is drawn);
    returns how many."""
    taken = 0
    while taken < agent.cfg.policy_update.filtered_bc_steps and clone_successes(agent, offline, online, rng):
        agent.stats.filtered_bc_updates += 1
        taken += 1
    return taken
