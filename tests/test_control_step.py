"""The static and compiled paths of action optimization and of the learner update compute the same
rule as the eager autograd reference (issue 25): analytic dQ/da, one critic pass per local step,
Gumbel-max softmax selection, diffusion sampling from noise drawn up front, fused Adam."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from parl_robot.config import LearnerConfig, with_overrides
from parl_robot.nets.critic import TwinCritic
from parl_robot.nets.critic_ascent import first_layer_state_part, q_and_action_gradient, q_only, stack_heads
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.policies.diffusion import DiffusionPolicy
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, optimize_actions
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.control_step import ControlStep
from parl_robot.rl.static_optimizer import candidate_count, optimize_actions_static

SPEC = ObservationSpec(state_dim=3)


def _critic(members=2, bins=0, seed=0, dtype=torch.float64) -> TwinCritic:
    torch.manual_seed(seed)
    critic = TwinCritic(SPEC, 2, hidden=32, layers=3, hl_gauss_bins=bins, value_range=(-10.0, 2.0), members=members)
    with torch.no_grad():  # away from initialization, so heads, norms and biases all differ
        for parameter in critic.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return critic.to(dtype).eval()


@pytest.mark.parametrize("members,bins,ensemble", [(2, 0, "min"), (3, 0, "mean"), (2, 11, "min"), (10, 0, "mean")])
def test_analytic_q_and_action_gradient_equal_autograd(members, bins, ensemble):
    critic = _critic(members, bins)
    features = critic.encode({"state": torch.randn(4, 3, dtype=torch.float64)})
    actions = (torch.rand(4, 6, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    heads = critic.q_values(features, actions)
    reference = heads.mean(0) if ensemble == "mean" else heads.min(0).values
    reference_gradient = torch.autograd.grad(reference.sum(), actions)[0]

    stacked = stack_heads(critic)
    state_part = first_layer_state_part(stacked, features.detach())
    q, gradient = q_and_action_gradient(stacked, state_part, actions.detach(), ensemble)
    torch.testing.assert_close(q, reference.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(gradient, reference_gradient, rtol=0, atol=1e-12)
    torch.testing.assert_close(q_only(stacked, state_part, actions.detach(), ensemble), reference.detach(), rtol=0, atol=1e-12)
    assert gradient.abs().max() > 1e-3  # a real gradient, not a vanishing one that any formula would match


@pytest.mark.parametrize("local_search", ["accepted_only", "best_iterate"])
@pytest.mark.parametrize("dataset_slot", [None, "extra", "replace_worst"])
@pytest.mark.parametrize("ensemble,steps", [("min", 8), ("mean", 8), ("min", 1)])
def test_static_optimizer_equals_the_eager_reference(local_search, dataset_slot, ensemble, steps):
    critic = _critic(members=3, bins=0, seed=1)
    torch.manual_seed(2)
    features = critic.encode({"state": torch.randn(5, 3, dtype=torch.float64)})
    samples = torch.rand(5, 12, 2, dtype=torch.float64) * 2 - 1
    dataset = torch.rand(5, 2, dtype=torch.float64) * 2 - 1 if dataset_slot else None
    cfg = ActionOptimizerConfig(num_kept=4, local_steps=steps, step_size=0.2, local_search=local_search,
                                dataset_action_slot=dataset_slot or "extra", ensemble=ensemble)
    eager = optimize_actions(critic, features, samples, cfg, dataset)
    static = optimize_actions_static(critic, features, samples, cfg, dataset)
    for name in ("actions", "candidates", "q_values", "initial_q_values", "sample_q_values"):
        torch.testing.assert_close(getattr(static, name), getattr(eager, name), rtol=0, atol=1e-10, msg=name)
    moved = (static.q_values > static.initial_q_values).sum().item()
    if local_search == "accepted_only" and ensemble == "min" and steps == 8:  # both accepted and rejected steps ran
        assert 0 < moved < static.q_values.numel()


def test_a_rejected_candidate_stops_even_if_a_later_step_would_improve():
    """Accepted-only with one critic pass per step: a rejected candidate keeps its place and never steps
    again (the static path keeps stepping masked candidates, the eager one stops them)."""
    critic = _critic(members=2, seed=3)
    torch.manual_seed(4)
    features = critic.encode({"state": torch.randn(3, 3, dtype=torch.float64)})
    samples = torch.rand(3, 6, 2, dtype=torch.float64) * 2 - 1
    cfg = ActionOptimizerConfig(num_kept=6, local_steps=30, step_size=2.0)  # large steps overshoot the peaks
    eager = optimize_actions(critic, features, samples, cfg)
    static = optimize_actions_static(critic, features, samples, cfg)
    torch.testing.assert_close(static.candidates, eager.candidates, rtol=0, atol=1e-10)
    assert (static.q_values == static.initial_q_values).any()  # some candidates were rejected at once


def test_gumbel_max_softmax_selection_draws_with_the_softmax_probabilities():
    critic = _critic(seed=5)
    features = critic.encode({"state": torch.zeros(1, 3, dtype=torch.float64)})
    torch.manual_seed(6)
    samples = torch.rand(1, 5, 2, dtype=torch.float64) * 2 - 1
    greedy = ActionOptimizerConfig(num_kept=5, local_steps=0)
    q_values = optimize_actions_static(critic, features, samples, greedy).q_values[0]
    # A temperature at which the softmax is far from uniform and from one certain candidate: there,
    # Gumbel-max with the noise's sign flipped (a different distribution) is 0.05 off.
    temperature = float(q_values.max() - q_values.min()) / 3.0
    cfg = ActionOptimizerConfig(num_kept=5, local_steps=0, selection="softmax", temperature=temperature)
    draws = 40000
    result = optimize_actions_static(critic, features.expand(draws, -1), samples.expand(draws, -1, -1), cfg,
                                     selection_noise=torch.rand(draws, 5, dtype=torch.float64))
    chosen = (result.actions.unsqueeze(1) == result.candidates).all(-1).double().mean(0)  # frequency per candidate
    expected = torch.softmax(result.q_values[0] / temperature, dim=0)
    assert expected.min() > 0.01 and expected.max() < 0.8  # a real distribution, not one certain candidate
    torch.testing.assert_close(chosen, expected, rtol=0, atol=0.01)
    with pytest.raises(ValueError, match=r"^softmax selection needs selection_noise \(uniform, one per candidate\)$"):
        optimize_actions_static(critic, features, samples, cfg)


def test_diffusion_sampling_from_noise_drawn_up_front_is_the_same_sample():
    torch.manual_seed(0)
    policy = DiffusionPolicy(SPEC, 2, hidden=32, blocks=2).eval()
    obs = {"state": torch.randn(3, 3)}
    torch.manual_seed(7)
    sampled = policy.sample(obs, 5)
    torch.manual_seed(7)
    noise = policy.sampling_noise(3, 5, "cpu")
    assert noise.shape == (policy.diffusion_steps, 15, 2)
    torch.testing.assert_close(policy.sample_from_noise(policy.encoder(obs), 5, noise), sampled, rtol=0, atol=0)


def _agent(path: str, changes: dict | None = None) -> PARLAgent:
    cfg = with_overrides(LearnerConfig(), {
        "policy_hidden": 32, "policy_blocks": 2, "critic.hidden": 32, "critic.layers": 2, "optimizer.num_samples": 8,
        "optimizer.num_kept": 3, "optimizer.local_steps": 4, "optimizer.step_size": 0.1, "compute_path": path,
        # argmax: softmax selection draws the same distribution on both paths from different random numbers
        "policy_update.distill_selection": "argmax",
        **(changes or {})})
    return PARLAgent(cfg, SPEC, action_dim=2)


def _batch(rng: np.random.Generator, size: int = 12) -> dict[str, np.ndarray]:
    return {"state": rng.normal(size=(size, 3)).astype(np.float32), "next_state": rng.normal(size=(size, 3)).astype(np.float32),
            "action": rng.uniform(-1, 1, (size, 2)).astype(np.float32), "reward": -np.ones(size, np.float32),
            "done": np.zeros(size, np.float32), "mc_return": np.full(size, -5.0, np.float32),
            "episode_success": (np.arange(size) % 2).astype(np.float32)}


@pytest.mark.parametrize("changes", [{}, {"critic.cql_term": "optimized_actions", "optimizer.local_search": "best_iterate",
                                          "optimizer.dataset_action_slot": "replace_worst", "critic.members": 4,
                                          "critic.sampled_members": 2, "optimizer.q_ensemble": "mean"}])
def test_static_agent_acts_and_learns_as_the_eager_agent(changes):
    """Same seed, same batches: the static path's actions, losses and weights follow the eager path's
    (fused Adam and the batched critic differ from the reference only by float32 rounding)."""
    agents = [_agent(path, changes) for path in ("eager", "static")]
    assert agents[1].critic_optimizer.defaults["fused"] and not agents[0].critic_optimizer.defaults["fused"]
    for agent in agents:
        rng = np.random.default_rng(0)
        torch.manual_seed(0)  # the agents draw from torch's global generator
        agent.trace = []
        for _ in range(3):
            batch = _batch(rng)
            agent.trace.append(agent.update_critic(batch))
            agent.trace.append(agent.update_policy(batch))
            agent.trace.append(agent.stats.q_optimization_gain)
            action, q = agent.act({"state": batch["state"][0]})
            agent.trace += [*action.tolist(), q]
    np.testing.assert_allclose(agents[1].trace, agents[0].trace, rtol=1e-4, atol=1e-5)
    for (name, eager), static in zip(agents[0].critic.state_dict().items(), agents[1].critic.state_dict().values()):
        torch.testing.assert_close(static, eager, rtol=1e-4, atol=1e-5, msg=name)


def test_control_step_static_equals_eager_for_a_diffusion_policy():
    torch.manual_seed(0)
    policy = DiffusionPolicy(SPEC, 2, hidden=32, blocks=2).eval()
    critic = _critic(seed=8, dtype=torch.float32)
    cfg = ActionOptimizerConfig(num_kept=4, local_steps=6, step_size=0.1)
    obs = {"state": torch.randn(2, 3)}
    results = []
    for path in ("eager", "static"):
        torch.manual_seed(9)
        results.append(ControlStep(policy, critic, cfg, 16, path)(obs))
    torch.testing.assert_close(results[1].actions, results[0].actions, rtol=0, atol=1e-5)
    torch.testing.assert_close(results[1].samples, results[0].samples, rtol=0, atol=0)
    with pytest.raises(ValueError, match="eager', 'static', 'compiled"):
        ControlStep(policy, critic, cfg, 16, "graph")


@pytest.mark.slow
def test_compiled_control_step_and_update_equal_the_eager_path():
    """torch.compile (Inductor's C++ kernels here; CUDA graphs on a GPU) on a small network: the same
    actions and losses as eager, with the randomness drawn outside the graph. Compiles for ~1-3 min."""
    import torch._inductor.config

    # Compiled graphs draw from the eager generator. `config.patch`, not monkeypatch: undoing a
    # monkeypatched Inductor option deletes it, and every later compile in the process then fails.
    with torch._inductor.config.patch(fallback_random=True):
        changes = {"diffusion_steps": 2, "optimizer.local_steps": 2}
        agents = [_agent(path, changes) for path in ("eager", "compiled")]
        for agent in agents:
            rng = np.random.default_rng(1)
            torch.manual_seed(1)
            agent.trace = []
            for _ in range(2):
                batch = _batch(rng)
                agent.trace += [agent.update_critic(batch), agent.update_policy(batch)]
                action, q = agent.act({"state": batch["state"][0]})
                agent.trace += [*action.tolist(), q]
    np.testing.assert_allclose(agents[1].trace, agents[0].trace, rtol=1e-4, atol=1e-5)


def test_image_networks_use_channels_last_weights_on_the_fast_paths_with_the_same_outputs():
    spec = ObservationSpec(state_dim=3, image_shape=(32, 32, 3))
    cfg = with_overrides(LearnerConfig(), {"observation": "image", "policy_hidden": 32, "policy_blocks": 1,
                                           "critic.hidden": 32, "critic.layers": 1})
    agents = {path: PARLAgent(with_overrides(cfg, {"compute_path": path}), spec, action_dim=2) for path in ("eager", "static")}
    convolution = agents["static"].critic.encoder.stem[0].weight
    assert convolution.is_contiguous(memory_format=torch.channels_last) and not convolution.is_contiguous()
    assert agents["eager"].critic.encoder.stem[0].weight.is_contiguous()
    obs = {"state": torch.randn(2, 3), "image": torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8)}
    with torch.no_grad():
        torch.testing.assert_close(agents["static"].critic.encode(obs), agents["eager"].critic.encode(obs), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(agents["static"].policy.encoder(obs), agents["eager"].policy.encoder(obs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("observation", ["state", "image"])
def test_bfloat16_updates_follow_the_float32_updates(observation):
    """update_precision bfloat16: the loss passes in bf16 autocast give losses within bf16 rounding of
    float32's, weights and optimizer state stay float32, and the weights move as float32's do (the
    same direction; TD targets and action optimization are float32 on both)."""
    spec = SPEC if observation == "state" else ObservationSpec(state_dim=3, image_shape=(32, 32, 3))
    changes = {"observation": observation, "critic.cql_alpha": 1.0}
    agents = {}
    for precision in ("float32", "bfloat16"):
        cfg = with_overrides(LearnerConfig(), {
            "policy_hidden": 32, "policy_blocks": 2, "critic.hidden": 32, "critic.layers": 2, "optimizer.num_samples": 8,
            "optimizer.num_kept": 3, "optimizer.local_steps": 4, "policy_update.distill_selection": "argmax",
            "update_precision": precision, **changes})
        agent = agents[precision] = PARLAgent(cfg, spec, action_dim=2)
        start = {name: tensor.clone() for name, tensor in agent.critic.state_dict().items()}
        rng = np.random.default_rng(0)
        torch.manual_seed(0)
        agent.trace = []
        for _ in range(2):
            batch = _batch(rng)
            if observation == "image":
                batch["image"] = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
                batch["next_image"] = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
            agent.trace += [agent.update_critic(batch), agent.behaviour_clone(batch), agent.update_policy(batch)]
        agent.moved = torch.cat([(agent.critic.state_dict()[name] - start[name]).flatten() for name in start
                                 if start[name].is_floating_point()])
    bf16, fp32 = agents["bfloat16"], agents["float32"]
    np.testing.assert_allclose(bf16.trace, fp32.trace, rtol=3e-2, atol=1e-2)
    assert all(p.dtype == torch.float32 for p in [*bf16.critic.parameters(), *bf16.policy.parameters()])
    assert all(state["exp_avg"].dtype == torch.float32 for state in bf16.critic_optimizer.state.values())
    # Adam moves weights with near-zero gradients by ~lr either way, so rounding flips a few (0.94 measured
    # with images); an unrelated update would be near 0, a wrong-signed loss near -1.
    assert torch.nn.functional.cosine_similarity(bf16.moved, fp32.moved, dim=0) > 0.9
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert bf16.loss_precision().fast_dtype == torch.bfloat16 and not fp32.loss_precision()._enabled


def test_candidate_count_is_the_width_of_the_selection_noise():
    """The static control step draws one uniform per candidate: m kept samples (at most k), plus the
    dataset action when it is an extra candidate, not when it replaces the worst kept one."""
    extra = ActionOptimizerConfig(num_kept=4)
    replace_worst = ActionOptimizerConfig(num_kept=4, dataset_action_slot="replace_worst")
    assert [candidate_count(extra, 12, False), candidate_count(extra, 12, True), candidate_count(extra, 3, True),
            candidate_count(replace_worst, 12, True), candidate_count(replace_worst, 3, False)] == [4, 5, 4, 4, 3]
    critic = _critic(seed=7)
    torch.manual_seed(8)
    features = critic.encode({"state": torch.randn(2, 3, dtype=torch.float64)})
    samples, dataset = torch.rand(2, 12, 2, dtype=torch.float64) * 2 - 1, torch.rand(2, 2, dtype=torch.float64) * 2 - 1
    for cfg in (extra, replace_worst):
        softmax = replace(cfg, selection="softmax")
        width = candidate_count(softmax, 12, True)
        result = optimize_actions_static(critic, features, samples, softmax, dataset, torch.rand(2, width, dtype=torch.float64))
        assert result.candidates.shape[1] == width


def test_each_path_runs_its_own_computation(monkeypatch):
    """The equality tests cannot tell the paths apart (swapping them passes), so: eager runs the autograd
    optimizer on `policy.sample`; static the static optimizer on the same samples, with selection noise
    only for softmax; compiled hands the static step to torch.compile with fullgraph and static shapes
    (CUDA graphs on CUDA only) and samples inside the graph when the policy can sample from noise; a
    critic without the analytic gradient (no hidden layer) falls back to eager."""
    import parl_robot.rl.control_step as control_step_module

    torch.manual_seed(0)
    policy = DiffusionPolicy(SPEC, 2, hidden=32, blocks=2).eval()
    critic = _critic(seed=8, dtype=torch.float32)
    obs = {"state": torch.randn(2, 3)}
    calls: list[str] = []
    eager, static = control_step_module.optimize_actions, control_step_module.optimize_actions_static
    monkeypatch.setattr(control_step_module, "optimize_actions", lambda *a, **k: calls.append("eager") or eager(*a, **k))

    def static_spy(*args, **kwargs):
        calls.append(f"static noise={kwargs['selection_noise'] is not None}")
        return static(*args, **kwargs)

    monkeypatch.setattr(control_step_module, "optimize_actions_static", static_spy)
    argmax, softmax = ActionOptimizerConfig(num_kept=4, local_steps=2), ActionOptimizerConfig(num_kept=4, selection="softmax")
    ControlStep(policy, critic, argmax, 8, "eager")(obs)
    ControlStep(policy, critic, argmax, 8, "static")(obs)
    ControlStep(policy, critic, softmax, 8)(obs)  # static is the default path
    assert calls == ["eager", "static noise=False", "static noise=True"]
    shallow = TwinCritic(SPEC, 2, hidden=32, layers=0, hl_gauss_bins=0, value_range=(-10.0, 2.0), members=2)
    assert ControlStep(policy, shallow, argmax, 8, "static").path == "eager"
    assert ControlStep(policy, critic, argmax, 8, "static").samples_in_graph is False
    compiled_with: list = []
    monkeypatch.setattr(torch, "compile", lambda function, **options: compiled_with.append((function, options)) or function)
    step = ControlStep(policy, critic, argmax, 8, "compiled")
    assert step.samples_in_graph is True and step.path == "compiled"
    assert compiled_with == [(step._static_step, {"fullgraph": True, "dynamic": False, "mode": None})]  # CPU: no CUDA graphs
    calls.clear()
    step(obs)
    assert calls == ["static noise=False"]
    plain_sampler = torch.nn.Module()  # a policy that cannot sample from given noise samples before the graph
    plain_sampler.sample = policy.sample
    assert ControlStep(plain_sampler, critic, argmax, 8, "compiled").samples_in_graph is False
