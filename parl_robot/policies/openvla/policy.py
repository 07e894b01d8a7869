"""OpenVLA behind the `Policy` protocol: batched sampling of n actions per state and the
distillation loss (next-token cross-entropy on the 7 action tokens + EOS only).

Sampling encodes the image and the prompt once per state, repeats the prefix's KV cache n times and
decodes 7 tokens with the logits restricted to the 256 action ids: with transformers' growing cache
and `multinomial` (decoding "dynamic", the reference), or with a preallocated static cache and
Gumbel-max choices from noise drawn up front ("static"; "compiled" also captures the decode;
static_decode.py). Images arrive as the project's
uint8 (batch, H, W, 3) and are resized to 224 px (bicubic) and normalized twice (DINOv2, SigLIP).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from parl_robot.policies.base import Observation
from parl_robot.policies.openvla.action_tokens import ActionSpaceMap, OpenVLAActionTokenizer
from parl_robot.policies.openvla.model import OpenVLAModel
from parl_robot.policies.openvla.static_decode import DECODINGS, StaticActionSampler, gumbel_noise
from parl_robot.policies.openvla.vision import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD

PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
SPACE_TOKEN_ID = 29871  # "▁", which OpenVLA appends to the prompt before the action tokens
EOS_TOKEN_ID = 2
IGNORE_INDEX = -100


def prompt_token_ids(tokenizer, instruction: str) -> list[int]:
    """BOS + the OpenVLA prompt + "▁", built as ids (action ids never go through strings)."""
    ids = list(tokenizer(PROMPT.format(instruction=instruction.lower()), add_special_tokens=True)["input_ids"])
    if not ids or ids[0] != 1:
        ids = [1] + ids
    if ids[-1] != SPACE_TOKEN_ID:
        ids.append(SPACE_TOKEN_ID)
    return ids


def load_prompt_tokenizer(path: str | Path):
    """The checkpoint's own (fast) tokenizer from the local directory."""
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path / 'tokenizer.json'} is missing (OpenVLA's tokenizer files must sit beside the weights)")
    return PreTrainedTokenizerFast.from_pretrained(str(path))


class OpenVLAPolicy(nn.Module):
    def __init__(self, model: OpenVLAModel, prompt_ids: list[int], action_map: ActionSpaceMap, temperature: float = 1.0,
                 decoding: str = "dynamic", max_decode_rows: int = 64):
        super().__init__()
        if decoding not in DECODINGS:
            raise ValueError(f"OpenVLA decoding must be one of {DECODINGS}, got {decoding!r}")
        self.model = model  # LoRA (lora.py) is injected into it in place
        self.action_dim = 7
        self.temperature = temperature
        self.decoding = decoding
        self.max_decode_rows = max_decode_rows  # sequences decoded at once (bounds the KV cache's memory)
        self._static_sampler: StaticActionSampler | None = None  # built at the first static sample
        self.tokenizer = OpenVLAActionTokenizer()
        self.action_map = action_map
        self.register_buffer("prompt_ids", torch.tensor(prompt_ids, dtype=torch.long), persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(DINO_MEAN + SIGLIP_MEAN).view(1, 6, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(DINO_STD + SIGLIP_STD).view(1, 6, 1, 1), persistent=False)

    # ----- inputs ----------------------------------------------------------------------------
    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (batch, H, W, 3) -> float (batch, 6, S, S) at the backbone's resolution."""
        size = self.model.architecture.image_size
        pixels = images.permute(0, 3, 1, 2).float() / 255.0
        if pixels.shape[-2:] != (size, size):
            pixels = nn.functional.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False,
                                               antialias=True).clamp(0.0, 1.0)
        return (pixels.repeat(1, 2, 1, 1) - self.pixel_mean) / self.pixel_std

    def _prompt(self, batch: int) -> torch.Tensor:
        return self.prompt_ids.unsqueeze(0).expand(batch, -1)

    # ----- Policy protocol -------------------------------------------------------------------
    def sample(self, obs: Observation, num_samples: int) -> torch.Tensor:
        """(batch, n, 7) actions in parl_robot's action space."""
        tokens = self.sample_tokens(obs, num_samples)
        normalized = self.tokenizer.decode(tokens)
        return self.action_map.to_robot(normalized).view(obs["image"].shape[0], num_samples, self.action_dim)

    @torch.no_grad()
    def sample_tokens(self, obs: Observation, num_samples: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """(batch * n, 7) action token ids, samples of one state adjacent. States are decoded
        `max_decode_rows // n` at a time (the KV cache of a 7B model takes ~150 MiB per decoded row).
        `noise` (static decoding only): (batch * n, 7, 256) Gumbel noise for the choices; drawn here
        when not given."""
        images = obs["image"]
        batch = images.shape[0]
        action_slice = self.tokenizer.logit_slice()
        if self.decoding == "dynamic" and noise is not None:
            raise ValueError("sampling from given noise needs static decoding (decoding 'static' or 'compiled')")
        if self.decoding != "dynamic" and noise is None:
            noise = gumbel_noise(batch * num_samples, self.action_dim, action_slice.stop - action_slice.start,
                                 images.device)
        states_per_call = max(1, self.max_decode_rows // num_samples)
        tokens = []
        for start in range(0, batch, states_per_call):
            stop = min(batch, start + states_per_call)
            pixels = self.pixel_values(images[start:stop])
            prompt = self._prompt(stop - start).to(images.device)
            if self.decoding == "dynamic":
                tokens.append(self._sample_tokens_dynamic(pixels, prompt, num_samples))
            else:
                choices = self.static_sampler(pixels, prompt, num_samples, noise[start * num_samples: stop * num_samples],
                                              self.temperature, pad_to=states_per_call)
                tokens.append(choices + self.tokenizer.first_id)
        return torch.cat(tokens)

    def _sample_tokens_dynamic(self, pixels: torch.Tensor, prompt: torch.Tensor, num_samples: int) -> torch.Tensor:
        """The reference decode: transformers' growing cache, `multinomial` choices."""
        embeddings = self.model.input_embeddings(pixels, prompt)
        output = self.model.language_model(inputs_embeds=embeddings, use_cache=True, logits_to_keep=1)
        action_slice = self.tokenizer.logit_slice()
        cache = output.cache
        cache.batch_repeat_interleave(num_samples)  # the prefix is computed once per state
        logits = output.logits[:, -1].repeat_interleave(num_samples, dim=0)
        tokens = []
        for step in range(self.action_dim):
            action_logits = logits[:, action_slice].float()
            if self.temperature > 0:
                choice = torch.multinomial(torch.softmax(action_logits / self.temperature, dim=-1), 1)
            else:
                choice = action_logits.argmax(dim=-1, keepdim=True)
            token = choice + self.tokenizer.first_id  # (batch * n, 1) vocabulary ids
            tokens.append(token)
            if step + 1 < self.action_dim:
                output = self.model.language_model(input_ids=token, cache=cache, use_cache=True)
                cache, logits = output.cache, output.logits[:, -1]
        return torch.cat(tokens, dim=1)

    @property
    def static_sampler(self) -> StaticActionSampler:
        if self._static_sampler is None:
            self._static_sampler = StaticActionSampler(self.model, self.action_dim, self.tokenizer.logit_slice(),
                                                       self.decoding == "compiled")
        return self._static_sampler

    def action_token_ids(self, actions: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(self.action_map.to_openvla(actions.float()))

    def supervised_loss(self, obs: Observation, actions: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the 7 action tokens + EOS; prompt and image positions are masked."""
        images = obs["image"]
        batch = images.shape[0]
        action_ids = self.action_token_ids(actions)  # (batch, 7)
        eos = torch.full((batch, 1), EOS_TOKEN_ID, dtype=torch.long, device=images.device)
        input_ids = torch.cat([self._prompt(batch).to(images.device), action_ids, eos], dim=1)
        targets = torch.cat([action_ids, eos], dim=1)  # (batch, 8)
        # Logits at the last 9 positions; position t predicts token t + 1, so drop the final one.
        output = self.model(pixel_values=self.pixel_values(images), input_ids=input_ids, logits_to_keep=targets.shape[1] + 1,
                            use_cache=False)
        logits = output.logits[:, :-1].float()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=IGNORE_INDEX)

    # ----- checkpoints: adapters only when LoRA is on ----------------------------------------
    def state_dict(self, *args, **kwargs):  # noqa: D401 - torch signature
        from parl_robot.policies.openvla.lora import adapter_state_dict, has_lora

        if has_lora(self.model):
            return adapter_state_dict(self.model)
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        from parl_robot.policies.openvla.lora import has_lora, load_adapter_state_dict

        if has_lora(self.model):
            return load_adapter_state_dict(self.model, state)
        return super().load_state_dict(state, strict=strict, assign=assign)
