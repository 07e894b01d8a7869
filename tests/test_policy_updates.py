"""The Cal-QL / SAC actor step of the `reparameterized` rule (parl_robot/rl/policy_updates.py), checked
against its formula on the very samples it drew: loss E[α log π(a|s) − min Q(s, a)], the networks'
modes during the pass, the critic left without gradients, the temperature's step toward entropy
−dim(A), and the stats."""

import math

import numpy as np
import pytest
import torch

from parl_robot.rl.agent import NumericalInstability
from parl_robot.rl.policy_updates import actor_step
from test_reference_options import batch, gaussian_agent


def spied(agent):
    """Record what the actor step's forward pass drew: the sample with its log-probability, the heads'
    Q values, and each network's mode at the time."""
    seen = {}
    sample, q_values = agent.policy.rsample_with_log_prob, agent.critic.q_values

    def spy_sample(obs):
        seen["policy_training"] = agent.policy.training
        seen["actions"], seen["log_prob"] = sample(obs)
        return seen["actions"], seen["log_prob"]

    def spy_q(features, actions):
        seen["critic_training"] = agent.critic.training
        seen["q_heads"] = q_values(features, actions)
        return seen["q_heads"]

    agent.policy.rsample_with_log_prob, agent.critic.q_values = spy_sample, spy_q
    return seen


@pytest.mark.parametrize("autotune", [False, True])
def test_the_actor_loss_is_alpha_log_pi_minus_the_smaller_q_on_its_own_samples(autotune):
    agent = gaussian_agent(**{"policy_update.entropy_autotune": autotune, "policy_update.entropy_alpha": 0.3,
                              "policy_update.entropy_lr": 0.01})
    seen = spied(agent)
    alpha = 0.3 if not autotune else agent.log_entropy_alpha.exp().item()
    log_alpha_before = None if not autotune else agent.log_entropy_alpha.item()
    loss = actor_step(agent, batch(np.random.default_rng(0), size=16))
    q = seen["q_heads"].detach().float().min(dim=0).values.squeeze(-1)
    log_prob = seen["log_prob"].detach().float().reshape(q.shape)
    assert loss == pytest.approx((alpha * log_prob - q).mean().item(), rel=1e-5)
    assert seen["policy_training"] and seen["critic_training"]  # the loss's pass in training mode
    assert not agent.policy.training and not agent.critic.training  # back in evaluation mode after
    assert all(p.grad is None for p in agent.critic.parameters())  # no actor gradient left on the critic
    assert agent.stats.policy_updates == 1 and agent.stats.policy_loss == pytest.approx(loss)
    assert agent.stats.q_optimized == pytest.approx(q.mean().item(), rel=1e-5)
    assert agent.stats.entropy_alpha == pytest.approx(alpha)
    if autotune:  # Adam's first step moves log α by the rate, toward entropy −dim(A)
        gap = (log_prob + -float(seen["actions"].shape[-1])).mean().item()  # log π + target: > 0 = entropy too low
        assert agent.log_entropy_alpha.item() - log_alpha_before == pytest.approx(0.01 * math.copysign(1.0, gap), rel=1e-3)
        # its loss −log α · (log π + target): the gradient on log α is −(mean log π + target)
        assert agent.log_entropy_alpha.grad.item() == pytest.approx(-gap, rel=1e-4)


def test_a_non_finite_actor_loss_is_refused_naming_the_actor_and_keeps_the_weights():
    agent = gaussian_agent()
    agent.critic.q_values = lambda features, actions: torch.full((2, actions.shape[0], 1), float("nan"))
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    with pytest.raises(NumericalInstability) as raised:
        actor_step(agent, batch(np.random.default_rng(0)))
    assert str(raised.value) == "actor loss is nan; update skipped, weights kept"
    assert all(torch.equal(before[k], v) for k, v in agent.policy.state_dict().items())


def test_the_reparameterized_rule_needs_the_gaussian_policy_and_says_so():
    from test_reference_options import agent_with

    agent = agent_with(**{"policy": "diffusion"})
    with pytest.raises(ValueError) as raised:
        actor_step(agent, batch(np.random.default_rng(0)))
    assert str(raised.value) == "policy_update 'reparameterized' needs the gaussian policy, not 'diffusion'"
