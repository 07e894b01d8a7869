"""The learning schedule around the PA-RL agent: one implementation for the learner node and the
fine-tuning study, so that the study measures what the product runs.

    offline  ->  warmup  ->  (critic catch-up)  ->  online

Settings: `learner.schedule` (below, `schedule.*`) and `learner.policy_update.rule`.
- `pretrain()` (phase `offline`): fit the state statistics on the demos, then
  `schedule.offline_policy_steps` behaviour-cloning and `schedule.offline_critic_steps` critic updates.
- `warmup`: the first `schedule.warmup_episodes` online episodes are acted by the pre-trained agent,
  without updates.
- `catch_up()`: when the last warm-up episode is stored, `schedule.warmup_critic_steps` critic updates
  on demos + warm-up episodes before any policy update (a critic pre-trained on a few demos has never
  seen the policy's own failures and mis-ranks its samples). The learner node holds the next episode
  meanwhile (stats `catching_up`); the count is checkpointed, so a restart resumes it.
- `online_updates(new_transitions)` (phase `online`): every executed online step adds
  `schedule.updates_per_step` updates to a budget (UTD over the whole run, fractional rates
  included); one update is a critic step on a mixed batch, a policy step on a second, independently
  drawn mixed batch (`policy_update.rule`; PA-RL's distillation by default), then
  `policy_update.filtered_bc_steps` behaviour-cloning steps on successful episodes, and an
  action-cache rebuild after each distillation epoch (big policies, `learner.action_cache_size`).

Batches: `schedule.batch_size` transitions, `schedule.online_fraction` of them from the online
buffer (all offline while it is empty). A NaN or exploding update pauses learning (`paused`, `warning`)
with the weights kept; the operator's resume clears it.

No ROS and no threads here. The learner node calls it from its learning thread and passes its lock,
held only around each single update so that acting goes on between updates; the study calls it
inline, after each action (when the node's budget grows too).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable

from parl_robot.config import LearnerConfig
from parl_robot.data.episode import EpisodeData
from parl_robot.rl.agent import NumericalInstability, PARLAgent
from parl_robot.rl.filtered_bc import filtered_bc_steps
from parl_robot.rl.policy_updates import POLICY_UPDATES
from parl_robot.rl.replay_buffer import ReplayBuffer, sample_mixed

OFFLINE, WARMUP, ONLINE = "offline", "warmup", "online"


def _never() -> bool:
    return False


class ProgressLog:
    """A text progress bar for long CPU phases, one log line per tenth:
    `offline pre-training [#####-----]  50 % (critic 400/1000)`."""

    WIDTH = 10

    def __init__(self, what: str, total: int, log):
        self.what, self.total, self.log = what, max(int(total), 1), log
        self.reported = 0  # tenths already logged

    def update(self, done: int, detail: str = "") -> None:
        tenths = min(self.WIDTH, done * self.WIDTH // self.total)
        if tenths <= self.reported:
            return
        self.reported = tenths
        bar = "#" * tenths + "-" * (self.WIDTH - tenths)
        self.log.info(f"{self.what} [{bar}] {100 * done // self.total:3d} %" + (f" ({detail})" if detail else ""))


class Trainer:
    def __init__(
        self,
        agent: PARLAgent,
        offline: ReplayBuffer,
        online: ReplayBuffer,
        cfg: LearnerConfig,
        lock: contextlib.AbstractContextManager | None = None,
        log: logging.Logger | None = None,
        checkpoint: Callable[[], None] | None = None,
    ):
        self.agent = agent
        self.offline = offline  # demonstrations
        self.online = online  # warm-up and online episodes (never aborted ones)
        self.cfg = cfg
        self.schedule = cfg.schedule
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.log = log if log is not None else logging.getLogger(__name__)
        self.checkpoint = checkpoint or (lambda: None)  # after pre-training, the catch-up, every N updates
        self.policy_update = POLICY_UPDATES[cfg.policy_update.rule]
        self.phase = OFFLINE
        self.offline_progress = 0.0
        self.online_episodes = 0
        self.online_successes = 0
        self.last_intervention_rate = 0.0  # share of the last online episode's steps the operator drove
        self.online_steps = 0  # executed steps of online-phase episodes: the update budget's base
        self.updates_since_version = 0
        self.paused = False  # by the operator, or by a numerical instability
        self.warning = ""

    # ----- data ------------------------------------------------------------------------------
    def batch(self) -> dict:
        return sample_mixed(self.offline, self.online, self.schedule.batch_size, self.schedule.online_fraction,
                            self.agent.rng)

    def add_demo(self, episode: EpisodeData) -> None:
        with self.lock:
            self.offline.add_episode(episode)

    def add_stored_episode(self, episode: EpisodeData, success: bool, phase: str) -> int:
        """An online episode loaded from the store at start-up; returns its replay serial. Only
        episodes acted in the online phase count toward the update budget ('' = a store from before
        episodes recorded their phase)."""
        with self.lock:
            serial = self.online.add_episode(episode)
        self.online_episodes += 1
        self.online_successes += int(success)
        if phase in (ONLINE, ""):
            self.online_steps += len(episode.actions)
        return serial

    def add_episode(self, episode: EpisodeData, success: bool) -> int:
        """A finished online episode (stored by the caller); returns its replay serial. The last
        warm-up episode moves the phase to `online`, with the critic's catch-up pending."""
        with self.lock:
            serial = self.online.add_episode(episode)
        self.online_episodes += 1
        self.online_successes += int(success)
        steps = len(episode.actions)
        self.last_intervention_rate = episode.intervention_steps / steps if steps else 0.0
        if self.phase == WARMUP and self._phase_after_offline() == ONLINE:
            self.phase = ONLINE
            self.log.info("warm-up done: online updates start")
        return serial

    def relabel(self, serial: int, rewards, terminal: bool, success_change: int) -> bool:
        """An operator's corrected label: the resident episode's rewards and terminal flag, and the
        success count (`success_change` = now - before). False when the episode left the buffer."""
        with self.lock:
            in_buffer = self.online.relabel_episode(serial, rewards, terminal)
        self.online_successes += success_change
        return in_buffer

    def resume(self, agent_state: dict) -> None:
        """Continue from a checkpoint, after the stored episodes were added: no pre-training."""
        self.agent.load_state_dict(agent_state)
        self.phase = self._phase_after_offline()

    def close_policy_version(self) -> int:
        """The policy version to stamp on the episode just finished: a new one when updates happened
        since the last stamped episode."""
        if self.updates_since_version:
            self.agent.stats.policy_version += 1
            self.updates_since_version = 0
        return self.agent.stats.policy_version

    def _phase_after_offline(self) -> str:
        return WARMUP if self.online_episodes < self.schedule.warmup_episodes else ONLINE

    # ----- schedule --------------------------------------------------------------------------
    def pretrain(self, should_stop: Callable[[], bool] = _never) -> bool:
        """Phase `offline`; True when it ran to the end (then the phase is `warmup` or `online`)."""
        schedule = self.schedule
        with self.lock:  # state statistics of the demonstrations (then saved with every checkpoint)
            self.agent.fit_state_normalization(self.offline.states[: len(self.offline)])
        total = max(schedule.offline_policy_steps + schedule.offline_critic_steps, 1)
        bar = ProgressLog("offline pre-training", total, self.log)
        for step in range(schedule.offline_policy_steps):
            with self.lock:
                self.agent.behaviour_clone(self.batch())
            self.offline_progress = (step + 1) / total
            bar.update(step + 1, f"behaviour cloning {step + 1}/{schedule.offline_policy_steps}")
            if should_stop():
                return False
        for step in range(schedule.offline_critic_steps):
            with self.lock:
                self.agent.update_critic(self.batch())
                if self.cfg.policy_update.pretrain_actor:  # Cal-QL: the actor learns offline with the critic
                    self.policy_update(self.agent, self)
            self.offline_progress = (schedule.offline_policy_steps + step + 1) / total
            bar.update(schedule.offline_policy_steps + step + 1, f"critic {step + 1}/{schedule.offline_critic_steps}")
            if should_stop():
                return False
        self.log.info(
            f"offline pre-training done: {schedule.offline_policy_steps} BC and {schedule.offline_critic_steps} critic "
            f"updates (BC loss {self.agent.stats.policy_loss:.3f}, critic loss {self.agent.stats.critic_loss:.3f})"
        )
        if self.cfg.critic.reset_optimizer_online:  # as the reference: online training starts a fresh Adam
            with self.lock:
                self.agent.reset_critic_optimizer()
        self.checkpoint()
        self.phase = self._phase_after_offline()
        return True

    @property
    def catching_up(self) -> bool:
        """The critic's post-warm-up catch-up is pending (not while learning is paused: then the
        episodes go on with the current critic)."""
        pending = self.agent.stats.warmup_critic_updates < self.schedule.warmup_critic_steps
        return self.phase == ONLINE and pending and not self.paused

    def catch_up(self, should_stop: Callable[[], bool] = _never) -> bool:
        """Critic updates on demos + warm-up episodes; True when the catch-up is complete."""
        stats, steps = self.agent.stats, self.schedule.warmup_critic_steps
        self.log.info(f"warm-up done: {steps - stats.warmup_critic_updates} critic updates on demos + warm-up episodes")
        bar = ProgressLog("critic catch-up", steps, self.log)
        while stats.warmup_critic_updates < steps and not should_stop() and not self.paused:
            try:
                with self.lock:
                    self.agent.update_critic(self.batch())
            except NumericalInstability as err:
                self._pause_on(err)
                return False
            stats.warmup_critic_updates += 1
            bar.update(stats.warmup_critic_updates, f"{stats.warmup_critic_updates}/{steps} updates")
        if stats.warmup_critic_updates < steps:
            return False
        self.log.info(f"critic caught up (loss {stats.critic_loss:.3f}): online updates start")
        self.checkpoint()
        return True

    def record_steps(self, count: int = 1) -> None:
        """Executed steps: in the online phase each adds `updates_per_step` to the update budget."""
        if self.phase == ONLINE:
            self.online_steps += count

    @property
    def updates_due(self) -> bool:
        budget = self.schedule.updates_per_step * self.online_steps
        return (self.phase == ONLINE and not self.paused and not self.catching_up
                and self.agent.stats.critic_updates_online < budget)

    def online_updates(self, new_transitions: int = 0, max_updates: int | None = None) -> int:
        """Record `new_transitions` executed steps, then run the updates due (at most `max_updates`);
        returns how many ran."""
        self.record_steps(new_transitions)
        done = 0
        while self.updates_due and (max_updates is None or done < max_updates):
            try:
                with self.lock:
                    self.agent.update_critic(self.batch())
                    if self.cfg.policy_update.rule != "none":
                        self.policy_update(self.agent, self)
                        filtered_bc_steps(self.agent, self.offline, self.online, self.agent.rng)
                # Outside the lock: a 7B policy re-sampling the buffer must not hold up acting.
                rebuild_seconds = self.agent.rebuild_caches_if_due(lock=self.lock)
            except NumericalInstability as err:
                self._pause_on(err)
                break
            if rebuild_seconds:
                self.log.info(f"action cache rebuilt after a distillation epoch ({rebuild_seconds:.1f} s)")
            self.agent.stats.critic_updates_online += 1
            self.updates_since_version += 1
            done += 1
            if self.agent.stats.critic_updates_online % self.schedule.checkpoint_every_updates == 0:
                self.checkpoint()
        return done

    def _pause_on(self, err: NumericalInstability) -> None:
        self.warning = str(err)
        self.paused = True
        self.log.error(f"learning paused: {err}")

    def pause(self) -> None:
        self.paused = True

    def resume_learning(self) -> None:
        self.paused = False
        self.warning = ""

    # ----- stats -----------------------------------------------------------------------------
    def stats(self) -> dict:
        """The agent's counters and losses with the schedule's state, as `learner/stats` carries them."""
        stats = vars(self.agent.stats).copy()
        stats.update(
            phase=self.phase,
            offline_progress=round(self.offline_progress, 3),
            online_episodes=self.online_episodes,
            online_successes=self.online_successes,
            offline_transitions=len(self.offline),
            online_transitions=len(self.online),
            learning_paused=self.paused,
            intervention_rate_last_episode=round(self.last_intervention_rate, 4),
            catching_up=self.catching_up,
        )
        return stats
