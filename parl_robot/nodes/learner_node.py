"""Learner node: acts at the control rate with PA-RL action optimization and learns in a thread.

Sensors, freshness and the control tick are `ActingNode`'s (shared with the actor node). With
`acting:=robot` this node does not act: it publishes the acting weights at each new policy version
and records each episode from the robot host's actor steps (`actor/steps`, docs/multi_host.md).

The ROS side of learning: sensors in, actions and `learner/stats` out, episodes recorded from
`episode/event` and stored. The schedule itself (offline pre-training, warm-up, the critic's
catch-up, the online update budget) is `parl_robot.rl.trainer.Trainer`, the same one the sim study
runs; this node calls it from its learning thread, under the lock that acting takes too.

Several arms (`arms:=N`, docs/multi_host.md): one process, one `LearnerCore` (agent, replay buffers,
trainer, checkpoints) and one node per arm (`learner_arm<k>`, topics under `arm<k>/`), each with its
own episode events, recorder and store folder (`<store_dir>/arm<k>`); every arm's transitions enter
the same buffers, and the hub acts for all arms in one batched control step per tick.

Start-up: resume from the last checkpoint and every stored episode (demos -> offline buffer,
online episodes -> online buffer; aborted ones stay on disk only); without a checkpoint, the trainer
pre-trains (phase `offline`). While the critic catches up after warm-up, stats say `catching_up` and
the episode manager holds the next episode. Every labelled episode is saved atomically before
`saved` is announced, and checkpointed before it too.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import rclpy
import torch
from rclpy.node import Node
from std_msgs.msg import Float32, MultiArrayDimension, String, UInt8MultiArray

from parl_robot.config import TaskConfig
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.launch_arguments import ACTING_PLACES
from parl_robot.nodes import common
from parl_robot.nodes.acting_node import ActingNode
from parl_robot.nodes.episode_recorder import EpisodeRecorder
from parl_robot.observation import STATE_DIM
from parl_robot.rl.acting_weights import acting_weights
from parl_robot.rl.checkpoint import load_checkpoint, save_checkpoint
from parl_robot.rl.fair_lock import FairLock
from parl_robot.rl.replay_buffer import ReplayBuffer
from parl_robot.rl.scalar_log import ScalarLog
from parl_robot.rl.trainer import OFFLINE, Trainer
from parl_robot.rl.weight_transport import MAX_CHUNKS, encode_weights
from parl_robot.task_agent import agent_for

WEIGHTS_CHECK_S = 1.0  # acting:=robot: how often the learner looks for a new policy version to publish
RECENT_FRAMES = 30  # acting:=robot with image observations: frames kept to match the actor's stamps
STATS_PERIOD_S = 1.0  # learner/stats, the episode managers' heartbeat of the learner
PENDING_END_WAIT_S = 2.0  # acting:=robot: how long an ended episode waits for the actor's last steps


class LearnerCore:
    """What every arm's learner node shares: the agent, the replay buffers, the trainer and its
    learning thread, checkpoints, the demonstrations' store, stats and the acting weights."""

    def __init__(self, cfg: TaskConfig, logger, acting: str):
        if acting not in ACTING_PLACES:
            raise ValueError(f"parameter acting must be one of {', '.join(ACTING_PLACES)}, got {acting!r}")
        self.cfg, self.logger, self.acting = cfg, logger, acting
        learner = cfg.learner
        self.store = EpisodeStore(cfg.episodes.store_dir)  # demos, checkpoints; a one-arm graph's episodes
        self.checkpoint_dir = Path(cfg.episodes.store_dir) / "checkpoints"
        self.scalar_log = ScalarLog(Path(cfg.episodes.store_dir) / "tensorboard", learner.tensorboard, log=logger.info)
        self.agent = agent_for(cfg)
        self.spec = self.agent.spec
        self.offline = ReplayBuffer(self.spec, 7, learner.schedule.replay_capacity, learner.critic.discount)
        self.online = ReplayBuffer(self.spec, 7, learner.schedule.replay_capacity, learner.critic.discount)
        self.agent.attach_action_caches([self.offline, self.online])  # big policies (learner.action_cache_size)
        self.lock = FairLock()  # one update at a time, never during an action's computation; first come first served
        self.stop_event = threading.Event()
        self.trainer = Trainer(self.agent, self.offline, self.online, learner, lock=self.lock, log=logger,
                               checkpoint=self.checkpoint)
        self.buffer_serials: dict[str, int] = {}  # "<arm>/<episode id>" (one arm: the id) -> its serial in self.online
        self.arms: list[LearnerNode] = []
        self.exit_code: int | None = None  # set when the learning thread failed: the process ends
        self.weights_run = uuid.uuid4().hex[:12]  # this process's weight versions (see weight_transport)
        self.published_version: int | None = None
        self.learning_thread = threading.Thread(target=self._learning_loop, name="learning", daemon=True)
        # Stats at 1 Hz from their own thread: they are the learner's heartbeat for the episode managers
        # (silent for LEARNER_TIMEOUT_S = learner lost, the episode discarded), and the executor can be
        # held for seconds by a saved episode's lock waits (two arms on a loaded CPU: 3-4 s), which made a
        # live learner look dead, its episodes discarded and re-run while it stored them.
        self.stats_lock = threading.Lock()
        self.stats_thread = threading.Thread(target=self._stats_loop, name="stats", daemon=True)

    @staticmethod
    def buffer_key(arm: str, episode_id: str) -> str:
        return f"{arm}/{episode_id}" if arm else episode_id

    # ----- start-up --------------------------------------------------------------------------
    def restore(self) -> None:
        """Demonstrations and stored online episodes of the root store and of every arm's folder into
        the buffers, then the last checkpoint (or pre-training, from the phase `offline`)."""
        stores = [("", self.store)] + [(arm.arm, arm.store) for arm in self.arms if arm.store is not self.store]
        for arm, store in stores:
            quarantined_before = set(store.quarantine_dir.iterdir())
            # Frames stay on disk for state policies (episodes.record_frames stores them for the classifier).
            loaded = store.load_all(with_images=self.cfg.learner.observation == "image")
            for directory in sorted(set(store.quarantine_dir.iterdir()) - quarantined_before):
                reason = (directory / "reason.txt").read_text().strip() if (directory / "reason.txt").is_file() else "?"
                self.logger.error(f"quarantined unreadable episode {directory.name} ({reason}); the others load")
            for record, episode in loaded:
                if record.task != self.cfg.task.name or record.aborted:
                    continue
                if record.kind == "demo":
                    self.trainer.add_demo(episode)
                else:
                    self.buffer_serials[self.buffer_key(arm, record.episode_id)] = self.trainer.add_stored_episode(
                        episode, record.success, record.phase)
        state = load_checkpoint(self.checkpoint_dir)
        if state is not None:
            self.trainer.resume(state["agent"])
            self.logger.info(
                f"resumed from checkpoint: policy version {self.agent.stats.policy_version}, "
                f"{self.trainer.online_episodes} online episodes, {len(self.offline)} offline transitions"
            )
        elif len(self.offline) == 0:
            raise RuntimeError(
                f"no demonstrations in {self.store.root}: record some first "
                f"(`parl-robot record-demos task:={self.cfg.task.name}`)"
            )
        self.logger.info(f"loaded {self.offline.episodes_added} demo episodes ({len(self.offline)} transitions)")

    def start(self) -> None:
        self.learning_thread.start()
        self.stats_thread.start()

    def _stats_loop(self) -> None:
        while not self.stop_event.wait(STATS_PERIOD_S):
            try:
                self.publish_stats()
            except Exception as err:  # noqa: BLE001 - shutting down (context gone), or a failed TensorBoard write
                if self.stop_event.is_set():
                    return
                self.logger.error(f"stats not published: {type(err).__name__}: {err}")

    # ----- learning --------------------------------------------------------------------------
    def _learning_loop(self) -> None:
        trainer, stopping = self.trainer, self.stop_event.is_set
        try:
            if trainer.phase == OFFLINE and not trainer.pretrain(stopping):
                return
            while not stopping():
                if trainer.catching_up:
                    trainer.catch_up(stopping)
                elif not trainer.online_updates(max_updates=1):  # one at a time: stop and pause stay prompt
                    time.sleep(0.02)
        except Exception as err:  # surface the failure and end the node: the launcher stops the graph
            self.logger.fatal(f"learning thread failed: {type(err).__name__}: {err}")
            self.exit_code = 1

    def checkpoint(self) -> None:
        with self.lock:
            state = {"agent": self.agent.state_dict(), "online_episodes": self.trainer.online_episodes}
        save_checkpoint(self.checkpoint_dir, state)

    # ----- acting for several arms --------------------------------------------------------------
    def act_for_arms(self) -> None:
        """One control tick for every arm (acting:=learner, several arms): the arms that act now get
        their actions from one batched control step."""
        prepared = [(arm, ready) for arm in self.arms if (ready := arm.prepare_tick()) is not None]
        if not prepared:
            return
        with self.lock:  # served before the learning thread's next update, as for one arm
            results = self.agent.act_batch([obs for _, (obs, _, _) in prepared])
        for (arm, (obs, tick_wall, tick_start)), (action, _) in zip(prepared, results):
            arm.publish_action(obs, action, tick_wall, tick_start)

    # ----- acting on the robot host (acting:=robot) --------------------------------------------
    def publish_weights_if_new(self) -> None:
        """After pre-training, each new policy version goes out once (versioned, checksummed chunks),
        encoded once and published to every arm's actor."""
        if self.acting != "robot" or self.trainer.phase == OFFLINE or self.agent.stats.policy_version == self.published_version:
            return
        with self.lock:
            version = self.agent.stats.policy_version
            weights = acting_weights(self.agent)
        chunks = encode_weights(weights, version, self.weights_run, max_chunks=MAX_CHUNKS)
        for header, payload in chunks:
            message = UInt8MultiArray(data=payload)
            message.layout.dim = [MultiArrayDimension(label=header.to_json(), size=len(payload), stride=len(payload))]
            for arm in self.arms:
                arm.weights_pub.publish(message)
        self.published_version = version
        self.logger.info(f"published policy v{version} for the robot host{'s' if len(self.arms) > 1 else ''} "
                         f"({chunks[0][0].total_bytes / 1e6:.1f} MB in {len(chunks)} chunks)")

    # ----- stats -----------------------------------------------------------------------------
    def publish_stats(self) -> None:
        """The trainer's stats to every arm (and TensorBoard); from the stats thread, and from the executor
        when the phase changes."""
        with self.stats_lock:
            stats = self.trainer.stats()
            self.scalar_log.stats(stats)
            for arm in self.arms:
                arm.stats_pub.publish(String(data=json.dumps({**stats, "warning": arm.warning or self.trainer.warning},
                                                             default=float)))

    def close(self) -> None:
        self.stop_event.set()
        for thread in (self.learning_thread, self.stats_thread):
            if thread.is_alive():
                thread.join(timeout=10.0)
        with self.stats_lock:
            self.scalar_log.close()


class LearnerNode(ActingNode):
    """One arm's side of the learner: its sensors and acting, its episodes' records and store. Alone
    (`LearnerNode()`) it is the whole learner of a one-arm graph; with several arms `LearnerHub`
    makes one per arm around a shared core."""

    def __init__(self, core: LearnerCore | None = None, arm: int | None = None):
        super().__init__("learner" if arm is None else f"learner_arm{arm}", arm="" if arm is None else f"arm{arm}")
        torch.set_num_threads(1)
        alone = core is None
        if alone:  # a one-arm graph: this node is the whole learner
            # Where the policy acts: here (the default), or on the robot host from the weights this node
            # publishes (`acting:=robot`, docs/multi_host.md); then this node records the actor's steps.
            core = LearnerCore(self.cfg, self.get_logger(), str(self.declare_parameter("acting", "learner").value))
        self.core = core
        self.acting = core.acting
        self.agent, self.trainer, self.lock = core.agent, core.trainer, core.lock
        self.store = core.store if arm is None else EpisodeStore(Path(self.cfg.episodes.store_dir) / f"arm{arm}")
        self.finished_episode: int | None = None
        self.recorder: EpisodeRecorder | None = None
        self.finished_recorder: EpisodeRecorder | None = None
        self.pending_end: dict | None = None  # acting:=robot: an "end" that waits for the actor's last steps
        # acting:=robot: actor steps of an episode whose "start" this node has not handled yet. The actor
        # acts on "start" at once, and its steps (another writer, another topic) can be taken from this
        # node's queues before the event when the node was busy (saving another arm's episode); kept
        # until that "start", bounded by one episode's steps.
        self.early_steps: collections.deque = collections.deque(maxlen=self.cfg.control.max_episode_steps + 1)

        topic = self.arm_topic
        self.stats_pub = self.create_publisher(String, topic(common.LEARNER_STATS), common.EVENT_QOS)
        self.event_pub = self.create_publisher(String, topic(common.EPISODE_EVENT), common.EVENT_QOS)
        # Which reward detector labels the episodes, and the success classifier's score (with the record).
        self.detector_in_use = self.cfg.reward.detector
        self.episode_score: float | None = None
        self.create_subscription(String, topic(common.REWARD_DETECTOR), self.on_detector, common.LATCHED_QOS)
        self.create_subscription(Float32, topic(common.REWARD_SCORE), self.on_score, common.COMMAND_QOS)
        if self.acting == "learner":
            self.start_acting(tick=alone)  # several arms: the hub ticks them together
        else:
            self.recent_frames: collections.deque = collections.deque(maxlen=RECENT_FRAMES)
            self.weights_pub = self.create_publisher(UInt8MultiArray, topic(common.POLICY_WEIGHTS), common.WEIGHTS_QOS)
            self.create_subscription(String, topic(common.ACTOR_STEPS), self.on_actor_step, common.STEPS_QOS)
            common.wall_timer(self, 0.1, self._finish_pending_end)
        core.arms.append(self)
        if alone:
            if self.acting == "robot":
                common.wall_timer(self, WEIGHTS_CHECK_S, core.publish_weights_if_new)
            core.restore()
            core.start()

    @property
    def exit_code(self) -> int | None:
        return self.core.exit_code

    def publish_stats(self) -> None:
        self.core.publish_stats()

    def publish_weights_if_new(self) -> None:
        self.core.publish_weights_if_new()

    def close(self) -> None:
        if self.core.arms and self.core.arms[0] is self:  # alone: the learner's threads end with it
            self.core.close()

    # ----- sensors ---------------------------------------------------------------------------
    def on_detector(self, msg: String) -> None:
        status = common.parse_json_object(msg) or {}
        if status.get("detector") in ("positions", "classifier"):
            self.detector_in_use = status["detector"]

    def on_score(self, msg: Float32) -> None:
        if self.recorder is not None and np.isfinite(msg.data):
            self.episode_score = max(self.episode_score or 0.0, float(msg.data))

    def on_image(self, msg) -> None:
        super().on_image(msg)
        if self.acting == "robot" and self.image_stamp is not None and self.cfg.learner.observation == "image":
            self.recent_frames.append((self.image_stamp, self.image))

    # ----- acting ----------------------------------------------------------------------------
    def ready_to_act(self) -> bool:
        return self.acting == "learner" and self.recorder is not None

    def compute_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        with self.lock:  # served before the learning thread's next update: at most the one in progress delays it
            action, _ = self.agent.act(obs)
        return action

    def acted(self, obs: dict[str, np.ndarray], action: np.ndarray) -> None:
        self._record_step(obs, action)

    def _record_step(self, obs: dict[str, np.ndarray], action: np.ndarray) -> None:
        self.recorder.add_step(obs, action, self._reward(), self._frame_to_record())
        self.trainer.record_steps(1)  # online: the update budget grows with every executed step

    def on_step_executed(self, step: int, report: dict) -> None:
        if self.recorder is not None:
            self.recorder.executed(step, report.get("action"), str(report.get("source", "")))

    # ----- acting on the robot host (acting:=robot) --------------------------------------------
    def on_actor_step(self, msg: String) -> None:
        """A step the robot host's actor took: its observation (state; the frame by its stamp) and action."""
        report = common.parse_json_object(msg)
        if report is None:
            return
        episode = report.get("episode")
        if self.recorder is None or episode != self.running_episode:
            if isinstance(episode, int) and episode != self.finished_episode and episode != self.running_episode:
                self.early_steps.append(msg)  # its "start" has not been handled here yet
            return
        state, action, step = report.get("state"), report.get("action"), report.get("step")
        if step != len(self.recorder.actions):
            self.get_logger().warning(f"actor step {step} arrived while step {len(self.recorder.actions)} was due: "
                                      "the episode's record has a gap; it is discarded at its end")
            self.recorder.gap = True
            return
        if not (isinstance(state, list) and len(state) == STATE_DIM and isinstance(action, list) and len(action) == 7):
            self.get_logger().warning(f"ignoring a malformed actor step: {msg.data[:200]}")
            return
        obs = {"state": np.asarray(state, np.float32)}
        if self.cfg.learner.observation == "image":
            frame = self._frame_at(report.get("image_stamp"))
            if frame is None:
                self.get_logger().warning(f"step {step}: the frame the actor saw (stamp {report.get('image_stamp')}) "
                                          "never arrived here; the episode's record has a gap")
                self.recorder.gap = True
                return
            obs["image"] = frame
        self._record_step(obs, np.asarray(action, np.float32))
        self.step = step + 1
        self._finish_pending_end()

    def _frame_at(self, stamp) -> np.ndarray | None:
        for frame_stamp, frame in reversed(self.recent_frames):
            if isinstance(stamp, (int, float)) and abs(frame_stamp - stamp) < 1e-6:
                return frame
        return None

    def _frame_to_record(self) -> np.ndarray | None:
        return self.image if self.cfg.episodes.record_frames else None

    def _reward(self) -> float:
        return self.latest_reward if self.latest_reward is not None else self.cfg.reward.reward_bias

    # ----- episodes --------------------------------------------------------------------------
    def handle_event(self, kind: str, event: dict) -> None:
        if kind == "start":
            self._finish_pending_end(force=True)  # (never expected: the next start waits for `saved`)
            self.begin_episode(int(event.get("episode", 0)))
            self.recorder = EpisodeRecorder()
            self.episode_score = None
            early = list(self.early_steps)
            self.early_steps.clear()
            for msg in early:  # the actor's first steps, taken here before this "start"
                if (common.parse_json_object(msg) or {}).get("episode") == self.running_episode:
                    self.on_actor_step(msg)
        elif kind == "end" and self.recorder is not None:
            steps = event.get("steps")
            if self.acting == "robot" and isinstance(steps, int) and len(self.recorder.actions) < steps:
                # The actor's last steps may still be on their way (another writer, another topic).
                self.pending_end = {"steps": steps, "since": time.monotonic(), "label": None}
                return
            self._finish_episode()
        elif kind == "end":
            self.get_logger().warning(f"episode {event.get('episode')} ended but this learner has no record of it (its "
                                      "start never arrived here): it cannot be stored; the episode manager gives it up")
        elif kind == "label" and self.pending_end is not None and event.get("episode") == self.running_episode:
            self.pending_end["label"] = event  # saved when the episode's last steps are in
        elif kind == "label" and self.finished_recorder is not None and event.get("episode") == self.finished_episode:
            self._save_episode(event)
        elif kind == "discarded":  # the operator threw the episode away: nothing is stored
            self.pending_end = None
            self.recorder = self.finished_recorder = None
        elif kind == "aborted" and self.recorder is not None:
            self.pending_end = None
            self._store_aborted(event)
        elif kind == "relabel":
            self._relabel(event)
        elif kind == "pause":
            self.trainer.pause()
        elif kind == "resume":
            self.trainer.resume_learning()
            self.warning = ""

    def _finish_episode(self) -> None:
        """The last action's outcome (its reward and the state it led to) closes the record."""
        self.pending_end = None
        self.recorder.close(self.observation(), self._reward(), self._frame_to_record())
        self.finished_recorder, self.recorder = self.recorder, None
        self.finished_episode, self.running_episode = self.running_episode, None

    def _finish_pending_end(self, force: bool = False) -> None:
        """acting:=robot: close the ended episode once the actor's steps are all in (or waited for long enough)."""
        pending = self.pending_end
        if pending is None or self.recorder is None:
            return
        complete = len(self.recorder.actions) >= pending["steps"]
        if not complete and not force and time.monotonic() - pending["since"] < PENDING_END_WAIT_S:
            return
        if not complete:
            self.get_logger().warning(f"episode {self.running_episode}: {pending['steps']} actions reached the arm but "
                                      f"only {len(self.recorder.actions)} actor steps arrived here")
            self.recorder.gap = True
        label = pending["label"]
        self._finish_episode()
        if label is not None:
            self._save_episode(label)

    def _save_episode(self, event: dict) -> None:
        recorder, self.finished_recorder = self.finished_recorder, None
        success = bool(event.get("success"))
        if recorder.gap or len(recorder.actions) == 0 or len(recorder.states) != len(recorder.actions) + 1:
            why = "steps missing from its record" if recorder.gap else "no complete steps"
            self.get_logger().warning(f"episode {event.get('episode')} has {why}; not stored")
            self.event_pub.publish(common.event_message("saved", episode=event.get("episode"), success=False, path=""))
            return
        episode = recorder.labelled_episode(success, self.cfg.reward)  # the label overrides the detector
        with self.lock:  # the critic's Q of each executed action, for the page's episode replay
            q_values = self.agent.q_of_actions(episode)
        episode.q_values = q_values if q_values is not None and np.all(np.isfinite(q_values)) else None
        record = EpisodeRecord(
            episode_id=self.store.next_episode_id("online"), kind="online", success=success,
            label="success" if success else "failure", label_source=str(event.get("source", "detector")),
            steps=len(episode.actions), policy_version=self.trainer.close_policy_version(),
            config_hash=self.cfg.config_hash(), task=self.cfg.task.name, phase=self.trainer.phase,
            intervention_steps=episode.intervention_steps, detector=self.detector_in_use,
            detector_score=self.episode_score if self.detector_in_use == "classifier" else None,
        )
        path = self.store.save(record, episode, np.asarray(recorder.timestamps), thumbnail=self.image)
        if self.acting == "robot":  # the new version reaches the actor before the next episode starts
            self.publish_weights_if_new()
        phase_before = self.trainer.phase
        self.core.buffer_serials[self.core.buffer_key(self.arm, record.episode_id)] = self.trainer.add_episode(episode, success)
        if self.trainer.phase != phase_before:
            self.publish_stats()  # `catching_up` now: the episode manager holds the next episode
        # The checkpoint before `saved`: the next episode starts on `saved`, and a checkpoint written after
        # it (a lock wait for the update in progress, then the save) held up the next episode's first
        # action by seconds on a loaded machine (the lockstep sim then ran its clock at wall speed).
        self.core.checkpoint()
        self.event_pub.publish(
            common.event_message("saved", episode=event.get("episode"), success=success, path=str(path), episode_id=record.episode_id)
        )
        self.get_logger().info(
            f"stored {record.episode_id}: {'success' if success else 'failure'}, {record.steps} steps, "
            f"policy v{record.policy_version}, {self.agent.stats.critic_updates_online} online updates"
        )
        self.core.scalar_log.episode(self.trainer.online_episodes - 1, success, record.steps, record.intervention_steps)

    def _store_aborted(self, event: dict) -> None:
        """A safety hold ended the running episode: keep it on disk, flagged, out of every replay buffer."""
        recorder, self.recorder, self.running_episode = self.recorder, None, None
        recorder.close_aborted(self.observation(), self._reward(), self._frame_to_record())
        if not recorder.actions:
            return
        episode = recorder.to_episode(terminal=False)
        record = EpisodeRecord(
            episode_id=self.store.next_episode_id("online"), kind="online", success=False, label="aborted",
            label_source="safety", steps=len(episode.actions), policy_version=self.agent.stats.policy_version,
            config_hash=self.cfg.config_hash(), task=self.cfg.task.name, phase=self.trainer.phase,
            aborted=True, abort_reason=str(event.get("reason", "")),
            intervention_steps=episode.intervention_steps,
        )
        self.store.save(record, episode, np.asarray(recorder.timestamps), thumbnail=self.image)
        self.get_logger().warning(f"stored {record.episode_id} as aborted ({record.abort_reason}); it is not trained on")

    def _relabel(self, event: dict) -> None:
        """Operator's corrected label for a stored episode: store (meta + final reward) and replay buffer."""
        episode_id, label = event.get("episode_id"), event.get("label")
        try:
            if not isinstance(episode_id, str) or label not in ("success", "failure"):
                raise ValueError(f"relabel needs episode_id (str) and label success|failure, got {episode_id!r}, {label!r}")
            before = next((r for r in self.store.records() if r.get("episode_id") == episode_id), None)
            final_reward = self.cfg.reward.final_reward(label == "success")
            record = self.store.relabel(episode_id, label, source=str(event.get("source", "operator")), final_reward=final_reward)
            _, episode = self.store.load_episode(episode_id)
        except (ValueError, KeyError, OSError) as err:
            self.get_logger().warning(f"relabel refused: {err}")
            self.event_pub.publish(common.event_message("relabel_failed", episode_id=episode_id, reason=str(err)))
            return
        success_change = int(record.success) - int(bool(before.get("success"))) if record.kind == "online" and before else 0
        in_buffer = self.trainer.relabel(self.core.buffer_serials.get(self.core.buffer_key(self.arm, episode_id), -1),
                                         episode.rewards, episode.terminal,
                                         success_change)
        self.get_logger().info(f"{episode_id} relabelled {label} by the operator (replay buffer updated: {in_buffer})")
        self.event_pub.publish(common.event_message("relabeled", episode_id=episode_id, label=label, in_buffer=in_buffer))

class LearnerHub(Node):
    """The learner process of a graph with several arms (`arms:=N`): the core, one `LearnerNode` per
    arm, and the one control tick that acts for all of them in a batch (acting:=learner)."""

    def __init__(self):
        super().__init__("learner")
        torch.set_num_threads(1)
        cfg = common.declare_task_config(self)
        arms = int(self.declare_parameter("arms", 1).value)
        if arms < 1:
            raise ValueError(f"parameter arms must be >= 1, got {arms}")
        self.core = LearnerCore(cfg, self.get_logger(), str(self.declare_parameter("acting", "learner").value))
        self.extra_nodes = [LearnerNode(self.core, arm) for arm in range(arms)]  # run_node spins them too
        if self.core.acting == "learner":
            self.create_timer(1.0 / cfg.control.rate_hz, self.core.act_for_arms)
        else:
            common.wall_timer(self, WEIGHTS_CHECK_S, self.core.publish_weights_if_new)
        self.core.restore()
        self.core.start()
        self.get_logger().info(f"learning from {arms} arms ({', '.join(arm.arm for arm in self.extra_nodes)}), "
                               f"acting on the {self.core.acting} host")

    @property
    def exit_code(self) -> int | None:
        return self.core.exit_code

    def close(self) -> None:
        self.core.close()


def learner_process() -> Node:
    """The learner of a one-arm graph (`LearnerNode`) or, with the parameter arms > 1, the hub of several."""
    probe = rclpy.create_node("learner_arms_probe", start_parameter_services=False)
    try:
        arms = int(probe.declare_parameter("arms", 1).value)
    finally:
        probe.destroy_node()
    return LearnerHub() if arms > 1 else LearnerNode()


def main(args=None) -> int:
    return common.run_node(learner_process, args)


if __name__ == "__main__":
    raise SystemExit(main())
