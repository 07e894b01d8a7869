"""OpenVLA's 7 action tokens decoded with shapes that never change, so the decode can be captured once
and replayed (`learner.compute_path` static / compiled; issue 25).

The reference (`OpenVLAPolicy` with decoding "dynamic") grows transformers' `DynamicCache` by one
position per token (new key/value tensors in every layer at every step) and draws each token with
`torch.multinomial`. Here:

- the prefix [BOS, image patches, prompt] still runs once per state (batch B), into a `StaticCache`
  of B rows; its keys and values, each state's repeated n times, are copied into a second one
  preallocated for B·n rows and prefix + 7 positions (both allocated at the first call for a shape and
  reused after: fixed addresses);
- every decode step has the same shapes (B·n rows × 1 token against the whole cache under the causal
  mask), so the decode is one graph;
- a token is argmax(logits / T + Gumbel noise) with the noise drawn before the decode: the same
  distribution as `multinomial(softmax(logits / T))`, and nothing in the decode waits on the host
  (T = 0: argmax, as the reference).

"compiled" runs the whole sample call (vision backbones, projector, prefill, 7 choices, 6 language-
model steps) through `torch.compile` (`mode="reduce-overhead"`, i.e. one CUDA graph, on a GPU). Given the same noise, the tokens are those of
an uncached forward pass over [prefix, tokens] (tests/test_openvla.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from parl_robot.gumbel import gumbel_from_uniform, gumbel_max

DECODINGS = ("dynamic", "static", "compiled")


def gumbel_noise(rows: int, steps: int, width: int, device: torch.device | str,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows, steps, width) standard Gumbel noise: argmax(logits / T + noise) ~ softmax(logits / T)."""
    return gumbel_from_uniform(torch.rand(rows, steps, width, device=device, generator=generator))


def choose_tokens(logits: torch.Tensor, noise: torch.Tensor, temperature: float) -> torch.Tensor:
    """(rows, 1) indices into `logits`' last dimension: Gumbel-max at temperature T, argmax at 0."""
    return gumbel_max(logits, noise, temperature, dim=-1, keepdim=True)


@dataclass
class DecodeCaches:
    """The two static caches for one input shape: the prefix's (states rows, `length` positions) and
    the decode's (states · samples rows, `length` + steps positions)."""

    prefix: object
    decode: object
    length: int
    samples: int


class StaticActionSampler:
    """Samples `steps` tokens restricted to the vocabulary slice `token_slice`, `num_samples` sequences
    per image, with preallocated static KV caches. The whole call (vision backbones, projector,
    prefill, the copy of the prefix into the decode cache, 7 choices, 6 decode steps) is one function
    of fixed shapes, which "compiled" hands to `torch.compile`; a batch smaller than `pad_to` states
    (other than one state, the acting shape) is padded to it there, so the rollouts, training batches
    and cache rebuilds reuse one compiled graph per sample count instead of compiling every size."""

    MAX_SHAPES_UNCOMPILED = 4  # caches kept for this many input shapes on the static path (oldest dropped)

    def __init__(self, model: nn.Module, steps: int, token_slice: slice, compiled: bool):
        self.model, self.steps, self.token_slice = model, steps, token_slice
        self.caches: OrderedDict[tuple, DecodeCaches] = OrderedDict()
        self.allocations = 0  # cache pairs allocated (once per input shape)
        self._sample: Callable = self._sample_steps
        if compiled:
            device = next(model.parameters()).device
            mode = "reduce-overhead" if device.type == "cuda" else None
            self._sample = torch.compile(self._sample_steps, fullgraph=True, dynamic=False, mode=mode)
        self.compiled = compiled

    def __call__(self, pixels: torch.Tensor, prompt_ids: torch.Tensor, num_samples: int, noise: torch.Tensor,
                 temperature: float, pad_to: int = 1) -> torch.Tensor:
        """`pixels`: (batch, 6, S, S) the backbones' input; `prompt_ids`: (batch, L); `noise`: (batch ·
        num_samples, steps, slice width) Gumbel noise (samples of one image adjacent). Returns
        (batch · num_samples, steps) indices into the slice."""
        batch = pixels.shape[0]
        padding = pad_to - batch if self.compiled and 1 < batch < pad_to else 0
        if padding:  # rows of the first image; their choices are dropped
            pixels = torch.cat([pixels, pixels[:1].expand(padding, *pixels.shape[1:])])
            prompt_ids = torch.cat([prompt_ids, prompt_ids[:1].expand(padding, -1)])
            noise = torch.cat([noise, noise.new_zeros(padding * num_samples, *noise.shape[1:])])
        caches = self._caches_for(pixels, prompt_ids, num_samples)
        choices = self._sample(pixels, prompt_ids, noise, temperature, caches)
        if self.compiled and choices.device.type == "cuda":
            choices = choices.clone()  # a CUDA graph's output is overwritten by its next replay
        return choices[: batch * num_samples]

    def _caches_for(self, pixels: torch.Tensor, prompt_ids: torch.Tensor, num_samples: int) -> DecodeCaches:
        key = (tuple(pixels.shape), pixels.dtype, pixels.device, tuple(prompt_ids.shape), num_samples)
        if key in self.caches:
            self.caches.move_to_end(key)
            return self.caches[key]
        from transformers import StaticCache

        with torch.no_grad():  # one eager pass over the inputs to learn the prefix's length and dtype
            embeddings = self.model.input_embeddings(pixels, prompt_ids)
        batch, length = embeddings.shape[:2]
        config = self.model.language_model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        prefix = StaticCache(config=config, max_cache_len=length)
        prefix.early_initialization(batch, heads, head_dim, embeddings.dtype, embeddings.device)
        decode = StaticCache(config=config, max_cache_len=length + self.steps)
        decode.early_initialization(batch * num_samples, heads, head_dim, embeddings.dtype, embeddings.device)
        if not self.compiled and len(self.caches) >= self.MAX_SHAPES_UNCOMPILED:
            self.caches.popitem(last=False)  # compiled graphs keep theirs: they were captured with them
        self.caches[key] = DecodeCaches(prefix, decode, length, num_samples)
        self.allocations += 1
        return self.caches[key]

    def _sample_steps(self, pixels: torch.Tensor, prompt_ids: torch.Tensor, noise: torch.Tensor, temperature: float,
                      caches: DecodeCaches) -> torch.Tensor:
        language_model, samples, length = self.model.language_model, caches.samples, caches.length
        for layer in caches.prefix.layers:
            layer.cumulative_length.zero_()  # in place: the caches keep the addresses a capture recorded
        embeddings = self.model.input_embeddings(pixels, prompt_ids)
        output = language_model(inputs_embeds=embeddings, cache=caches.prefix, use_cache=True, logits_to_keep=1)
        for decode, prefix in zip(caches.decode.layers, caches.prefix.layers):
            decode.keys[:, :, :length].copy_(prefix.keys.repeat_interleave(samples, dim=0))
            decode.values[:, :, :length].copy_(prefix.values.repeat_interleave(samples, dim=0))
            decode.cumulative_length.fill_(length)
        logits = output.logits[:, -1].repeat_interleave(samples, dim=0)  # the prefix ran once per image
        choices = []
        for step in range(self.steps):
            choice = choose_tokens(logits[:, self.token_slice].float(), noise[:, step], temperature)
            choices.append(choice)
            if step + 1 < self.steps:
                token = choice + self.token_slice.start
                output = language_model(input_ids=token, cache=caches.decode, use_cache=True, logits_to_keep=1)
                logits = output.logits[:, -1]
        return torch.cat(choices, dim=1)
