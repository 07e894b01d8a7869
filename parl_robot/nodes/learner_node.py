"""Learner node: acts at the control rate with PA-RL action optimization and learns in a thread.

The ROS side of learning: sensors in, actions and `learner/stats` out, episodes recorded from
`episode/event` and stored. The schedule itself (offline pre-training, warm-up, the critic's
catch-up, the online update budget) is `parl_robot.rl.trainer.Trainer`, the same one the sim study
runs; this node calls it from its learning thread, under the lock that acting takes too.

Start-up: resume from the last checkpoint and every stored episode (demos -> offline buffer,
online episodes -> online buffer; aborted ones stay on disk only); without a checkpoint, the trainer
pre-trains (phase `offline`). While the critic catches up after warm-up, stats say `catching_up` and
the episode manager holds the next episode. Every labelled episode is saved atomically before
`saved` is announced; a checkpoint follows.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float32MultiArray, MultiArrayDimension, String

from parl_robot.config import RewardConfig
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED, SOURCE_POLICY, EpisodeData
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.nodes import common
from parl_robot.observation import STATE_DIM, state_vector
from parl_robot.perception.object_poses import decode_object_poses
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.checkpoint import load_checkpoint, save_checkpoint
from parl_robot.rl.fair_lock import FairLock
from parl_robot.rl.losses import achievable_returns
from parl_robot.rl.replay_buffer import ReplayBuffer
from parl_robot.rl.scalar_log import ScalarLog
from parl_robot.rl.trainer import OFFLINE, Trainer

# In simulated time, control ticks a step may wait for the previous step's robot/executed report
# before the learner acts without it (the control node is gone or the report was lost).
MAX_DEFERRED_TICKS = 5


class EpisodeRecorder:
    """Collects (observation, action, reward) of the running episode."""

    def __init__(self):
        self.states: list[np.ndarray] = []
        self.images: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.timestamps: list[float] = []
        self.sources: list[int] = []  # per step: who acted (robot/executed), SOURCE_POLICY until told

    def executed(self, step: int, action, source: str) -> None:
        """The control node's report for `step`: the operator's action replaces the policy's when they
        drove; a refused or held step is marked as not executed."""
        if not 0 <= step < len(self.actions):
            return
        if source == "intervention" and action is not None and len(action) == len(self.actions[step]):
            self.actions[step] = np.asarray(action, np.float32)
            self.sources[step] = SOURCE_INTERVENTION
        elif action is None or source == "held":
            self.sources[step] = SOURCE_NOT_EXECUTED

    def observe(self, obs: dict[str, np.ndarray], frame: np.ndarray | None = None) -> None:
        """A state, with the camera frame the policy saw (image observations) or `frame`
        (`episodes.record_frames` with state observations)."""
        self.states.append(obs["state"])
        image = obs.get("image", frame)
        if image is not None:
            self.images.append(image)
        self.timestamps.append(time.time())

    def labelled_episode(self, success: bool, reward: RewardConfig) -> EpisodeData:
        """The finished episode as the label says: the label decides the last step's reward (the
        success reward on success, the failure reward otherwise, whatever the detector published)
        and whether the episode ended in a terminal state. A failure label therefore cannot leave a
        detector's success reward behind, whose Monte-Carlo return would look like a success's."""
        if self.rewards:
            self.rewards[-1] = reward.final_reward(success)
        return self.to_episode(terminal=success)

    def to_episode(self, terminal: bool) -> EpisodeData:
        return EpisodeData(
            np.asarray(self.states, np.float32),
            np.asarray(self.actions, np.float32),
            np.asarray(self.rewards, np.float32),
            terminal,
            # Frames only when every state has one (a camera that started late records none).
            np.asarray(self.images) if self.images and len(self.images) == len(self.states) else None,
            sources=np.asarray(self.sources[: len(self.actions)], np.uint8),
        )


def _age_text(age_s: float, judged_by: str = "") -> str:
    if not np.isfinite(age_s):
        return "none received"
    if age_s < 0:
        return f"stamped {-age_s:.2f} s in the future: are the clocks synchronized?"
    return f"{age_s:.2f} s old{judged_by}"


class LearnerNode(Node):
    def __init__(self):
        super().__init__("learner")
        torch.set_num_threads(1)
        self.cfg = common.declare_task_config(self)
        learner = self.cfg.learner
        self.store = EpisodeStore(self.cfg.episodes.store_dir)
        self.checkpoint_dir = Path(self.cfg.episodes.store_dir) / "checkpoints"
        self.scalar_log = ScalarLog(Path(self.cfg.episodes.store_dir) / "tensorboard", self.cfg.learner.tensorboard,
                                    log=self.get_logger().info)
        image_shape = (self.cfg.sim.camera_height, self.cfg.sim.camera_width, 3) if learner.observation == "image" else None
        self.spec = ObservationSpec(STATE_DIM, image_shape)
        self.agent = PARLAgent(
            learner,
            self.spec,
            value_range=achievable_returns(self.cfg.reward.success_reward, self.cfg.reward.reward_bias, learner.critic.discount),
            instruction=self.cfg.task.instruction,
            action_scale=self.cfg.control.action_scale,
        )
        self.offline = ReplayBuffer(self.spec, 7, learner.schedule.replay_capacity, learner.critic.discount)
        self.online = ReplayBuffer(self.spec, 7, learner.schedule.replay_capacity, learner.critic.discount)
        self.agent.attach_action_caches([self.offline, self.online])  # big policies (learner.action_cache_size)
        self.lock = FairLock()  # one update at a time, never during an action's computation; first come first served
        self.stop_event = threading.Event()
        self.trainer = Trainer(self.agent, self.offline, self.online, learner, lock=self.lock, log=self.get_logger(),
                               checkpoint=self._checkpoint)
        self.warning = ""  # why the node does not act (stale inputs); the trainer has its own
        self.buffer_serials: dict[str, int] = {}  # online episode id -> its serial in self.online
        # Latest sensor values.
        self.ee_position: np.ndarray | None = None
        self.gripper_open: bool | None = None
        self.object_position: np.ndarray | None = None
        self.image: np.ndarray | None = None
        self.image_stamp: float | None = None  # header stamp (s) of self.image
        self.latest_reward: float | None = None
        self.input_times: dict[str, float] = {}  # arrival time (monotonic) of the latest pose / objects
        self.poses_stamp: float | None = None  # `_meta.stamp` of the latest objects/poses (ROS time, s)
        self.stale_since: float | None = None
        # Episode in progress.
        self.running_episode: int | None = None
        self.finished_episode: int | None = None
        self.recorder: EpisodeRecorder | None = None
        self.finished_recorder: EpisodeRecorder | None = None
        self.step = 0
        # Simulated time (lockstep): act on step k+1 only after step k was reported executed, so each
        # observation follows the previous action, as on the real arm where time does not wait.
        self.await_execution = common.uses_sim_time(self)
        self.unexecuted_step: int | None = None  # the step whose robot/executed report is still due
        self.deferred_ticks = 0  # control ticks that came while it was due

        self.action_pub = self.create_publisher(Float32MultiArray, common.ROBOT_ACTION, common.COMMAND_QOS)
        self.stats_pub = self.create_publisher(String, common.LEARNER_STATS, common.EVENT_QOS)
        self.event_pub = self.create_publisher(String, common.EPISODE_EVENT, common.EVENT_QOS)
        self.timing_pub = self.create_publisher(String, common.LEARNER_TIMING, common.COMMAND_QOS)
        self.acting_pub = self.create_publisher(String, common.LEARNER_ACTING, common.COMMAND_QOS)
        self.create_subscription(PoseStamped, common.ROBOT_EE_POSE, self.on_pose, common.SENSOR_QOS)
        self.create_subscription(JointState, common.ROBOT_STATE, self.on_state, common.SENSOR_QOS)
        self.create_subscription(String, common.OBJECT_POSES, self.on_objects, common.SENSOR_QOS)
        self.create_subscription(Float32, common.REWARD, self.on_reward, common.COMMAND_QOS)
        self.create_subscription(String, common.EPISODE_EVENT, self.on_event, common.EVENT_QOS)
        self.safety_held: list[str] = []  # the control node's latched hold reasons: never act while held
        self.create_subscription(String, common.ROBOT_SAFETY, self.on_safety, common.LATCHED_QOS)
        self.create_subscription(String, common.ROBOT_EXECUTED, self.on_executed, common.COMMAND_QOS)
        # Images feed image policies and, for every policy, the episode thumbnail on the operator page.
        self.create_subscription(Image, common.CAMERA_IMAGE, self.on_image, common.SENSOR_QOS)
        # Which reward detector labels the episodes, and the success classifier's score (with the record).
        self.detector_in_use = self.cfg.reward.detector
        self.episode_score: float | None = None
        self.create_subscription(String, common.REWARD_DETECTOR, self.on_detector, common.LATCHED_QOS)
        self.create_subscription(Float32, common.REWARD_SCORE, self.on_score, common.COMMAND_QOS)
        self.create_timer(1.0 / self.cfg.control.rate_hz, self.on_control_tick)
        common.wall_timer(self, 1.0, self.publish_stats)
        self._restore()
        self.learning_thread = threading.Thread(target=self._learning_loop, name="learning", daemon=True)
        self.learning_thread.start()

    # ----- start-up --------------------------------------------------------------------------
    def _restore(self) -> None:
        quarantined_before = set(self.store.quarantine_dir.iterdir())
        # Frames stay on disk for state policies (episodes.record_frames stores them for the classifier).
        loaded = self.store.load_all(with_images=self.cfg.learner.observation == "image")
        for directory in sorted(set(self.store.quarantine_dir.iterdir()) - quarantined_before):
            reason = (directory / "reason.txt").read_text().strip() if (directory / "reason.txt").is_file() else "?"
            self.get_logger().error(f"quarantined unreadable episode {directory.name} ({reason}); the others load")
        for record, episode in loaded:
            if record.task != self.cfg.task.name or record.aborted:
                continue
            if record.kind == "demo":
                self.trainer.add_demo(episode)
            else:
                self.buffer_serials[record.episode_id] = self.trainer.add_stored_episode(episode, record.success, record.phase)
        state = load_checkpoint(self.checkpoint_dir)
        if state is not None:
            self.trainer.resume(state["agent"])
            self.get_logger().info(
                f"resumed from checkpoint: policy version {self.agent.stats.policy_version}, "
                f"{self.trainer.online_episodes} online episodes, {len(self.offline)} offline transitions"
            )
        elif len(self.offline) == 0:
            raise RuntimeError(
                f"no demonstrations in {self.store.root}: record some first "
                f"(`parl-robot record-demos task:={self.cfg.task.name}`)"
            )
        self.get_logger().info(f"loaded {self.offline.episodes_added} demo episodes ({len(self.offline)} transitions)")

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
            self.get_logger().fatal(f"learning thread failed: {type(err).__name__}: {err}")
            self.exit_code = 1

    def _checkpoint(self) -> None:
        with self.lock:
            state = {"agent": self.agent.state_dict(), "online_episodes": self.trainer.online_episodes}
        save_checkpoint(self.checkpoint_dir, state)

    # ----- sensors ---------------------------------------------------------------------------
    def on_pose(self, msg: PoseStamped) -> None:
        self.input_times["robot/ee_pose"] = time.monotonic()
        p = msg.pose.position
        self.ee_position = np.array([p.x, p.y, p.z])

    def on_state(self, msg: JointState) -> None:
        if "gripper" in msg.name:
            self.gripper_open = msg.position[list(msg.name).index("gripper")] > 0.5

    def on_objects(self, msg: String) -> None:
        poses = decode_object_poses(msg.data)
        position = None if poses is None else poses.positions.get(self.cfg.reward.object_name)
        if position is None:
            return
        self.object_position = np.asarray(position, float)
        # Judged by the stamp of the image (sim: the step) the poses come from, on this node's clock.
        self.poses_stamp = poses.stamp if poses.stamp is not None else None
        self.input_times["objects/poses"] = time.monotonic()

    def on_image(self, msg: Image) -> None:
        image = common.rgb_image_from_message(msg)
        if image is None:
            self.get_logger().warning(f"ignoring image with encoding {msg.encoding} and {len(msg.data)} bytes")
            return
        self.image = image
        self.image_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def on_detector(self, msg: String) -> None:
        status = common.parse_json_object(msg) or {}
        if status.get("detector") in ("positions", "classifier"):
            self.detector_in_use = status["detector"]

    def on_score(self, msg: Float32) -> None:
        if self.recorder is not None and np.isfinite(msg.data):
            self.episode_score = max(self.episode_score or 0.0, float(msg.data))

    def on_reward(self, msg: Float32) -> None:
        self.latest_reward = float(msg.data)

    def stale_inputs(self) -> list[str]:
        """Inputs the policy needs that are older than `learner.max_observation_age_s` (or missing),
        each with its age. The image is judged by its capture stamp (header.stamp) against this
        node's clock, so a frame that waited in a driver queue or on the wire counts as old (and one
        stamped in the future means unsynchronized clocks); object poses by their arrival.
        The robot pose comes only when the arm moves, so it is not required to be fresh."""
        limit = self.cfg.learner.max_observation_age_s
        if self.poses_stamp is not None:
            poses_age = common.node_seconds(self) - self.poses_stamp
            judged = " by its stamp"
        else:
            poses_age, judged = time.monotonic() - self.input_times.get("objects/poses", -np.inf), ""
        stale = [] if abs(poses_age) <= limit else [f"objects/poses ({_age_text(poses_age, judged)})"]
        if self.cfg.learner.observation == "image":
            image_age = np.inf if self.image_stamp is None else self.get_clock().now().nanoseconds * 1e-9 - self.image_stamp
            if abs(image_age) > limit:
                stale.append(f"camera/image_raw ({_age_text(image_age, ' by its capture stamp')})")
        return stale

    def observation(self) -> dict[str, np.ndarray] | None:
        if self.ee_position is None or self.gripper_open is None or self.object_position is None:
            return None
        obs = {"state": state_vector(self.ee_position, self.gripper_open, self.object_position)}
        if self.cfg.learner.observation == "image":
            if self.image is None:
                return None
            obs["image"] = self.image
        return obs

    # ----- acting ----------------------------------------------------------------------------
    def on_executed(self, msg: String) -> None:
        report = common.parse_json_object(msg) or {}
        step = report.get("step")
        if self.recorder is not None and isinstance(step, int):
            self.recorder.executed(step, report.get("action"), str(report.get("source", "")))
        if isinstance(step, int) and self.unexecuted_step is not None and step >= self.unexecuted_step:
            self.unexecuted_step = None
            if self.deferred_ticks:  # the step's time already came: act now
                self.deferred_ticks = 0
                self.on_control_tick()

    def on_safety(self, msg: String) -> None:
        safety = common.parse_json_object(msg) or {}
        held = list(safety.get("reasons") or []) if safety.get("state") == "held" else []
        if held and not self.safety_held:
            self.get_logger().warning(f"arm held ({', '.join(held)}): not acting")
        if held:
            self.warning = f"not acting: the arm is held ({', '.join(held)})"
        elif self.safety_held and self.warning.startswith("not acting: the arm is held"):
            self.warning = ""
        self.safety_held = held

    def on_control_tick(self) -> None:
        if self.running_episode is None or self.recorder is None or self.safety_held:
            return
        if self.step >= self.cfg.control.max_episode_steps:  # the episode is over; its "end" is on the way
            return
        if self.unexecuted_step is not None:
            self.deferred_ticks += 1
            if self.deferred_ticks <= MAX_DEFERRED_TICKS:
                return  # acted on when the report comes
            self.get_logger().warning(f"no robot/executed report for step {self.unexecuted_step}: acting without it")
            self.unexecuted_step, self.deferred_ticks = None, 0
        tick_wall, tick_start = time.time(), time.perf_counter()
        stale = self.stale_inputs()
        obs = None if stale else self.observation()
        if obs is None:
            # Never act on old data: without actions the control node's watchdog holds the arm.
            now = time.monotonic()
            if self.stale_since is None:
                self.stale_since = now
                self.get_logger().warning(f"not acting: no fresh {', '.join(stale) or 'observation'}; the arm holds")
            if now - self.stale_since > 1.0:
                self.warning = f"not acting: no fresh {', '.join(stale) or 'observation'} for {now - self.stale_since:.0f} s (camera lost?)"
            return
        if self.stale_since is not None:
            self.get_logger().info("inputs fresh again: acting")
            self.stale_since = None
            if self.warning.startswith("not acting"):
                self.warning = ""
        if self.recorder.actions:
            self.recorder.rewards.append(self._reward())
        self.recorder.observe(obs, self._frame_to_record())
        if self.await_execution:  # in lockstep sim, time waits for this step's action (parl_robot/sim/lockstep.py)
            self.acting_pub.publish(String(data=json.dumps({"episode": self.running_episode, "step": self.step})))
        with self.lock:  # served before the learning thread's next update: at most the one in progress delays it
            action, _ = self.agent.act(obs)
        self.recorder.actions.append(action)
        self.recorder.sources.append(SOURCE_POLICY)
        msg = Float32MultiArray()
        msg.layout.dim = [MultiArrayDimension(label="action", size=7, stride=7)]
        msg.layout.data_offset = self.step
        msg.data = action.tolist()
        self.action_pub.publish(msg)
        if self.await_execution:
            self.unexecuted_step = self.step
        # Per-step timing for benchmarks/control_loop.py and for "why is my loop slow" questions.
        self.timing_pub.publish(String(data=json.dumps({
            "step": self.step, "tick_time": tick_wall, "compute_ms": round((time.perf_counter() - tick_start) * 1e3, 3),
            "image_stamp": self.image_stamp if self.cfg.learner.observation == "image" else None,
        })))
        self.step += 1
        self.trainer.record_steps(1)  # online: the update budget grows with every executed step

    def _frame_to_record(self) -> np.ndarray | None:
        return self.image if self.cfg.episodes.record_frames else None

    def _reward(self) -> float:
        return self.latest_reward if self.latest_reward is not None else self.cfg.reward.reward_bias

    # ----- episodes --------------------------------------------------------------------------
    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is None:
            return
        kind = event["type"]
        if kind == "start":
            self.running_episode = int(event.get("episode", 0))
            self.recorder = EpisodeRecorder()
            self.episode_score = None
            self.step = 0
            self.unexecuted_step, self.deferred_ticks = None, 0
        elif kind == "end" and self.recorder is not None:
            # The last action's outcome: its reward and the state it led to.
            obs = self.observation()
            if self.recorder.actions and obs is not None:
                self.recorder.rewards.append(self._reward())
                self.recorder.observe(obs, self._frame_to_record())
            self.finished_recorder, self.recorder = self.recorder, None
            self.finished_episode, self.running_episode = self.running_episode, None
        elif kind == "label" and self.finished_recorder is not None and event.get("episode") == self.finished_episode:
            self._save_episode(event)
        elif kind == "discarded":  # the operator threw the episode away: nothing is stored
            self.recorder = self.finished_recorder = None
        elif kind == "aborted" and self.recorder is not None:
            self._store_aborted(event)
        elif kind == "relabel":
            self._relabel(event)
        elif kind == "pause":
            self.trainer.pause()
        elif kind == "resume":
            self.trainer.resume_learning()
            self.warning = ""

    def _save_episode(self, event: dict) -> None:
        recorder, self.finished_recorder = self.finished_recorder, None
        success = bool(event.get("success"))
        if len(recorder.actions) == 0 or len(recorder.states) != len(recorder.actions) + 1:
            self.get_logger().warning(f"episode {event.get('episode')} has no complete steps; not stored")
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
        phase_before = self.trainer.phase
        self.buffer_serials[record.episode_id] = self.trainer.add_episode(episode, success)
        if self.trainer.phase != phase_before:
            self.publish_stats()  # `catching_up` now: the episode manager holds the next episode
        self.event_pub.publish(
            common.event_message("saved", episode=event.get("episode"), success=success, path=str(path), episode_id=record.episode_id)
        )
        self.get_logger().info(
            f"stored {record.episode_id}: {'success' if success else 'failure'}, {record.steps} steps, "
            f"policy v{record.policy_version}, {self.agent.stats.critic_updates_online} online updates"
        )
        self.scalar_log.episode(self.trainer.online_episodes - 1, success, record.steps, record.intervention_steps)
        self._checkpoint()

    def _store_aborted(self, event: dict) -> None:
        """A safety hold ended the running episode: keep it on disk, flagged, out of every replay buffer."""
        recorder, self.recorder, self.running_episode = self.recorder, None, None
        if len(recorder.states) == len(recorder.actions) and recorder.actions:
            recorder.rewards.append(self._reward())
            obs = self.observation()
            if obs is None:  # no final observation: drop the last, unobserved step
                recorder.actions.pop()
                recorder.rewards.pop()
            else:
                recorder.observe(obs, self._frame_to_record())
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
        in_buffer = self.trainer.relabel(self.buffer_serials.get(episode_id, -1), episode.rewards, episode.terminal,
                                         success_change)
        self.get_logger().info(f"{episode_id} relabelled {label} by the operator (replay buffer updated: {in_buffer})")
        self.event_pub.publish(common.event_message("relabeled", episode_id=episode_id, label=label, in_buffer=in_buffer))

    # ----- stats -----------------------------------------------------------------------------
    def publish_stats(self) -> None:
        stats = self.trainer.stats()
        self.scalar_log.stats(stats)
        stats["warning"] = self.warning or self.trainer.warning
        self.stats_pub.publish(String(data=json.dumps(stats, default=float)))

    def close(self) -> None:
        self.stop_event.set()
        self.learning_thread.join(timeout=10.0)
        self.scalar_log.close()


def main(args=None) -> int:
    return common.run_node(LearnerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
