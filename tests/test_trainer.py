"""The learning schedule shared by the learner node and the study, without ROS or the sim."""

import numpy as np
import pytest

from parl_robot.config import LearnerConfig, with_overrides
from parl_robot.data.episode import EpisodeData
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.rl.agent import NumericalInstability, PARLAgent
from parl_robot.rl.replay_buffer import ReplayBuffer
from parl_robot.rl.trainer import OFFLINE, ONLINE, WARMUP, Trainer

SPEC = ObservationSpec(state_dim=3)


def episode(rng, steps=5, success=True) -> EpisodeData:
    rewards = np.full(steps, -1.0, np.float32)
    rewards[-1] = 0.0 if success else -1.0
    return EpisodeData(rng.normal(size=(steps + 1, 3)).astype(np.float32), rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
                       rewards, success)


def make_trainer(changes: dict | None = None) -> tuple[Trainer, list[str]]:
    """A small trainer with 3 demos; `changes`: dotted LearnerConfig keys."""
    cfg = with_overrides(LearnerConfig(), {
        "policy_hidden": 32, "policy_blocks": 1, "critic.hidden": 32, "critic.layers": 2, "critic.cql_num_actions": 2,
        "optimizer.num_samples": 4, "optimizer.num_kept": 2, "optimizer.local_steps": 1, "schedule.batch_size": 16,
        "schedule.offline_policy_steps": 3, "schedule.offline_critic_steps": 2, "schedule.warmup_episodes": 2,
        "schedule.warmup_critic_steps": 4, "schedule.updates_per_step": 1.0, "schedule.checkpoint_every_updates": 1000,
        **(changes or {})})
    checkpoints = []
    trainer = Trainer(PARLAgent(cfg, SPEC, action_dim=2), ReplayBuffer(SPEC, 2, 1000, cfg.critic.discount),
                      ReplayBuffer(SPEC, 2, 1000, cfg.critic.discount), cfg, checkpoint=lambda: checkpoints.append("saved"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        trainer.add_demo(episode(rng))
    return trainer, checkpoints


def through_warmup(trainer: Trainer) -> None:
    rng = np.random.default_rng(1)
    assert trainer.pretrain()
    for _ in range(trainer.schedule.warmup_episodes):
        assert trainer.phase == WARMUP and not trainer.catching_up
        trainer.online_updates(new_transitions=5)  # warm-up: no budget, no updates
        trainer.add_episode(episode(rng, success=False), False)


def test_pretrain_then_warmup_then_catch_up_then_online():
    trainer, checkpoints = make_trainer()
    stats = trainer.agent.stats
    assert trainer.phase == OFFLINE
    through_warmup(trainer)
    assert (stats.bc_updates, stats.critic_updates, trainer.offline_progress) == (3, 2, 1.0)
    assert stats.critic_updates_online == 0 and trainer.online_steps == 0
    assert trainer.phase == ONLINE and trainer.catching_up and not trainer.updates_due
    assert checkpoints == ["saved"]  # after pre-training
    assert trainer.catch_up()
    assert stats.warmup_critic_updates == 4 and stats.critic_updates == 6 and stats.policy_updates == 0
    assert not trainer.catching_up and checkpoints == ["saved", "saved"]
    assert trainer.stats()["phase"] == ONLINE and trainer.stats()["online_episodes"] == 2


def test_no_warmup_episodes_goes_online_after_pretraining():
    trainer, _ = make_trainer({"schedule.warmup_episodes": 0, "schedule.warmup_critic_steps": 0})
    trainer.pretrain()
    assert trainer.phase == ONLINE and not trainer.catching_up


@pytest.mark.parametrize("updates_per_step, steps, expected", [(1.0, 4, 4), (0.5, 3, 2), (0.5, 4, 2), (2.0, 3, 6), (0.3, 4, 2)])
def test_online_updates_spend_a_budget_of_updates_per_executed_step(updates_per_step, steps, expected):
    """While updates < updates_per_step x steps: ceil(budget) updates, fractional rates included."""
    trainer, _ = make_trainer({"schedule.updates_per_step": updates_per_step})
    through_warmup(trainer)
    trainer.catch_up()
    done = sum(trainer.online_updates(new_transitions=1) for _ in range(steps))
    assert done == expected == trainer.agent.stats.critic_updates_online == trainer.updates_since_version
    assert trainer.online_updates() == 0  # nothing due until the next step
    assert trainer.close_policy_version() == 1 and trainer.close_policy_version() == 1


def test_each_update_draws_one_batch_for_the_critic_and_another_for_the_policy():
    trainer, _ = make_trainer({"policy_update.filtered_bc_steps": 1})
    through_warmup(trainer)
    trainer.catch_up()
    drawn = []
    original = trainer.batch
    trainer.batch = lambda: drawn.append(1) or original()
    trainer.record_steps(2)
    assert trainer.online_updates(max_updates=1) == 1 and len(drawn) == 2
    stats = trainer.agent.stats
    assert (stats.critic_updates_online, stats.policy_updates, stats.filtered_bc_updates) == (1, 1, 1)
    assert trainer.online_updates() == 1  # the rest of the budget


@pytest.mark.parametrize("rule", ["none", "filtered_bc"])
def test_policy_update_rules(rule):
    trainer, _ = make_trainer({"policy_update.rule": rule, "policy_update.filtered_bc_steps": 1})
    through_warmup(trainer)
    trainer.catch_up()
    bc_before = trainer.agent.stats.bc_updates
    trainer.online_updates(new_transitions=3)
    stats = trainer.agent.stats
    assert stats.critic_updates_online == 3 and stats.policy_updates == 0
    # filtered_bc: a BC step on successful episodes (the demos) per update, plus the extra filtered step
    assert stats.bc_updates - bc_before == (0 if rule == "none" else 6)


def test_numerical_instability_pauses_learning_until_resumed():
    trainer, _ = make_trainer()
    through_warmup(trainer)
    trainer.catch_up()

    def explode(batch):
        raise NumericalInstability("critic loss is nan; update skipped, weights kept")

    update_critic, trainer.agent.update_critic = trainer.agent.update_critic, explode
    assert trainer.online_updates(new_transitions=3) == 0
    assert trainer.paused and "critic loss is nan" in trainer.warning and trainer.stats()["learning_paused"]
    trainer.agent.update_critic = update_critic
    assert trainer.online_updates() == 0
    trainer.resume_learning()
    assert trainer.warning == "" and trainer.online_updates() == 3


def test_catch_up_waits_while_paused_and_resumes_from_its_count():
    trainer, _ = make_trainer()
    through_warmup(trainer)
    trainer.pause()
    assert not trainer.catching_up and not trainer.catch_up()
    trainer.resume_learning()
    calls = iter([False, False, True])
    assert not trainer.catch_up(should_stop=lambda: next(calls))
    assert trainer.agent.stats.warmup_critic_updates == 2 and trainer.catching_up
    assert trainer.catch_up() and trainer.agent.stats.warmup_critic_updates == 4


def test_restored_episodes_count_toward_the_budget_only_when_acted_online():
    trainer, _ = make_trainer()
    rng = np.random.default_rng(2)
    trainer.add_stored_episode(episode(rng, steps=5), False, WARMUP)
    trainer.add_stored_episode(episode(rng, steps=5), True, WARMUP)
    trainer.add_stored_episode(episode(rng, steps=4), True, ONLINE)
    trainer.add_stored_episode(episode(rng, steps=3), False, "")  # a store from before phases were recorded
    trainer.resume(trainer.agent.state_dict())
    assert trainer.phase == ONLINE and trainer.online_episodes == 4 and trainer.online_successes == 2
    assert trainer.online_steps == 7
    assert trainer.relabel(1, np.array([-1, -1, -1, -1, -1], np.float32), False, success_change=-1)
    assert trainer.online_successes == 1 and not trainer.relabel(99, np.zeros(5, np.float32), False, 0)


def test_every_n_online_updates_checkpoint():
    trainer, checkpoints = make_trainer({"schedule.checkpoint_every_updates": 2})
    through_warmup(trainer)
    trainer.catch_up()
    checkpoints.clear()
    trainer.online_updates(new_transitions=5)
    assert checkpoints == ["saved", "saved"]


def test_long_phases_log_a_progress_bar_once_per_tenth():
    lines = []

    class Log:
        def info(self, text):
            lines.append(text)

    trainer, _ = make_trainer({"schedule.offline_policy_steps": 7, "schedule.offline_critic_steps": 13})
    trainer.log = Log()
    assert trainer.pretrain()
    bars = [line for line in lines if line.startswith("offline pre-training [")]
    assert len(bars) == 10  # 20 steps: one line per tenth, never two for the same tenth
    assert bars[0] == "offline pre-training [#---------]  10 % (behaviour cloning 2/7)"
    assert bars[-1] == "offline pre-training [##########] 100 % (critic 13/13)"


class RecordingLog:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, text):
        self.lines.append(("info", text))

    def warning(self, text):
        self.lines.append(("warning", text))

    def error(self, text):
        self.lines.append(("error", text))


def test_the_trainers_log_counters_and_stats_say_exactly_what_happened():
    from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY
    from parl_robot.rl.agent import NumericalInstability

    trainer, _ = make_trainer()
    log = trainer.log = RecordingLog()
    rng = np.random.default_rng(3)
    assert trainer.pretrain()
    trainer.add_episode(episode(rng, success=True), True)
    assert trainer.stats()["online_successes"] == 1 and ("info", "warm-up done: online updates start") not in log.lines
    trainer.add_episode(episode(rng, success=False), False)
    assert log.lines.count(("info", "warm-up done: online updates start")) == 1  # the last warm-up episode
    assert trainer.stats()["catching_up"] is True
    assert trainer.catch_up()
    assert ("info", "warm-up done: 4 critic updates on demos + warm-up episodes") in log.lines
    assert ("info", "critic catch-up [##########] 100 % (4/4 updates)") in log.lines
    loss = trainer.agent.stats.critic_loss
    assert log.lines[-1] == ("info", f"critic caught up (loss {loss:.3f}): online updates start")

    operated = episode(rng, steps=4, success=True)
    operated.sources = np.array([SOURCE_POLICY, SOURCE_INTERVENTION, SOURCE_INTERVENTION, SOURCE_POLICY], np.uint8)
    trainer.add_episode(operated, True)
    stats = trainer.stats()
    assert (stats["online_episodes"], stats["online_successes"], stats["intervention_rate_last_episode"]) == (3, 2, 0.5)
    empty = EpisodeData(np.zeros((1, 3), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32), False)
    trainer.add_episode(empty, False)
    assert trainer.stats()["intervention_rate_last_episode"] == 0.0 and trainer.stats()["online_successes"] == 2

    trainer.record_steps()  # one executed step by default
    assert trainer.online_steps == 1
    assert trainer.close_policy_version() == 0  # no update since: the same version
    assert trainer.online_updates(max_updates=1) == 1
    assert trainer.close_policy_version() == 1 and trainer.updates_since_version == 0
    trainer.record_steps(2)
    assert trainer.online_updates() == 2 and trainer.close_policy_version() == 2

    stats = trainer.stats()
    assert stats["phase"] == ONLINE and stats["offline_progress"] == 1.0 and stats["catching_up"] is False
    assert stats["offline_transitions"] == len(trainer.offline) == 15 and stats["online_transitions"] == len(trainer.online) == 5 + 5 + 4
    assert stats["learning_paused"] is False and stats["critic_updates_online"] == 3

    def explode(batch):
        raise NumericalInstability("critic loss is nan; update skipped, weights kept")

    trainer.agent.update_critic = explode
    trainer.record_steps(1)
    assert trainer.online_updates() == 0
    assert log.lines[-1] == ("error", "learning paused: critic loss is nan; update skipped, weights kept")
    assert trainer.stats()["learning_paused"] is True and trainer.warning == "critic loss is nan; update skipped, weights kept"
    trainer.resume_learning()
    assert trainer.paused is False and trainer.warning == ""


def test_a_catch_up_that_fails_pauses_and_reports_not_done():
    from parl_robot.rl.agent import NumericalInstability

    trainer, _ = make_trainer()
    log = trainer.log = RecordingLog()
    through_warmup(trainer)

    def explode(batch):
        raise NumericalInstability("critic loss is inf; update skipped, weights kept")

    trainer.agent.update_critic = explode
    assert trainer.catch_up() is False and trainer.paused and trainer.agent.stats.warmup_critic_updates == 0
    assert log.lines[-1] == ("error", "learning paused: critic loss is inf; update skipped, weights kept")


def test_the_progress_log_reports_each_tenth_once_with_its_detail():
    from parl_robot.rl.trainer import ProgressLog

    log = RecordingLog()
    single = ProgressLog("one step", 1, log)
    single.update(1)
    assert log.lines == [("info", "one step [##########] 100 %")]  # no detail: no parentheses
    empty = ProgressLog("nothing", 0, log)  # a phase of 0 steps counts as 1
    empty.update(1, "done")
    assert log.lines[-1] == ("info", "nothing [##########] 100 % (done)")
    log.lines.clear()
    bar = ProgressLog("phase", 20, log)
    for done in range(1, 21):
        bar.update(done, f"{done}/20")
    assert [text for _, text in log.lines][:2] == ["phase [#---------]  10 % (2/20)", "phase [##--------]  20 % (4/20)"]
    assert len(log.lines) == 10


def test_a_new_trainer_starts_from_nothing_and_uses_the_given_lock():
    entered = []

    class CountingLock:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return False

    trainer, _ = make_trainer()
    stats = trainer.stats()
    assert (stats["phase"], stats["offline_progress"], stats["intervention_rate_last_episode"]) == (OFFLINE, 0.0, 0.0)
    assert trainer.warning == "" and stats["learning_paused"] is False and stats["online_successes"] == 0
    assert trainer.log.name == "parl_robot.rl.trainer"  # the module's logger when none is given
    given_log = RecordingLog()
    locked = Trainer(trainer.agent, trainer.offline, trainer.online, trainer.cfg, lock=CountingLock(), log=given_log)
    assert locked.pretrain() and len(entered) == 1 + 3 + 2  # state statistics, each BC and critic step
    assert locked.log is given_log and given_log.lines[-1][1].startswith("offline pre-training done")


def test_pretraining_stopped_midway_reports_not_done_with_its_progress():
    trainer, _ = make_trainer({"schedule.offline_policy_steps": 2, "schedule.offline_critic_steps": 1})
    trainer.log = RecordingLog()
    assert trainer.pretrain(should_stop=lambda: True) is False
    assert trainer.phase == OFFLINE and trainer.stats()["offline_progress"] == 0.333  # 1 of 3 steps, rounded
    calls = []
    assert trainer.pretrain(should_stop=lambda: calls.append(1) or len(calls) == 3) is False  # stopped in the critic steps
    assert trainer.offline_progress == 1.0 and trainer.phase == OFFLINE
    assert trainer.pretrain() is True and trainer.phase != OFFLINE


def test_a_resumed_catch_up_says_how_many_updates_are_left_and_rates_are_rounded():
    trainer, _ = make_trainer()
    log = trainer.log = RecordingLog()
    through_warmup(trainer)
    trainer.agent.stats.warmup_critic_updates = 1  # one done before a restart
    assert trainer.catch_up()
    assert ("info", "warm-up done: 3 critic updates on demos + warm-up episodes") in log.lines
    operated = episode(np.random.default_rng(5), steps=3)
    operated.sources = np.array([1, 0, 0], np.uint8)
    trainer.add_episode(operated, True)
    assert trainer.stats()["intervention_rate_last_episode"] == 0.3333
