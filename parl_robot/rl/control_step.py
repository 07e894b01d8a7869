"""One PA-RL control step (k policy samples, top m by Q, T local ascent steps, selection) for a batch of
states, on one of three paths with the same rule:

- "eager": the reference — `policy.sample` and `action_optimizer.optimize_actions` (autograd per
  local step, early exit when no candidate is still improving).
- "static": `policy.sample_from_noise` with the noise drawn up front and
  `static_optimizer.optimize_actions_static` (analytic ∂Q/∂a for all heads in one batched pass, one
  critic pass per local step, no host synchronisation). Fewer operator calls and less work on any
  device; no compilation.
  A critic other than `TwinCritic` falls back to "eager".
- "compiled": the static step through `torch.compile` (fullgraph, static shapes): on CUDA with CUDA
  graphs (mode "reduce-overhead"), so a step is one graph replay instead of ~1,450 kernel launches;
  on CPU, Inductor's fused C++ kernels. The first call per input shape compiles (tens of seconds on a
  CPU); the randomness (diffusion noise, selection noise) is drawn outside the graph.

Given the same random state, the three paths return the same action up to floating-point rounding
(tests/test_control_step.py); `benchmarks/action_optimization.py` reports latency and operator calls
per step for each.
"""

from __future__ import annotations

from typing import Callable

import torch

from parl_robot.nets.critic import TwinCritic
from parl_robot.nets.critic_ascent import supports_critic
from parl_robot.policies.base import Observation
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, OptimizedActions, optimize_actions
from parl_robot.rl.static_optimizer import candidate_count, optimize_actions_static

CONTROL_STEP_PATHS = ("eager", "static", "compiled")


class ControlStep:
    def __init__(self, policy: torch.nn.Module, critic: TwinCritic, cfg: ActionOptimizerConfig, num_samples: int,
                 path: str = "static"):
        if path not in CONTROL_STEP_PATHS:
            raise ValueError(f"control step path must be one of {CONTROL_STEP_PATHS}, got {path!r}")
        if not supports_critic(critic):
            path = "eager"  # the analytic gradient covers TwinCritic's heads only; any other critic: the reference
        self.policy, self.critic, self.cfg, self.num_samples, self.path = policy, critic, cfg, num_samples, path
        # Compiled: policies that can sample from given noise run inside the graph; others (and the
        # static path, where it makes no difference) call `policy.sample` before it.
        self.samples_in_graph = (path == "compiled" and hasattr(policy, "sample_from_noise")
                                 and hasattr(policy, "sampling_noise"))
        self._step: Callable = self._static_step
        if path == "compiled":
            device = next(critic.parameters()).device
            mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs on the GPU
            self._step = torch.compile(self._static_step, fullgraph=True, dynamic=False, mode=mode)

    def __call__(self, obs: Observation) -> OptimizedActions:
        if self.path == "eager":
            samples = self.policy.sample(obs, self.num_samples)
            with torch.no_grad():
                features = self.critic.encode(obs)
            result = optimize_actions(self.critic, features, samples, self.cfg)
            result.samples = samples
            return result
        batch, device = obs["state"].shape[0], obs["state"].device
        if self.samples_in_graph:
            sampling = self.policy.sampling_noise(batch, self.num_samples, device)
        else:
            with torch.no_grad():
                sampling = self.policy.sample(obs, self.num_samples)  # (batch, k, A), drawn eagerly
        selection_noise = None
        if self.cfg.selection == "softmax":
            selection_noise = torch.rand(batch, candidate_count(self.cfg, self.num_samples, False), device=device)
        outputs = self._step(obs, sampling, selection_noise)
        if self.path == "compiled" and device.type == "cuda":
            outputs = tuple(tensor.clone() for tensor in outputs)  # a CUDA graph's outputs are reused by its next replay
        return OptimizedActions(*outputs)

    def _static_step(self, obs: Observation, sampling: torch.Tensor, selection_noise: torch.Tensor | None):
        with torch.no_grad():
            if self.samples_in_graph:
                samples = self.policy.sample_from_noise(self.policy.encoder(obs), self.num_samples, sampling)
            else:
                samples = sampling
            features = self.critic.encode(obs)
            result = optimize_actions_static(self.critic, features, samples, self.cfg, selection_noise=selection_noise)
        return result.actions, result.candidates, result.q_values, result.initial_q_values, result.sample_q_values, samples
