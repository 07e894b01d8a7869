"""Actor node (`acting:=robot`): the policy acts on the robot host, from the weights the learner publishes.

With the learner on a GPU server across a slow link, acting there puts the link's round trip
inside every control period (image out, action back). This node runs next to the arm instead:
it builds the same agent from the same task config, loads each policy version the learner
publishes on `learner/policy_weights` (versioned, SHA-256-checked chunks: `rl/weight_transport.py`;
the sampling policy's trained weights and the critic: `rl/acting_weights.py`), and acts with the
same rule (samples, the critic's action optimization, selection) at the control rate. Each step
goes to the learner on `actor/steps` (state, the image's stamp, the action, the policy version),
and the learner records the episode from those. Until the first version arrives it does not act
(the control node's watchdog holds the arm) and says so.

The robot host keeps its own copy of every episode the actor drove, written as the learner writes
its store (staged, fsynced, renamed: crash-safe) into `<store_dir>/robot_host/`: labelled when the
label comes, aborted ones flagged. A learner that is down, restarted or across a cut link loses
nothing the arm did; `parl-robot export` reads that folder like any store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from std_msgs.msg import String, UInt8MultiArray

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.nodes import common
from parl_robot.nodes.acting_node import ActingNode
from parl_robot.nodes.episode_recorder import EpisodeRecorder
from parl_robot.rl.acting_weights import load_acting_weights
from parl_robot.rl.weight_transport import WeightsAssembler, WeightsHeader
from parl_robot.task_agent import agent_for

ROBOT_COPY_DIR = "robot_host"  # below store_dir: the robot host's own copy of the episodes it drove


class ActorNode(ActingNode):
    def __init__(self):
        super().__init__("actor")
        torch.set_num_threads(1)
        self.agent = agent_for(self.cfg)
        self.assembler = WeightsAssembler()
        self.policy_version: int | None = None
        self.rejections_reported = 0
        self.waiting_said_for: int | None = None  # the episode for which "no weights yet" was logged
        self.copy_store = EpisodeStore(Path(self.cfg.episodes.store_dir) / ROBOT_COPY_DIR)
        self.recorder: EpisodeRecorder | None = None
        self.finished: tuple[int, EpisodeRecorder] | None = None  # the ended episode, until its label comes
        self.learner_phase = ""
        self.create_subscription(String, common.LEARNER_STATS, self.on_learner_stats, common.EVENT_QOS)
        self.steps_pub = self.create_publisher(String, common.ACTOR_STEPS, common.STEPS_QOS)
        self.create_subscription(UInt8MultiArray, common.POLICY_WEIGHTS, self.on_weights, common.WEIGHTS_QOS)
        self.start_acting()
        self.get_logger().info("waiting for the learner's policy weights (learner/policy_weights)")

    def on_weights(self, msg: UInt8MultiArray) -> None:
        try:
            header = WeightsHeader.from_json(msg.layout.dim[0].label if msg.layout.dim else "")
        except ValueError as err:
            self.get_logger().warning(f"ignoring a weights chunk: {err}")
            return
        delivered = self.assembler.add(header, bytes(msg.data))
        for reason in self.assembler.rejected[self.rejections_reported:]:
            self.get_logger().error(f"policy weights rejected, still acting with v{self.policy_version}: {reason}")
        self.rejections_reported = len(self.assembler.rejected)
        if delivered is None:
            return
        version, weights = delivered
        try:
            load_acting_weights(self.agent, weights)
        except ValueError as err:
            self.get_logger().error(f"policy v{version} not loaded: {err}")
            return
        first = self.policy_version is None
        self.policy_version = version
        self.get_logger().info(f"acting with policy v{version}" + (" (first weights: acting from now on)" if first else ""))

    def ready_to_act(self) -> bool:
        if self.policy_version is None:
            if self.waiting_said_for != self.running_episode:
                self.waiting_said_for = self.running_episode
                self.get_logger().warning(f"episode {self.running_episode} runs but no policy weights came from the "
                                          "learner yet: not acting (the arm holds)")
            return False
        return True

    def compute_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action, _ = self.agent.act(obs)
        return action

    def acted(self, obs: dict[str, np.ndarray], action: np.ndarray) -> None:
        """The step for the learner's record (and this host's copy), before the action goes to the arm."""
        self.steps_pub.publish(String(data=json.dumps({
            "episode": self.running_episode, "step": self.step, "state": obs["state"].tolist(),
            "image_stamp": self.image_stamp if "image" in obs else None, "action": action.tolist(),
            "policy_version": self.policy_version,
        })))
        if self.recorder is not None:
            self.recorder.add_step(obs, action, self._reward(), self._frame_to_record())

    # ----- this host's copy of the episodes ----------------------------------------------------
    def on_learner_stats(self, msg: String) -> None:
        stats = common.parse_json_object(msg) or {}
        if isinstance(stats.get("phase"), str):
            self.learner_phase = stats["phase"]

    def on_step_executed(self, step: int, report: dict) -> None:
        if self.recorder is not None:
            self.recorder.executed(step, report.get("action"), str(report.get("source", "")))

    def handle_event(self, kind: str, event: dict) -> None:
        episode = self.running_episode
        super().handle_event(kind, event)
        if kind == "start":
            self.recorder, self.finished = EpisodeRecorder(), None
        elif kind == "end" and self.recorder is not None:
            self.recorder.close(self.observation(), self._reward(), self._frame_to_record())
            self.finished, self.recorder = (episode, self.recorder), None
        elif kind == "label" and self.finished is not None and event.get("episode") == self.finished[0]:
            recorder, self.finished = self.finished[1], None
            self._save_copy(recorder, event)
        elif kind == "aborted" and self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            recorder.close_aborted(self.observation(), self._reward(), self._frame_to_record())
            self._save_copy(recorder, event, aborted=True)
        elif kind == "discarded":
            self.recorder = self.finished = None

    def _save_copy(self, recorder: EpisodeRecorder, event: dict, aborted: bool = False) -> None:
        success = bool(event.get("success")) and not aborted
        if not recorder.actions or (not aborted and not recorder.complete()):
            self.get_logger().warning(f"episode {event.get('episode')}: no complete steps here; no robot-host copy")
            return
        episode = recorder.to_episode(terminal=False) if aborted else recorder.labelled_episode(success, self.cfg.reward)
        record = EpisodeRecord(
            episode_id=self.copy_store.next_episode_id("online"), kind="online", success=success,
            label="aborted" if aborted else ("success" if success else "failure"),
            label_source="safety" if aborted else str(event.get("source", "detector")), steps=len(episode.actions),
            policy_version=self.policy_version if self.policy_version is not None else -1,
            config_hash=self.cfg.config_hash(), task=self.cfg.task.name, phase=self.learner_phase,
            aborted=aborted, abort_reason=str(event.get("reason", "")) if aborted else "",
            intervention_steps=episode.intervention_steps,
        )
        try:
            path = self.copy_store.save(record, episode, np.asarray(recorder.timestamps), thumbnail=self.image)
        except OSError as err:  # the arm goes on: the learner has the episode too
            self.get_logger().error(f"robot-host copy of episode {event.get('episode')} not written: {err}")
            return
        self.get_logger().info(f"robot-host copy: {path}")

    def _reward(self) -> float:
        return self.latest_reward if self.latest_reward is not None else self.cfg.reward.reward_bias

    def _frame_to_record(self) -> np.ndarray | None:
        return self.image if self.cfg.episodes.record_frames else None


def main(args=None) -> int:
    return common.run_node(ActorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
