"""The PA-RL agent: Cal-QL (or IQL) critic, action optimization, and supervised distillation.

One readable object holding every network, optimizer and counter, with three update rules:
`behaviour_clone` (offline start), `update_critic` (TD targets from optimized next actions plus the
Cal-QL regularizer, or IQL) and `update_policy` (distil π_opt into the policy with its own loss).
The variants the study compares live beside it, each in its own module: the executed action
(`executed_action`), extra supervised steps (`filtered_bc`) and other actor updates
(`policy_updates`). No ROS and no schedule here: `trainer.Trainer` drives it.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace

import numpy as np
import torch

from parl_robot.config import LearnerConfig
from parl_robot.data.episode import SOURCE_INTERVENTION
from parl_robot.nets.critic import TwinCritic, ValueNetwork
from parl_robot.nets.critic_ascent import supports_critic
from parl_robot.nets.encoders import ObservationSpec, StateNormalizer
from parl_robot.policies import build_policy
from parl_robot.rl.action_cache import ActionCache
from parl_robot.rl.action_optimizer import ActionOptimizerConfig, OptimizedActions, ensemble_q, optimization_gain, optimize_actions
from parl_robot.rl.control_step import ControlStep
from parl_robot.rl.executed_action import EXECUTED_ACTION
from parl_robot.rl.losses import (
    calql_importance_sampled_regularizer,
    calql_reference_regularizer,
    calql_regularizer,
    expectile_loss,
    td_loss,
)
from parl_robot.rl.network_modes import training_mode
from parl_robot.rl.replay_buffer import ReplayBuffer
from parl_robot.rl.static_optimizer import candidate_count, optimize_actions_static

Q_EXPLOSION_LIMIT = 1e4


class NumericalInstability(RuntimeError):
    """A loss or Q value became NaN/Inf or exploded; the update was not applied."""


@dataclass
class UpdateStats:
    critic_updates: int = 0
    policy_updates: int = 0
    bc_updates: int = 0  # every behaviour-cloning step: offline start and filtered BC
    filtered_bc_updates: int = 0  # online steps on successful episodes (policy_update.filtered_bc_steps)
    critic_updates_online: int = 0
    warmup_critic_updates: int = 0  # critic catch-up on demos + warm-up episodes (schedule.warmup_critic_steps)
    ema_updates: int = 0
    policy_version: int = 0
    critic_loss: float = float("nan")
    policy_loss: float = float("nan")
    q_data: float = float("nan")
    q_optimized: float = float("nan")
    q_optimization_gain: float = float("nan")  # best optimized Q − mean Q of the policy's samples (distillation)
    intervention_targets: int = 0  # operator actions distilled as targets (policy_update.intervention_weight)
    entropy_alpha: float = float("nan")  # the actor's entropy weight in use (rule reparameterized)


def _move_toward(average: torch.nn.Module, source: torch.nn.Module, fraction: float) -> None:
    """Polyak step for target critics and the policy average: parameters move `fraction` of the way to
    the source's; buffers (state statistics, schedules) are copied."""
    with torch.no_grad():  # one multi-tensor operator each instead of one per parameter
        torch._foreach_lerp_(list(average.parameters()), list(source.parameters()), fraction)
        buffers = list(average.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(source.buffers()))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class PARLAgent:
    def __init__(
        self,
        cfg: LearnerConfig,
        spec: ObservationSpec,
        action_dim: int = 7,
        value_range: tuple[float, float] = (-40.0, 5.0),
        instruction: str | None = None,
        action_scale: list[float] | tuple[float, ...] | None = None,
    ):
        self.cfg = cfg
        self.spec = spec
        self.action_dim = action_dim
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.policy = build_policy(cfg, spec, action_dim, instruction, action_scale).to(self.device)
        # Sampling copy: an exponential moving average of the trained weights (see policy_ema_rate).
        self.policy_ema = copy.deepcopy(self.policy).requires_grad_(False) if cfg.policy_ema_rate > 0 else None
        self.critic = TwinCritic(
            spec, action_dim, cfg.observation, cfg.critic.hidden, cfg.critic.layers, cfg.critic.hl_gauss_bins, value_range,
            members=cfg.critic.members,
        ).to(self.device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = (
            ValueNetwork(spec, cfg.observation, cfg.critic.hidden, cfg.critic.layers).to(self.device)
            if cfg.critic.kind == "iql"
            else None
        )
        # compute_path static/compiled: one fused Adam kernel per step instead of a dozen operators per parameter.
        self.fused_optimizers = cfg.compute_path != "eager"
        # compiled: the static action optimizer through torch.compile (one compilation per batch shape).
        self._optimize_static = (torch.compile(optimize_actions_static, dynamic=False)
                                 if cfg.compute_path == "compiled" else optimize_actions_static)
        self._control_step: ControlStep | None = None
        compiled = cfg.compute_path == "compiled"
        # compiled: the loss computations (forward, and through AOTAutograd their backward) as graphs.
        self._critic_loss_step = torch.compile(self._critic_loss) if compiled else self._critic_loss
        self._distillation_loss_step = torch.compile(self._distillation_loss) if compiled else self._distillation_loss
        trainable = [parameter for parameter in self.policy.parameters() if parameter.requires_grad]  # LoRA: adapters
        self.policy_optimizer = self._adam(trainable, cfg.policy_lr)
        # policy_update.distill_optimizer "fresh": distillation's own Adam, created at its first step.
        self.distill_optimizer: torch.optim.Optimizer | None = None
        self.critic_optimizer = self._new_critic_optimizer()
        # policy_update.entropy_autotune: log of the entropy weight (starts at 1), tuned by its own Adam.
        self.log_entropy_alpha: torch.Tensor | None = None
        self.entropy_optimizer: torch.optim.Optimizer | None = None
        if cfg.policy_update.entropy_autotune:
            self.log_entropy_alpha = torch.zeros((), device=self.device, requires_grad=True)
            self.entropy_optimizer = self._adam([self.log_entropy_alpha], cfg.policy_update.entropy_lr)
        self.optimizer_cfg = ActionOptimizerConfig(
            num_kept=cfg.optimizer.num_kept,
            local_steps=cfg.optimizer.local_steps,
            step_size=cfg.optimizer.step_size,
            selection=cfg.optimizer.selection,
            temperature=cfg.optimizer.softmax_temperature,
            ensemble=cfg.optimizer.q_ensemble,
            local_search=cfg.optimizer.local_search,
            dataset_action_slot=cfg.optimizer.dataset_action_slot,
        )
        self.distill_optimizer_cfg = replace(self.optimizer_cfg, selection=cfg.policy_update.distill_selection)
        self.executed_action = EXECUTED_ACTION[cfg.optimizer.gripper_from]
        self.value_range = value_range
        self.stats = UpdateStats()
        self.caches: list[tuple[ReplayBuffer, ActionCache]] = []
        self.policy_updates_at_rebuild = 0
        for network in (self.policy, self.policy_ema, self.critic, self.target_critic, self.value):
            if network is not None:
                network.eval()  # see training_mode: evaluation mode except inside a loss's forward pass
        if cfg.compute_path != "eager" and cfg.observation == "image":
            # Stored frames are NHWC, so the encoder's input is already channels-last; convolution
            # weights in the same layout spare the NCHW<->NHWC conversions around every convolution
            # (cuDNN; 8 % faster on a CPU too). OpenVLA keeps its own layout (quantized weights).
            for network in (self.policy, self.policy_ema, self.critic, self.target_critic, self.value):
                if network is not None and not (network in (self.policy, self.policy_ema) and cfg.policy == "openvla"):
                    network.to(memory_format=torch.channels_last)

    def loss_precision(self) -> contextlib.AbstractContextManager:
        """The loss passes' arithmetic (`learner.update_precision`): bfloat16 autocast — matrix products
        and convolutions in bf16 (tensor cores on a GPU), reductions and losses in float32, weights,
        gradients and optimizer state float32 — or plain float32. TD targets and every action
        optimization run outside it, in float32: the ascent's small gradient steps need the precision."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.update_precision == "bfloat16")

    def _adam(self, parameters: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(parameters, lr=lr, fused=True if self.fused_optimizers else None)

    def _new_critic_optimizer(self) -> torch.optim.Optimizer:
        parameters = list(self.critic.parameters()) + (list(self.value.parameters()) if self.value else [])
        return self._adam(parameters, self.cfg.critic.lr)

    def reset_critic_optimizer(self) -> None:
        """A fresh critic Adam (no moments, step 0): `critic.reset_optimizer_online` when offline
        pre-training ends, as the reference does before online training."""
        self.critic_optimizer = self._new_critic_optimizer()

    def _member_subset(self, heads: torch.Tensor) -> torch.Tensor:
        """`critic.sampled_members` heads drawn with replacement (all heads when 0); heads (members, ...)."""
        count = self.cfg.critic.sampled_members
        if count == 0:
            return heads
        return heads[torch.randint(0, heads.shape[0], (count,), device=heads.device)]

    # ----- tensors ---------------------------------------------------------------------------
    def observation_tensors(self, batch: dict[str, np.ndarray], prefix: str = "") -> dict[str, torch.Tensor]:
        obs = {"state": torch.as_tensor(batch[f"{prefix}state"], dtype=torch.float32, device=self.device)}
        if self.cfg.observation == "image":
            obs["image"] = torch.as_tensor(batch[f"{prefix}image"], device=self.device)
        return obs

    @property
    def sampling_policy(self) -> torch.nn.Module:
        """The weights actions are sampled from: the moving average when there is one."""
        return self.policy_ema if self.policy_ema is not None else self.policy

    # ----- acting ----------------------------------------------------------------------------
    def optimized_actions(
        self,
        obs: dict[str, torch.Tensor],
        dataset_actions: torch.Tensor | None = None,
        samples: torch.Tensor | None = None,
        optimizer_cfg: ActionOptimizerConfig | None = None,
    ) -> OptimizedActions:
        """π_opt for a batch of states: k policy samples (or the given cached ones), top m by Q, T
        accepted-only ascent steps; selection by `optimizer_cfg` (the acting rule by default)."""
        if samples is None:
            samples = self.sampling_policy.sample(obs, self.cfg.optimizer.num_samples)  # (batch, k, A)
        optimizer_cfg = optimizer_cfg or self.optimizer_cfg
        with torch.no_grad():
            features = self.critic.encode(obs)  # (batch, F), once per state
        if self.cfg.compute_path == "eager" or not supports_critic(self.critic):
            return optimize_actions(self.critic, features, samples, optimizer_cfg, dataset_actions)
        selection_noise = None
        if optimizer_cfg.selection == "softmax":
            count = candidate_count(optimizer_cfg, samples.shape[1], dataset_actions is not None)
            selection_noise = torch.rand(samples.shape[0], count, device=samples.device)
        return self._optimize_static(self.critic, features, samples, optimizer_cfg, dataset_actions, selection_noise)

    @property
    def control_step(self) -> ControlStep:
        """The acting path (sample k, optimize, select) for `compute_path`, built at first use."""
        step = self._control_step
        if step is None or step.critic is not self.critic or step.policy is not self.sampling_policy:
            self._control_step = ControlStep(self.sampling_policy, self.critic, self.optimizer_cfg,
                                             self.cfg.optimizer.num_samples, self.cfg.compute_path)
        return self._control_step

    def act(self, observation: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
        """Action for one state (unbatched arrays) and its Q value (networks in evaluation mode)."""
        return self.act_batch([observation])[0]

    def act_batch(self, observations: list[dict[str, np.ndarray]]) -> list[tuple[np.ndarray, float]]:
        """Actions for several states at once (one per arm, unbatched arrays each): one control step
        over the stacked batch, each row by the same rule as `act` (its own samples, optimization,
        selection), with each row's best Q."""
        obs = {key: torch.as_tensor(np.stack([o[key] for o in observations]), device=self.device)
               for key in observations[0]}
        obs["state"] = obs["state"].float()
        result = self.control_step(obs)
        best_q = result.q_values.max(dim=1).values.tolist()
        optimized = result.actions.cpu().numpy().astype(np.float32)
        samples = result.samples.float().cpu().numpy()
        return [(self.executed_action(optimized[row], samples[row]), float(best_q[row]))
                for row in range(len(observations))]

    def q_of_actions(self, episode) -> np.ndarray | None:
        """The critic's Q(s_t, a_t) for every step of an EpisodeData, its heads combined as when
        ranking actions (`optimizer.q_ensemble`); None when the critic needs frames the episode lacks."""
        if len(episode.actions) == 0:
            return np.zeros(0, np.float32)
        if self.cfg.observation == "image" and episode.images is None:
            return None
        steps = {"state": episode.states[:-1], "image": None if episode.images is None else episode.images[:-1]}
        obs = self.observation_tensors(steps)
        with torch.no_grad():
            actions = torch.as_tensor(np.asarray(episode.actions), device=self.device)
            q = ensemble_q(self.critic, self.critic.encode(obs), actions, self.cfg.optimizer.q_ensemble)
        return q.float().cpu().numpy()

    def cached_samples(self, batch: dict[str, np.ndarray], key: str, count: int) -> torch.Tensor | None:
        """`count` of the batch's cached policy samples per state (a random subset), or None."""
        if key not in batch:
            return None
        cached = torch.as_tensor(batch[key], device=self.device)
        columns = torch.randperm(cached.shape[1], device=self.device)[:count]
        return cached[:, columns]

    # ----- action caches (big policies) -------------------------------------------------------
    def policy_sampler(self):
        """(replay batch, observation prefix, count) -> (batch, count, A) policy samples, for `ActionCache`."""

        def sample(batch: dict[str, np.ndarray], prefix: str, count: int) -> np.ndarray:
            with torch.no_grad():
                return self.sampling_policy.sample(self.observation_tensors(batch, prefix), count).float().cpu().numpy()

        return sample

    def attach_action_caches(self, buffers: list[ReplayBuffer]) -> None:
        """Give each buffer a cache of `action_cache_size` samples per state (no-op when 0)."""
        if self.cfg.action_cache_size <= 0:
            return
        for buffer in buffers:
            cache = ActionCache(buffer.capacity, self.cfg.action_cache_size, self.action_dim)
            buffer.attach_cache(cache, self.policy_sampler())
            self.caches.append((buffer, cache))

    def rebuild_caches_if_due(self, progress: bool = False, lock: contextlib.AbstractContextManager | None = None) -> float:
        """After each distillation epoch (policy updates >= resident transitions / batch size) re-sample
        every cached state with the updated policy; `lock` (the one episodes are added under) is held
        only while each chunk is stored, so acting is not held up by the sampling. Call it from the
        thread that updates the weights. Returns the seconds spent (0 when not due)."""
        if not self.caches:
            return 0.0
        resident = sum(len(buffer) for buffer, _ in self.caches)
        epoch = max(1, -(-resident // self.cfg.schedule.batch_size))
        if self.stats.policy_updates - self.policy_updates_at_rebuild < epoch:
            return 0.0
        seconds = sum(cache.rebuild(buffer, [self.policy_sampler()], progress=progress, lock=lock)
                      for buffer, cache in self.caches)
        self.policy_updates_at_rebuild = self.stats.policy_updates
        return seconds

    # ----- updates ---------------------------------------------------------------------------
    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, what: str) -> None:
        if not torch.isfinite(loss):
            raise NumericalInstability(f"{what} loss is {loss.item()}; update skipped, weights kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def policy_step(
        self, loss: torch.Tensor, what: str, lr: float, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """A step of the policy optimizer (or the given one, distillation's own) at `lr`; then the
        sampling average follows: ema <- d·ema + (1 − d)·policy, d = min(1 − rate, (1 + n) / (10 + n)) —
        the warm-up term lets it follow a short offline phase instead of remembering the random
        initialisation."""
        optimizer = optimizer or self.policy_optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        self._step(optimizer, loss, what)
        if self.policy_ema is not None:
            updates = self.stats.ema_updates
            decay = min(1.0 - self.cfg.policy_ema_rate, (1 + updates) / (10 + updates))
            _move_toward(self.policy_ema, self.policy, 1.0 - decay)
            self.stats.ema_updates = updates + 1

    def behaviour_clone(self, batch: dict[str, np.ndarray]) -> float:
        obs = self.observation_tensors(batch)
        actions = torch.as_tensor(batch["action"], device=self.device)
        with training_mode(self.policy), self.loss_precision():
            loss = self.policy.supervised_loss(obs, actions).float()
        self.policy_step(loss, "behaviour cloning", self.cfg.policy_lr)
        self.stats.bc_updates += 1
        self.stats.policy_loss = loss.item()
        return loss.item()

    def _td_target(
        self, batch: dict[str, np.ndarray], next_obs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """y = r + γ (1 − done) min over the target heads (or a sampled subset) of Q'(s', π_opt(s')),
        clipped to the achievable returns; with the next actions π_opt(s') (None for IQL)."""
        reward = torch.as_tensor(batch["reward"], device=self.device)
        not_done = 1.0 - torch.as_tensor(batch["done"], device=self.device)
        next_actions = None
        with torch.no_grad():
            if self.value is not None:
                next_value = self.value(next_obs)
            else:
                cached = self.cached_samples(batch, "next_policy_samples", self.cfg.optimizer.num_samples)
                next_actions = self.optimized_actions(next_obs, samples=cached).actions  # a' ~ π_opt(s')
                next_value = self._member_subset(self.target_critic(next_obs, next_actions)).min(dim=0).values
            target = reward + self.cfg.critic.discount * not_done * next_value
            # Returns outside [worst, best] cannot happen; clipping the target stops a small dataset's
            # conservative push-up on data actions from compounding through bootstrapping.
            return target.clamp(*self.value_range), next_actions

    def update_critic(self, batch: dict[str, np.ndarray]) -> float:
        loss, q_data = self._critic_loss_step(self.batch_tensors(batch))
        if q_data.detach().abs().max() > Q_EXPLOSION_LIMIT:
            raise NumericalInstability(
                f"|Q| reached {q_data.detach().abs().max().item():.3g}; update skipped "
                "(consider learner.critic.hl_gauss_bins > 0, the HL-Gauss critic)"
            )
        self._step(self.critic_optimizer, loss, "critic")
        self._soft_update_target()
        self.stats.critic_updates += 1
        self.stats.critic_loss = loss.item()
        self.stats.q_data = q_data.mean().item()
        return loss.item()

    def batch_tensors(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The batch's numeric arrays as tensors on the learner's device (pinned and copied without
        blocking on CUDA); other entries are left out."""
        tensors = {}
        for key, value in batch.items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                continue
            tensor = torch.as_tensor(array)
            if self.device.type == "cuda":
                tensor = tensor.pin_memory().to(self.device, non_blocking=True)
            tensors[key] = tensor
        return tensors

    def _critic_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's loss (TD + Cal-QL or IQL) and the data actions' Q per head, (members, batch)."""
        obs = self.observation_tensors(batch)
        next_obs = self.observation_tensors(batch, "next_")
        actions = torch.as_tensor(batch["action"], device=self.device)
        td_target, next_actions = self._td_target(batch, next_obs)
        calql = self.value is None and self.cfg.critic.cql_alpha > 0
        policy_actions = self._calql_policy_actions(obs, next_obs, batch, next_actions) if calql else None
        with training_mode(self.critic, self.value), self.loss_precision():
            features = self.critic.encode(obs)
            q_data = self.critic.q_values(features, actions).float()  # (members, batch)
            if self.critic.hl_gauss is not None:
                outputs = self.critic.head_outputs(features, actions).float()  # (members, batch, bins)
                targets = td_target.unsqueeze(0).expand(outputs.shape[0], -1)
                loss = self.critic.hl_gauss.loss(outputs, targets).mean(dim=1).sum()
            else:
                loss = td_loss(q_data, td_target, self.cfg.critic.td_loss)
            if self.value is not None:
                with torch.no_grad():
                    target_q = self.target_critic(obs, actions).float().min(dim=0).values
                loss = loss + expectile_loss(target_q - self.value(obs).float(), self.cfg.critic.iql_expectile)
            elif calql:
                loss = loss + self.cfg.critic.cql_alpha * self._calql_term(features, q_data, policy_actions, batch)
        return loss, q_data

    def _calql_policy_actions(self, obs: dict[str, torch.Tensor], next_obs: dict[str, torch.Tensor],
                              batch: dict[str, np.ndarray], next_actions: torch.Tensor | None) -> torch.Tensor:
        """The policy's actions the conservative term pushes down, (batch, n, A): cached or sampled raw
        samples at s (`cql_term: policy_samples`); π_opt(s′) and π_opt(s), each repeated
        cql_num_actions times (`optimized_actions`, the PA-RL reference; n = 2 × cql_num_actions); or
        samples at s then at s′ with their log-densities appended as a last column
        (`importance_sampled`, the Cal-QL reference; (batch, 2 × cql_num_actions, A + 1))."""
        count = self.cfg.critic.cql_num_actions
        if self.cfg.critic.cql_term == "importance_sampled":  # from the current actor, as Cal-QL samples
            parts = [torch.cat([actions, log_pi.unsqueeze(-1)], dim=-1)
                     for actions, log_pi in (self.policy.sample_with_log_prob(o, count) for o in (obs, next_obs))]
            return torch.cat(parts, dim=1).float()
        if self.cfg.critic.cql_term == "optimized_actions":
            cached = self.cached_samples(batch, "policy_samples", self.cfg.optimizer.num_samples)
            here = self.optimized_actions(obs, samples=cached).actions  # π_opt(s), the acting rule
            picks = torch.stack([next_actions, here], dim=1)  # (batch, 2, A)
            return picks.repeat_interleave(count, dim=1).float()
        policy_actions = self.cached_samples(batch, "policy_samples", count)
        if policy_actions is None:
            with torch.no_grad():
                policy_actions = self.sampling_policy.sample(obs, count)  # (batch, n, A)
        return policy_actions.float()

    def _calql_term(
        self, features: torch.Tensor, q_data: torch.Tensor, policy_actions: torch.Tensor, batch: dict[str, np.ndarray]
    ) -> torch.Tensor:
        count = self.cfg.critic.cql_num_actions
        random_actions = torch.rand(policy_actions.shape[0], count, self.action_dim, device=self.device) * 2.0 - 1.0
        q_random = self.critic.q_values(features, random_actions).float()  # uniform on [-1, 1]^A
        mc_returns = torch.as_tensor(batch["mc_return"], device=self.device)
        temperature = self.cfg.critic.cql_temperature
        log_density = -self.action_dim * float(np.log(2.0))
        if self.cfg.critic.cql_term == "importance_sampled":
            actions, log_pi = policy_actions[..., :-1], policy_actions[..., -1]
            q_policy = self.critic.q_values(features, actions).float()  # (members, batch, 2n): at s, then s′ (scored at s)
            return calql_importance_sampled_regularizer(
                q_random, log_density, q_policy[..., :count], log_pi[:, :count], q_policy[..., count:], log_pi[:, count:],
                q_data, mc_returns, temperature)
        q_policy = self.critic.q_values(features, policy_actions).float()  # (members, batch, n)
        if self.cfg.critic.cql_term == "optimized_actions":
            members = torch.arange(q_data.shape[0], device=self.device)
            members = self._member_subset(members)  # the same heads for every term
            return calql_reference_regularizer(q_policy[members], q_random[members], q_data[members], mc_returns, temperature)
        return calql_regularizer(q_policy, q_data, mc_returns, q_random, log_density, temperature)

    def update_policy(self, batch: dict[str, np.ndarray]) -> float:
        """Distillation: fit π_opt(s) (dataset action among the candidates) with the policy's loss, on
        the batch's states of successful episodes when `distill_states` is 'successful' (all states
        when the batch carries no `episode_success`, e.g. built by hand). States where the operator
        intervened keep the operator's executed action as their target, with no critic-based
        optimization, whatever the episode's outcome, weighted `policy_update.intervention_weight`
        against the optimized targets (0 = interventions are not distilled). Returns NaN, without a
        step, when no state is left."""
        intervention = np.zeros(len(batch["action"]), bool)
        if self.cfg.policy_update.intervention_weight > 0 and "source" in batch:
            intervention = np.asarray(batch["source"]) == SOURCE_INTERVENTION
        keep = ~intervention
        if self.cfg.policy_update.distill_states == "successful" and "episode_success" in batch:
            keep &= np.asarray(batch["episode_success"]) > 0.5
        if not keep.any() and not intervention.any():
            return float("nan")  # nothing to distil in this batch: no step, weights kept
        loss = None
        if keep.any():
            kept_batch = self.batch_tensors({key: value[keep] for key, value in batch.items()})
            loss, q_values, sample_q_values = self._distillation_loss_step(kept_batch)
            self.stats.q_optimized = q_values.max(dim=1).values.mean().item()
            self.stats.q_optimization_gain = optimization_gain(q_values, sample_q_values)
        if intervention.any():
            operator = {key: value[intervention] for key, value in batch.items()}
            with training_mode(self.policy), self.loss_precision():
                operator_loss = self.policy.supervised_loss(
                    self.observation_tensors(operator), torch.as_tensor(operator["action"], device=self.device)).float()
            # The weighted mean over the kept states: each loss is a mean over its own states.
            kept, operated, weight = int(keep.sum()), int(intervention.sum()), self.cfg.policy_update.intervention_weight
            loss = operator_loss if loss is None else (kept * loss + weight * operated * operator_loss) / (kept + weight * operated)
            self.stats.intervention_targets += operated
        self.policy_step(loss, "distillation", self.distillation_rate(), self._distillation_optimizer())
        self.stats.policy_updates += 1
        self.stats.policy_loss = loss.item()
        return loss.item()

    def distillation_rate(self) -> float:
        """distill_lr, reached linearly from 0 over `distill_warmup_steps` distillation steps (the
        reference's optax warm-up: step t of the warm-up runs at distill_lr · t / warm-up steps)."""
        update = self.cfg.policy_update
        if update.distill_warmup_steps == 0:
            return update.distill_lr
        return update.distill_lr * min(1.0, self.stats.policy_updates / update.distill_warmup_steps)

    def _distillation_optimizer(self) -> torch.optim.Optimizer:
        if self.cfg.policy_update.distill_optimizer == "shared":
            return self.policy_optimizer
        if self.distill_optimizer is None:  # the reference builds a new Adam for online distillation
            trainable = [parameter for parameter in self.policy.parameters() if parameter.requires_grad]
            self.distill_optimizer = self._adam(trainable, self.cfg.policy_update.distill_lr)
        return self.distill_optimizer

    def _distillation_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The policy's supervised loss on the optimized actions of `batch`'s states (PA-RL's stage II),
        with the optimized candidates' Q (batch, c) and the policy samples' Q (batch, k)."""
        obs = self.observation_tensors(batch)
        dataset_actions = torch.as_tensor(batch["action"], device=self.device)
        optimized = self.optimized_actions(
            obs,
            dataset_actions if self.cfg.optimizer.include_dataset_action else None,
            self.cached_samples(batch, "policy_samples", self.cfg.optimizer.num_samples),
            self.distill_optimizer_cfg,
        )
        with training_mode(self.policy), self.loss_precision():
            loss = self.policy.supervised_loss(obs, optimized.actions.detach()).float()
        return loss, optimized.q_values, optimized.sample_q_values

    def _soft_update_target(self) -> None:
        _move_toward(self.target_critic, self.critic, self.cfg.critic.target_update_rate)

    def fit_state_normalization(self, states: np.ndarray) -> None:
        """Set every state normalizer (policy, critics, targets, value) from dataset states — once,
        before offline training; the statistics then travel in checkpoints with the weights."""
        for network in (self.policy, self.policy_ema, self.critic, self.target_critic, self.value):
            if network is None:
                continue
            for module in network.modules():
                if isinstance(module, StateNormalizer):
                    module.fit(torch.as_tensor(np.asarray(states), dtype=torch.float32))

    # ----- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "target_critic": self.target_critic.state_dict(),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "stats": vars(self.stats).copy(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": self.rng.bit_generator.state,
        }
        if self.value is not None:
            state["value"] = self.value.state_dict()
        if self.distill_optimizer is not None:
            state["distill_optimizer"] = self.distill_optimizer.state_dict()
        if self.log_entropy_alpha is not None:
            state["log_entropy_alpha"] = self.log_entropy_alpha.detach().clone()
            state["entropy_optimizer"] = self.entropy_optimizer.state_dict()
        if self.policy_ema is not None:
            state["policy_ema"] = self.policy_ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        self.target_critic.load_state_dict(state["target_critic"])
        if self.policy_ema is not None:  # checkpoints from before the average: start it at the weights
            self.policy_ema.load_state_dict(state.get("policy_ema", state["policy"]))
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        if "distill_optimizer" in state and self.cfg.policy_update.distill_optimizer == "fresh":
            self._distillation_optimizer().load_state_dict(state["distill_optimizer"])  # never into the shared Adam
        if self.log_entropy_alpha is not None and "log_entropy_alpha" in state:
            with torch.no_grad():
                self.log_entropy_alpha.copy_(state["log_entropy_alpha"])
            self.entropy_optimizer.load_state_dict(state["entropy_optimizer"])
        if self.value is not None:
            self.value.load_state_dict(state["value"])
        self.stats = UpdateStats(**state["stats"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
