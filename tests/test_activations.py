"""The vectorized CPU Mish is the same function as torch's (values and gradients), falls back to torch's
kernel where its formula would overflow or off the CPU, and is what the critic and the diffusion
policy run on CPU."""

from __future__ import annotations

import pytest
import torch

from parl_robot.nets import activations
from parl_robot.nets.activations import mish
from parl_robot.nets.critic import TwinCritic
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.policies.diffusion import DiffusionPolicy


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 3e-6), (torch.float64, 1e-12)])
def test_values_and_gradients_match_torch_mish_over_the_whole_range(dtype, tolerance):
    x = torch.linspace(-120.0, 120.0, 200_001, dtype=dtype).requires_grad_()
    ours, reference = mish(x), torch.nn.functional.mish(x)
    assert torch.allclose(ours, reference, atol=tolerance, rtol=tolerance)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    assert torch.allclose(ours_grad, reference_grad, atol=tolerance, rtol=tolerance)
    assert torch.autograd.gradcheck(mish, (torch.randn(64, dtype=torch.float64, requires_grad=True) * 4,))


def test_non_finite_inputs_behave_like_torch_mish():
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0])
    assert torch.equal(mish(x).isnan(), torch.nn.functional.mish(x).isnan())
    finite = ~mish(x).isnan()
    assert torch.equal(mish(x)[finite], torch.nn.functional.mish(x)[finite])


def test_the_input_is_not_modified_and_the_output_is_a_new_tensor():
    x = torch.randn(32, 16)
    before = x.clone()
    y = mish(x)
    assert torch.equal(x, before) and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_uses_torch_kernel(dtype, monkeypatch):
    calls = []
    monkeypatch.setattr(activations._VectorizedMish, "apply", lambda x: calls.append(x) or x)
    x = (torch.randn(100) * 15).to(dtype)  # e(e + 2) would overflow float16 beyond x ≈ 5.5
    assert torch.equal(mish(x), torch.nn.functional.mish(x)) and not calls
    assert mish(x).isfinite().all()


def test_off_the_cpu_it_is_torch_kernel(monkeypatch):
    calls = []
    monkeypatch.setattr(activations._VectorizedMish, "apply", lambda x: calls.append(x) or x)
    y = mish(torch.empty(4, 8, device="meta"))
    assert y.device.type == "meta" and y.shape == (4, 8) and not calls


def _count_vectorized_calls(monkeypatch) -> list:
    calls = []
    original = activations._VectorizedMish.apply
    monkeypatch.setattr(activations._VectorizedMish, "apply", lambda x: calls.append(x.shape) or original(x))
    return calls


def test_critic_and_diffusion_policy_run_it_on_cpu_and_agree_with_torch_kernel(monkeypatch):
    torch.manual_seed(0)
    spec = ObservationSpec(12)
    critic = TwinCritic(spec, action_dim=7, hidden=32, layers=2)
    policy = DiffusionPolicy(spec, action_dim=7, hidden=32, blocks=2)
    obs = {"state": torch.randn(5, 12)}
    actions = torch.rand(5, 3, 7) * 2 - 1

    calls = _count_vectorized_calls(monkeypatch)
    q_fast = critic(obs, actions)
    torch.manual_seed(1)
    samples_fast = policy.sample(obs, 4)
    assert len(calls) >= 2 * 2 + 5 * 3  # two layers of each head; 5 denoising steps x (time MLP + 2 blocks)

    monkeypatch.setattr(activations, "use_vectorized_cpu_mish", False)
    calls.clear()
    q_torch = critic(obs, actions)
    torch.manual_seed(1)
    samples_torch = policy.sample(obs, 4)
    assert not calls
    assert torch.allclose(q_fast, q_torch, atol=1e-5)
    assert torch.allclose(samples_fast, samples_torch, atol=1e-4)
