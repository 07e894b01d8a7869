"""The record of a running episode (states, frames, actions, rewards, who acted), kept by the node
that stores it: the learner (its episode store) and, with `acting:=robot`, the actor (the robot
host's own copy)."""

from __future__ import annotations

import time

import numpy as np

from parl_robot.config import RewardConfig
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_NOT_EXECUTED, SOURCE_POLICY, EpisodeData


class EpisodeRecorder:
    """Collects (observation, action, reward) of the running episode."""

    def __init__(self):
        self.states: list[np.ndarray] = []
        self.images: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.timestamps: list[float] = []
        self.sources: list[int] = []  # per step: who acted (robot/executed), SOURCE_POLICY until told
        self.gap = False  # acting:=robot: a step of the actor's never reached this node whole

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

    def add_step(self, obs: dict[str, np.ndarray], action: np.ndarray, reward_before: float,
                 frame: np.ndarray | None = None) -> None:
        """The policy's step: the state it acted in (and its frame) and its action; `reward_before` is
        the reward that arrived since the previous step (the previous action's outcome)."""
        if self.actions:
            self.rewards.append(reward_before)
        self.observe(obs, frame)
        self.actions.append(np.asarray(action, np.float32))
        self.sources.append(SOURCE_POLICY)

    def close(self, obs: dict[str, np.ndarray] | None, reward: float, frame: np.ndarray | None = None) -> None:
        """The episode ended: the last action's outcome (its reward and the state it led to) closes the record."""
        if self.actions and obs is not None:
            self.rewards.append(reward)
            self.observe(obs, frame)

    def close_aborted(self, obs: dict[str, np.ndarray] | None, reward: float, frame: np.ndarray | None = None) -> None:
        """A safety hold ended the episode: as `close`, but without a final observation the last,
        unobserved step is dropped."""
        if len(self.states) == len(self.actions) and self.actions:
            if obs is None:
                self.actions.pop()
                self.sources.pop()
            else:
                self.rewards.append(reward)
                self.observe(obs, frame)

    def complete(self) -> bool:
        """Whole steps only: a state after every action, and no step missing."""
        return not self.gap and len(self.actions) > 0 and len(self.states) == len(self.actions) + 1

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
