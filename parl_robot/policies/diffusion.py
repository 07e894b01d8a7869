"""DDPM diffusion policy (T=5 denoising steps, cosine schedule, LN-ResNet 256x3 noise model)."""

from __future__ import annotations

import math

import torch
from torch import nn

from parl_robot.nets.activations import Mish
from parl_robot.nets.encoders import ObservationSpec, build_encoder
from parl_robot.nets.mlp import LNResNet
from parl_robot.policies.base import Observation, repeat_features


def cosine_beta_schedule(num_steps: int, s: float = 0.008) -> torch.Tensor:
    """Betas of Nichol & Dhariwal's cosine schedule, clipped at 0.999."""
    t = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64) / num_steps
    alphas_cumprod = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=0.999).float()


class DiffusionPolicy(nn.Module):
    def __init__(
        self,
        spec: ObservationSpec,
        action_dim: int = 7,
        observation: str = "state",
        hidden: int = 256,
        blocks: int = 3,
        diffusion_steps: int = 5,
        time_dim: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.action_dim = action_dim
        self.diffusion_steps = diffusion_steps
        self.encoder = build_encoder(spec, observation, hidden)
        self.time_embedding = nn.Sequential(nn.Linear(1, time_dim), Mish(), nn.Linear(time_dim, time_dim))
        # Dropout in the noise model's blocks (the reference's DDPM: 0.1), active in training mode only.
        self.noise_model = LNResNet(self.encoder.output_dim + action_dim + time_dim, action_dim, hidden, blocks, dropout)
        betas = cosine_beta_schedule(diffusion_steps)
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1), alphas_cumprod[:-1]])
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", alphas)
        self.register_buffer("alphas_cumprod", alphas_cumprod)
        self.register_buffer(
            "posterior_variance", betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        )

    def predict_noise(self, features: torch.Tensor, noisy_actions: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        time = self.time_embedding(steps.float().unsqueeze(-1) / self.diffusion_steps)
        return self.noise_model(torch.cat([features, noisy_actions, time], dim=-1))

    @torch.no_grad()
    def sample(self, obs: Observation, num_samples: int) -> torch.Tensor:
        """Ancestral DDPM sampling with the clean-action estimate clipped to the action bounds at every
        step (x0-clipping, as diffusers' `clip_sample`). Clipping x_t itself instead is wrong for this
        schedule: the last cosine beta is 0.999, so the first reverse step divides the noise-prediction
        error by sqrt(alpha) = 0.03 and the clipped x_t then carries almost nothing of the model's
        prediction; the samples are biased, and re-training on them (distillation) compounds the bias
        until the policy collapses."""
        features = self.encoder(obs)  # (batch, F), once per state
        noise = self.sampling_noise(features.shape[0], num_samples, features.device)
        return self.sample_from_noise(features, num_samples, noise)

    def sampling_noise(self, batch: int, num_samples: int, device: torch.device | str) -> torch.Tensor:
        """The Gaussian draws of one `sample` call, (diffusion_steps, batch · num_samples, A): the
        starting noise, then the noise of each reverse step above 0, in the order `sample` uses them."""
        return torch.stack([torch.randn(batch * num_samples, self.action_dim, device=device)
                            for _ in range(self.diffusion_steps)])

    def sample_from_noise(self, features: torch.Tensor, num_samples: int, noise: torch.Tensor) -> torch.Tensor:
        """`sample` from encoded states (batch, F) and given `sampling_noise`: deterministic, static
        shapes (the captured control step draws the noise outside its graph)."""
        batch = features.shape[0]
        features = repeat_features(features, num_samples)  # (batch * n, F)
        actions = noise[0]
        for step in reversed(range(self.diffusion_steps)):
            steps = torch.full((actions.shape[0],), step, device=actions.device)
            predicted = self.predict_noise(features, actions, steps)
            alpha_bar = self.alphas_cumprod[step]
            clean = ((actions - torch.sqrt(1 - alpha_bar) * predicted) / torch.sqrt(alpha_bar)).clamp(-1.0, 1.0)
            if step == 0:
                actions = clean
                break
            alpha_bar_prev = self.alphas_cumprod[step - 1]
            # Posterior q(x_{t-1} | x_t, x_0) mean and variance (Ho et al. 2020, eq. 7).
            mean = (
                self.betas[step] * torch.sqrt(alpha_bar_prev) / (1 - alpha_bar) * clean
                + (1 - alpha_bar_prev) * torch.sqrt(self.alphas[step]) / (1 - alpha_bar) * actions
            )
            actions = mean + torch.sqrt(self.posterior_variance[step]) * noise[self.diffusion_steps - step]
        return actions.view(batch, num_samples, self.action_dim)

    def supervised_loss(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        """DDPM noise-prediction loss; no gradient flows through the denoising chain."""
        features = self.encoder(obs)
        steps = torch.randint(0, self.diffusion_steps, (actions.shape[0],), device=actions.device)
        noise = torch.randn_like(actions)
        alpha_bar = self.alphas_cumprod[steps].unsqueeze(-1)
        noisy = torch.sqrt(alpha_bar) * actions + torch.sqrt(1 - alpha_bar) * noise
        return nn.functional.mse_loss(self.predict_noise(features, noisy, steps), noise)
