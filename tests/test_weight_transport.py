"""Published policy weights: chunking, verification, version order, and an acting copy of the agent
that acts exactly as the learner's agent does."""

import random

import numpy as np
import pytest
import torch

from parl_robot.config import load_config
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.observation import STATE_DIM
from parl_robot.rl.acting_weights import acting_weights, load_acting_weights
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.losses import achievable_returns
from parl_robot.rl.weight_transport import WeightsAssembler, WeightsHeader, encode_weights


def _weights(seed: int = 0, size: int = 300_000) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {"policy": {"w": torch.randn(size, generator=generator), "b": torch.arange(5)}, "critic": {"q": torch.ones(3)}}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        _equal(a[k], b[k]) if isinstance(a[k], dict) else torch.equal(a[k], b[k]) for k in a)


def test_chunks_in_any_order_with_duplicates_give_back_the_weights():
    weights = _weights()
    chunks = encode_weights(weights, version=3, run="a", chunk_bytes=100_000)
    assert len(chunks) == 13 and {h.chunks for h, _ in chunks} == {13}
    shuffled = chunks + chunks[:4]
    random.Random(0).shuffle(shuffled)
    assembler, delivered = WeightsAssembler(), []
    for header, payload in shuffled:
        result = assembler.add(WeightsHeader.from_json(header.to_json()), payload)
        if result is not None:
            delivered.append(result)
    assert len(delivered) == 1 and delivered[0][0] == 3 and _equal(delivered[0][1], weights)


def test_a_small_payload_is_one_chunk_and_a_version_is_delivered_once():
    weights = {"w": torch.ones(3)}
    chunks = encode_weights(weights, version=0, run="a")
    assert len(chunks) == 1 and chunks[0][0].chunks == 1
    assembler = WeightsAssembler()
    assert assembler.add(*chunks[0])[0] == 0
    assert assembler.add(*chunks[0]) is None  # the same version again (a reconnect's redelivery): not loaded twice


def test_never_more_chunks_than_the_history_holds():
    chunks = encode_weights(_weights(size=1_000_000), version=0, run="a", max_chunks=8, chunk_bytes=1024)
    assert len(chunks) == 8 and sum(len(p) for _, p in chunks) == chunks[0][0].total_bytes


def test_a_corrupted_chunk_is_rejected_and_the_next_version_still_loads():
    assembler = WeightsAssembler()
    chunks = encode_weights(_weights(0), version=1, run="a", chunk_bytes=200_000)
    header, payload = chunks[1]
    damaged = [chunks[0], (header, payload[:-1] + bytes([payload[-1] ^ 1]))] + chunks[2:]
    assert all(assembler.add(h, p) is None for h, p in damaged)
    assert assembler.delivered_version == -1 and "version 1" in assembler.rejected[0]
    good = _weights(1)
    results = [assembler.add(h, p) for h, p in encode_weights(good, version=2, run="a", chunk_bytes=200_000)]
    assert results[-1][0] == 2 and _equal(results[-1][1], good)


def test_newer_version_replaces_an_incomplete_older_one_and_older_ones_are_ignored():
    assembler = WeightsAssembler()
    old = encode_weights(_weights(0), version=4, run="a", chunk_bytes=200_000)
    new = encode_weights(_weights(1), version=5, run="a", chunk_bytes=200_000)
    assert assembler.add(*old[0]) is None
    results = [assembler.add(h, p) for h, p in new[:1] + old[1:] + new[1:]]  # v4's stragglers arrive mid-v5
    assert [r[0] for r in results if r is not None] == [5]
    assert all(assembler.add(h, p) is None for h, p in old)  # older than the delivered version
    assert assembler.delivered_version == 5


def test_a_restarted_learner_is_a_new_run_whose_versions_start_over():
    assembler = WeightsAssembler()
    assert [r for r in (assembler.add(h, p) for h, p in encode_weights(_weights(0), version=5, run="a")) if r][0][0] == 5
    restarted = _weights(1)
    results = [r for r in (assembler.add(h, p) for h, p in encode_weights(restarted, version=0, run="b")) if r]
    assert results[0][0] == 0 and _equal(results[0][1], restarted)


@pytest.mark.parametrize("text, says", [
    ("not json", "not JSON"),
    ('{"version": 1}', "needs run, version"),
    ('{"run": "", "version": 1, "sha256": "' + "a" * 64 + '", "total_bytes": 3, "chunks": 1, "index": 0}', "run must"),
    ('{"run": "a", "version": 1, "sha256": "ab", "total_bytes": 3, "chunks": 1, "index": 0}', "64 hex"),
    ('{"run": "a", "version": 1, "sha256": "' + "a" * 64 + '", "total_bytes": 3, "chunks": 2, "index": 2}', "out of range"),
    ('{"run": "a", "version": "1", "sha256": "' + "a" * 64 + '", "total_bytes": 3, "chunks": 1, "index": 0}', "integers"),
    ('{"run": "a", "version": -1, "sha256": "' + "a" * 64 + '", "total_bytes": 3, "chunks": 1, "index": 0}', "out of range"),
    ('{"run": "a", "version": 1, "sha256": "' + "a" * 64 + '", "total_bytes": -1, "chunks": 1, "index": 0}', "out of range"),
])
def test_bad_headers_are_refused_with_the_reason(text, says):
    with pytest.raises(ValueError, match=says):
        WeightsHeader.from_json(text)


def test_the_first_version_and_an_empty_payload_are_valid_headers():
    header = WeightsHeader.from_json('{"run": "a", "version": 0, "sha256": "' + "a" * 64 + '", "total_bytes": 0, "chunks": 1, "index": 0}')
    assert (header.version, header.total_bytes) == (0, 0)


class _Code:
    """A pickle that would run code when loaded: what a forged or corrupted publisher could send."""

    def __reduce__(self):
        return (print, ("loaded code",))


def test_a_payload_that_is_not_only_tensors_is_rejected_never_run():
    import hashlib
    import io

    buffer = io.BytesIO()
    torch.save({"policy": _Code()}, buffer)
    payload = buffer.getvalue()
    header = WeightsHeader("a", 1, hashlib.sha256(payload).hexdigest(), len(payload), 1, 0)
    assembler = WeightsAssembler()
    assert assembler.add(header, payload) is None
    assert "unreadable (UnpicklingError" in assembler.rejected[0]


def test_unreadable_payload_with_a_matching_checksum_is_rejected_not_loaded():
    import hashlib
    payload = b"not a torch file"
    header = WeightsHeader("a", 7, hashlib.sha256(payload).hexdigest(), len(payload), 1, 0)
    assembler = WeightsAssembler()
    assert assembler.add(header, payload) is None
    assert "unreadable" in assembler.rejected[0] and assembler.delivered_version == -1


def _agent(overrides: dict | None = None) -> PARLAgent:
    cfg = load_config(task="cup_to_rack", overlays=["cpu_demo"], overrides=overrides or {})
    value_range = achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, cfg.learner.critic.discount)
    return PARLAgent(cfg.learner, ObservationSpec(STATE_DIM), value_range=value_range)


def _perturbed(agent: PARLAgent) -> None:
    """Weights that differ from a fresh agent's: the trained policy, its moving average, the critic."""
    for network in (agent.policy, agent.policy_ema, agent.critic):
        if network is not None:
            with torch.no_grad():
                for parameter in network.parameters():
                    parameter.add_(0.05 * torch.randn_like(parameter))


@pytest.mark.parametrize("ema", [True, False])
def test_an_acting_copy_acts_exactly_as_the_learners_agent(ema):
    overrides = {} if ema else {"learner.policy_ema_rate": 0.0}
    torch.manual_seed(0)
    learner = _agent(overrides)
    assert (learner.policy_ema is not None) == ema  # acting samples from the moving average when there is one
    states = np.random.default_rng(0).normal(size=(64, STATE_DIM)).astype(np.float32)
    learner.fit_state_normalization(states)
    _perturbed(learner)
    torch.manual_seed(1)
    robot = _agent(overrides)
    chunks = encode_weights(acting_weights(learner), version=9, run="a")
    assembler = WeightsAssembler()
    version, weights = [r for r in (assembler.add(h, p) for h, p in chunks) if r is not None][0]
    load_acting_weights(robot, weights)
    assert version == 9
    for mine, theirs in ((robot.sampling_policy, learner.sampling_policy), (robot.critic, learner.critic)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(value, theirs_state[name]) for name, value in mine.state_dict().items())
    observation = {"state": states[3]}
    torch.manual_seed(5)
    learner_action, learner_q = learner.act(observation)
    torch.manual_seed(5)
    robot_action, robot_q = robot.act(observation)
    np.testing.assert_array_equal(learner_action, robot_action)
    assert learner_q == robot_q
    fresh = _agent(overrides)
    torch.manual_seed(5)
    assert not np.array_equal(fresh.act(observation)[0], learner_action)  # the weights made the difference


def test_weights_of_another_config_are_refused_naming_the_cause():
    learner = _agent({"learner.critic.hidden": 48})
    with pytest.raises(ValueError, match="robot host's config"):
        load_acting_weights(_agent(), acting_weights(learner))
    with pytest.raises(ValueError, match="'policy' and 'critic'"):
        load_acting_weights(_agent(), {"policy": {}})


def test_weights_of_another_policy_class_are_refused_naming_the_keys():
    with pytest.raises(ValueError, match=r"published policy weights do not fit this policy .*unexpected \[.+\], missing \[.+\]"):
        load_acting_weights(_agent(), acting_weights(_agent({"learner.policy": "gaussian"})))


def test_a_frozen_part_of_the_policy_is_not_sent_and_stays_as_loaded_on_the_robot():
    """As with OpenVLA's 4-bit base under LoRA: what is not trained is not sent, and the robot host's own
    copy (loaded from the same config) is kept."""
    overrides = {"learner.policy_ema_rate": 0.0}
    learner, robot = _agent(overrides), _agent(overrides)
    frozen = [name for name, _ in learner.policy.named_parameters()][:2]
    for agent in (learner, robot):
        for name, parameter in agent.policy.named_parameters():
            parameter.requires_grad_(name not in frozen)
    _perturbed(learner)
    robot_frozen_before = {name: robot.policy.state_dict()[name].clone() for name in frozen}
    weights = acting_weights(learner)
    assert not set(frozen) & set(weights["policy"])
    load_acting_weights(robot, weights)
    robot_state, learner_state = robot.policy.state_dict(), learner.policy.state_dict()
    assert all(torch.equal(robot_state[name], robot_frozen_before[name]) for name in frozen)
    assert all(torch.equal(robot_state[name], learner_state[name]) for name in weights["policy"])


def test_incomplete_or_malformed_weights_are_refused_saying_what_is_wrong():
    agent = _agent()
    weights = acting_weights(_agent())
    dropped = sorted(weights["critic"])[0]
    del weights["critic"][dropped]
    with pytest.raises(ValueError, match=rf"published critic weights do not fit this critic .*unexpected \[\], missing \['{dropped}'\]"):
        load_acting_weights(agent, weights)
    with pytest.raises(ValueError, match=r"must hold 'policy' and 'critic', got \['policy'\]"):
        load_acting_weights(agent, {"policy": {}})
    with pytest.raises(ValueError, match=r"must hold 'policy' and 'critic', got list"):
        load_acting_weights(agent, [1])
