"""OpenVLA adapter on a tiny random-weight model with the released model's classes, files and token
scheme: tokens, action-space map, loading, cached-prefix sampling, distillation, LoRA, 4-bit, and
the full PA-RL path (sample, optimize, distil, cache rebuild, checkpoint) through the agent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from parl_robot.config import ConfigError, LearnerConfig, load_config, with_overrides  # noqa: E402
from parl_robot.nets.encoders import ObservationSpec  # noqa: E402
from parl_robot.policies.openvla.action_tokens import (  # noqa: E402
    BRIDGE_ORIG,
    ActionSpaceMap,
    ActionStatistics,
    OpenVLAActionTokenizer,
)
from parl_robot.policies.openvla.build import build_openvla_policy  # noqa: E402
from parl_robot.policies.openvla.lora import adapter_state_dict, has_lora, merge_lora, quantize_4bit  # noqa: E402
from parl_robot.policies.openvla.model import OpenVLAArchitecture, load_openvla_weights  # noqa: E402
from parl_robot.policies.openvla.policy import PROMPT, SPACE_TOKEN_ID  # noqa: E402
from parl_robot.policies.openvla.tiny import write_tiny_openvla  # noqa: E402
from parl_robot.rl.agent import PARLAgent  # noqa: E402
from parl_robot.rl.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from parl_robot.data.episode import EpisodeData  # noqa: E402
from parl_robot.rl.replay_buffer import ReplayBuffer  # noqa: E402

SCALE = [0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 1.0]
INSTRUCTION = "Put the cup on the drying rack"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_openvla(tmp_path_factory.mktemp("openvla") / "tiny", seed=0)


def tiny_cfg(path, **overrides) -> LearnerConfig:
    """The tiny OpenVLA's learner config; `overrides`: top-level LearnerConfig fields."""
    base = {"policy": "openvla", "observation": "image", "openvla_path": str(path), "openvla_dtype": "float32",
            "lora_rank": 8, "lora_alpha": 16.0, "optimizer.num_samples": 4, "optimizer.num_kept": 2,
            "optimizer.local_steps": 2, "optimizer.step_size": 0.01, "action_cache_size": 4, "critic.cql_num_actions": 2,
            "schedule.batch_size": 4, "critic.hidden": 32, "critic.layers": 1, "policy_lr": 3e-3,
            "policy_update.distill_lr": 3e-3, "policy_ema_rate": 0.0, "seed": 0}
    return with_overrides(LearnerConfig(), {**base, **overrides})


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8))


# ----- tokens and action spaces ------------------------------------------------------------------
def numpy_reference_encode(actions: np.ndarray) -> np.ndarray:
    """OpenVLA's own formula: `32000 - np.digitize(clip(a), linspace(-1, 1, 256))`."""
    return 32000 - np.digitize(np.clip(actions, -1.0, 1.0), np.linspace(-1.0, 1.0, 256))


def test_action_tokens_match_openvla_formula_and_decode_to_bin_centres():
    tokenizer = OpenVLAActionTokenizer()
    values = np.concatenate([np.random.default_rng(0).uniform(-1.2, 1.2, 500), [-1.0, 1.0, 0.0, -0.999, 0.999]])
    ids = tokenizer.encode(torch.as_tensor(values, dtype=torch.float32))
    assert np.array_equal(ids.numpy(), numpy_reference_encode(values.astype(np.float32)))
    assert ids.min() >= 31744 and ids.max() <= 31999
    assert tokenizer.encode(torch.tensor([1.0])).item() == 31744  # larger action -> smaller id
    assert tokenizer.logit_slice() == slice(31744, 32000)  # not the padded vocabulary's last 256
    inside = torch.as_tensor(values, dtype=torch.float32).clamp(-1 + 1e-3, 1 - 1e-3)
    decoded = tokenizer.decode(tokenizer.encode(inside))
    assert (decoded - inside).abs().max() <= 1.0 / 255 + 1e-5  # within half a bin width (2/255)


def test_action_space_map_round_trip_and_gripper_convention():
    mapping = ActionSpaceMap(BRIDGE_ORIG, SCALE)
    # Robot actions inside the Bridge q01..q99 box (a 5 cm scale is wider than the data's 3-4 cm).
    robot = torch.tensor([[0.3, -0.5, 0.2, 0.1, -0.2, 0.5, 1.0], [-0.4, 0.6, 0.0, -0.3, 0.2, -0.6, -1.0]])
    assert torch.allclose(mapping.to_robot(mapping.to_openvla(robot)), robot, atol=1e-5)
    openvla = mapping.to_openvla(robot)
    assert openvla[0, 6] == 1.0 and openvla[1, 6] == 0.0  # gripper passes through: 1 open, 0 closed
    # Un-normalization: -1 -> q01, +1 -> q99 in physical units.
    physical = mapping.to_robot(torch.tensor([[-1.0] * 6 + [1.0]]))[0, :6] * torch.tensor(SCALE[:6])
    assert torch.allclose(physical, torch.tensor(BRIDGE_ORIG.q01[:6]), atol=1e-6)


def test_dataset_statistics_errors_name_the_problem(tmp_path):
    with pytest.raises(KeyError, match="available: \\['bridge_orig'\\]"):
        ActionStatistics.from_dataset_statistics({"bridge_orig": {"action": {"q01": [0], "q99": [1]}}}, "fractal")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ActionStatistics.from_dataset_statistics(tmp_path / "missing.json", "bridge_orig")


# ----- loading ------------------------------------------------------------------------------------
def test_missing_weights_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory.*openvla_path"):
        build_openvla_policy(tiny_cfg(tmp_path / "nowhere"), INSTRUCTION, SCALE)
    with pytest.raises(ValueError, match="openvla_path"):
        build_openvla_policy(tiny_cfg(""), INSTRUCTION, SCALE)


def test_checkpoint_loading_skips_unused_released_entries_and_rejects_mismatches(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_dir / "model.safetensors"))
    # The released checkpoint also has the last ViT blocks, the final norms and SigLIP's attention pool.
    state["vision_backbone.featurizer.blocks.2.norm1.weight"] = torch.ones(64)
    state["vision_backbone.fused_featurizer.attn_pool.latent"] = torch.zeros(1, 1, 64)
    state["vision_backbone.fused_featurizer.norm.weight"] = torch.ones(64)
    target = tmp_path / "released_like"
    target.mkdir()
    save_file(state, str(target / "model.safetensors"))
    (target / "config.json").write_text((tiny_dir / "config.json").read_text())
    loaded = load_openvla_weights(target, torch.float32)
    reference = load_openvla_weights(tiny_dir, torch.float32)
    pixels, ids = torch.randn(1, 6, 56, 56), torch.tensor([[1, 40, 41]])
    assert torch.equal(loaded(pixels, ids).logits, reference(pixels, ids).logits)
    del state["projector.fc2.weight"]
    save_file(state, str(target / "model.safetensors"))
    with pytest.raises(ValueError, match="missing \\['projector.fc2.weight'\\]"):
        load_openvla_weights(target, torch.float32)


def test_released_config_json_maps_to_the_7b_architecture():
    released = {"vision_backbone_id": "dinosiglip-vit-so-224px", "use_fused_vision_backbone": True,
                "pad_to_multiple_of": 64, "pad_token_id": 32000,
                "text_config": {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000}}
    architecture = OpenVLAArchitecture.from_config_json(released)
    assert architecture.llama["vocab_size"] == 32064
    assert architecture.dino.width + architecture.siglip.width == 2176 and architecture.dino.num_patches == 256
    with pytest.raises(ValueError, match="only OpenVLA's fused"):
        OpenVLAArchitecture.from_config_json({"vision_backbone_id": "siglip-vit-so400m"})


# ----- sampling and distillation -----------------------------------------------------------------
def test_prompt_is_built_as_openvla_does(tiny_dir):
    policy = build_openvla_policy(tiny_cfg(tiny_dir), INSTRUCTION, SCALE)
    ids = policy.prompt_ids.tolist()
    assert ids[0] == 1 and ids[-1] == SPACE_TOKEN_ID
    from parl_robot.policies.openvla.policy import load_prompt_tokenizer

    text = load_prompt_tokenizer(tiny_dir).decode(ids[1:-1])
    assert text == PROMPT.format(instruction=INSTRUCTION.lower())


def test_cached_prefix_sampling_equals_the_full_forward_pass(tiny_dir):
    """Greedy samples decoded with the repeated KV cache are the argmax of an uncached forward pass
    over [BOS, patches, prompt, action tokens]; and the image changes the action logits."""
    policy = build_openvla_policy(tiny_cfg(tiny_dir, openvla_temperature=0.0), INSTRUCTION, SCALE).eval()
    obs = {"image": images(2)}
    samples = policy.sample(obs, 3)
    assert samples.shape == (2, 3, 7) and samples.abs().max() <= 1.0
    assert torch.equal(samples[:, 0], samples[:, 1])  # greedy: every sample of a state is the same
    tokens = policy.sample_tokens(obs, 3).view(2, 3, 7)[:, 0]
    assert tokens.min() >= 31744 and tokens.max() <= 31999
    input_ids = torch.cat([policy.prompt_ids.expand(2, -1), tokens], dim=1)
    with torch.no_grad():
        logits = policy.model(pixel_values=policy.pixel_values(obs["image"]), input_ids=input_ids).logits
    action_logits = logits[:, -8:-1, 31744:32000]  # the positions that predict the 7 action tokens
    assert torch.equal(action_logits.argmax(-1) + 31744, tokens)
    assert not torch.allclose(logits[0, -8], logits[1, -8])  # different images, different actions


def test_distillation_fits_target_actions_with_lora_only(tiny_dir):
    torch.manual_seed(0)
    policy = build_openvla_policy(tiny_cfg(tiny_dir, openvla_temperature=0.0), INSTRUCTION, SCALE)
    trainable = {name for name, p in policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    frozen_before = policy.model.projector.fc1.base_layer.weight.clone()
    obs = {"image": images(3, seed=1)}
    targets = torch.tensor([[0.4, -0.4, 0.2, 0.0, 0.3, -0.3, 1.0], [-0.5, 0.5, -0.2, 0.2, 0.0, 0.4, -1.0],
                            [0.1, 0.1, 0.5, -0.3, -0.2, 0.0, 1.0]])  # inside Bridge's q01..q99
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    first = None
    for _ in range(150):
        loss = policy.supervised_loss(obs, targets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first
    predicted = policy.eval().sample(obs, 1)[:, 0]
    assert (predicted - targets).abs().max() < 0.05  # within a bin or so in robot units
    assert torch.equal(policy.model.projector.fc1.base_layer.weight, frozen_before)


def test_adapter_checkpoint_round_trip_and_merge(tiny_dir, tmp_path):
    torch.manual_seed(0)
    policy = build_openvla_policy(tiny_cfg(tiny_dir, openvla_temperature=0.0), INSTRUCTION, SCALE)
    with torch.no_grad():  # move the adapters away from their zero-effect init
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    state = policy.state_dict()
    assert state and all("lora_" in name for name in state)  # adapters only
    fresh = build_openvla_policy(tiny_cfg(tiny_dir, openvla_temperature=0.0), INSTRUCTION, SCALE)
    obs = {"image": images(2, seed=3)}
    assert not torch.equal(fresh.sample(obs, 1), policy.sample(obs, 1))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.sample(obs, 1), policy.sample(obs, 1))
    with pytest.raises(ValueError, match="lora_rank"):
        build_openvla_policy(tiny_cfg(tiny_dir, lora_rank=4), INSTRUCTION, SCALE).load_state_dict(state)
    pixels, ids = policy.pixel_values(obs["image"]), policy.prompt_ids.expand(2, -1)
    with torch.no_grad():
        before = policy.model(pixel_values=pixels, input_ids=ids).logits
        merge_lora(policy.model)
        after = policy.model(pixel_values=pixels, input_ids=ids).logits
    assert not has_lora(policy.model)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-3)


def test_4bit_nf4_model_runs_and_trains_lora(tiny_dir):
    pytest.importorskip("bitsandbytes")
    model = load_openvla_weights(tiny_dir, torch.bfloat16)
    pixels, ids = torch.randn(1, 6, 56, 56), torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        reference = model(pixels, ids).logits.float()
    quantized = quantize_4bit(model, torch.bfloat16, "cpu")
    linear = quantized.language_model.model.layers[0].self_attn.q_proj
    assert type(linear).__name__ == "Linear4bit" and linear.weight.dtype == torch.uint8
    assert type(quantized.language_model.lm_head).__name__ == "Linear"  # the head stays in bf16
    with torch.no_grad():
        output = quantized(pixels, ids).logits.float()
    assert (output - reference).norm() / reference.norm() < 0.3  # NF4 error on random weights
    policy = build_openvla_policy(tiny_cfg(tiny_dir, load_in_4bit=True, openvla_dtype="bfloat16"), INSTRUCTION, SCALE)
    loss = policy.supervised_loss({"image": images(1)}, torch.zeros(1, 7))
    loss.backward()
    grads = [p.grad for name, p in policy.named_parameters() if "lora_" in name]
    assert grads and all(g is not None for g in grads)


# ----- the full PA-RL path -----------------------------------------------------------------------
def test_openvla_runs_the_whole_parl_path_with_an_action_cache(tiny_dir, tmp_path):
    cfg = tiny_cfg(tiny_dir)
    spec = ObservationSpec(10, (64, 64, 3))
    make = lambda: PARLAgent(cfg, spec, value_range=(-35.0, 1.0), instruction=INSTRUCTION, action_scale=SCALE)  # noqa: E731
    agent = make()
    buffer = ReplayBuffer(spec, 7, 100, cfg.critic.discount)
    rng = np.random.default_rng(0)
    for _ in range(2):
        steps = 4
        buffer.add_episode(EpisodeData(rng.normal(size=(steps + 1, 10)).astype(np.float32),
                                       rng.uniform(-1, 1, (steps, 7)).astype(np.float32), np.array([-1, -1, -1, 0], np.float32),
                                       True, images=rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8)))
    agent.attach_action_caches([buffer])
    cache = buffer.cache
    batch = buffer.gather(np.arange(4))  # uncached slots are sampled on first use
    assert batch["policy_samples"].shape == (4, 4, 7) and cache.fresh[:4].all() and not cache.fresh[4:8].any()
    agent.update_critic(batch)
    before = cache.samples[:4].copy()
    for _ in range(2):  # 8 transitions / batch 4 = one distillation epoch
        agent.update_policy(buffer.gather(np.arange(4)))
    assert agent.rebuild_caches_if_due() > 0 and cache.rebuilds == 1 and cache.fresh[:8].all()
    assert not np.array_equal(before, cache.samples[:4])  # re-sampled from the updated policy
    assert agent.rebuild_caches_if_due() == 0.0  # not due again until another epoch
    obs = {"state": np.zeros(10, np.float32), "image": np.zeros((64, 64, 3), np.uint8)}
    save_checkpoint(tmp_path / "ckpt", agent.state_dict())
    restored = make()
    restored.load_state_dict(load_checkpoint(tmp_path / "ckpt"))
    torch.manual_seed(5)
    expected = agent.act(obs)[0]
    torch.manual_seed(5)
    assert np.array_equal(restored.act(obs)[0], expected)
    assert set(agent.state_dict()["policy"]) == set(adapter_state_dict(agent.policy.model))


def test_openvla_profile_and_config_checks():
    cfg = load_config(task="vegetable_to_sink", overlays=["openvla"])
    assert cfg.learner.policy == "openvla" and cfg.learner.action_cache_size == 16 and cfg.control.rate_hz == 3.0
    with pytest.raises(ConfigError, match="observation"):
        load_config(task="cup_to_rack", overrides={"learner.policy": "openvla"})
    with pytest.raises(ConfigError, match="action_cache_size"):
        load_config(task="cup_to_rack", overlays=["openvla"], overrides={"learner.action_cache_size": 2})
    json.dumps(cfg.to_dict())
