"""Autoregressive categorical transformer: each action dimension is a token over uniform bins.

The observation features form the first token; the token for dimension i is predicted from the
features and the tokens of dimensions < i (4 layers, width 256, 8 heads, 128 bins in the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from parl_robot.nets.encoders import ObservationSpec, build_encoder
from parl_robot.policies.base import Observation, repeat_features


class ActionTokenizer:
    """Uniform bins over [-1, 1]; decoding returns bin centres."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        return ((actions.clamp(-1, 1) + 1) / 2 * self.num_bins).long().clamp(0, self.num_bins - 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens.float() + 0.5) / self.num_bins * 2 - 1


class TokenTransformerPolicy(nn.Module):
    def __init__(
        self,
        spec: ObservationSpec,
        action_dim: int = 7,
        observation: str = "state",
        hidden: int = 256,
        layers: int = 4,
        heads: int = 8,
        num_bins: int = 128,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.action_dim = action_dim
        self.temperature = temperature
        self.tokenizer = ActionTokenizer(num_bins)
        self.encoder = build_encoder(spec, observation, hidden)
        self.feature_token = nn.Linear(self.encoder.output_dim, hidden)
        self.token_embedding = nn.Embedding(num_bins, hidden)
        self.position_embedding = nn.Parameter(torch.zeros(action_dim, hidden))
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.logits = nn.Linear(hidden, num_bins)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(action_dim))
        nn.init.normal_(self.position_embedding, std=0.02)

    def _logits(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, L, bins) for positions 0..L-1 given the first L-1 action tokens."""
        length = tokens.shape[1] + 1
        sequence = torch.cat([self.feature_token(features).unsqueeze(1), self.token_embedding(tokens)], dim=1)
        sequence = sequence + self.position_embedding[:length]
        hidden = self.transformer(sequence, mask=self.causal_mask[:length, :length], is_causal=True)
        return self.logits(self.norm(hidden))

    @torch.no_grad()
    def sample(self, obs: Observation, num_samples: int) -> torch.Tensor:
        features = self.encoder(obs)  # (batch, F), once per state
        batch = features.shape[0]
        features = repeat_features(features, num_samples)
        tokens = torch.zeros(batch * num_samples, 0, dtype=torch.long, device=features.device)
        for _ in range(self.action_dim):
            logits = self._logits(features, tokens)[:, -1] / self.temperature
            next_token = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            tokens = torch.cat([tokens, next_token], dim=1)
        return self.tokenizer.decode(tokens).view(batch, num_samples, self.action_dim)

    def supervised_loss(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy with teacher forcing."""
        tokens = self.tokenizer.encode(actions)  # (batch, A)
        logits = self._logits(self.encoder(obs), tokens[:, :-1])  # (batch, A, bins)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
