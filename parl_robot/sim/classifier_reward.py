"""The sim env with its reward from the learned success classifier instead of the simulator's truth.

`ClassifierRewardEnv` wraps `WidowXSimEnv` (rendering frames) the way the reward node serves the
real graph with `reward.detector: classifier`: each step's frame goes through the classifier and
the `SuccessDebouncer` (consecutive positive frames, gripper open), and that decides the reward and
the end of the episode. The ground truth is kept beside it (`info["true_success"]`, and
`true_success_seen` for the episode) so a study can measure what training on the classifier's
labels costs: its false positives end failed episodes as successes, its misses let successful ones
run on. The agent sees the state only (the frame is taken out of the observation).
"""

from __future__ import annotations

import numpy as np

from parl_robot.perception.success import step_reward
from parl_robot.perception.success_classifier import SuccessDebouncer, TrainedClassifier


class ClassifierRewardEnv:
    def __init__(self, env, classifier: TrainedClassifier, reward_threshold: float = 0.0):
        self.env = env
        self.cfg = env.cfg
        self.classifier = classifier
        reward = env.cfg.reward
        self.debouncer = SuccessDebouncer(reward_threshold or classifier.threshold, reward.classifier_consecutive_frames,
                                          reward.require_gripper_open)
        self.true_success_seen = False
        self.max_score = 0.0

    def _state_only(self, obs: dict) -> dict:
        return {key: value for key, value in obs.items() if key != "image"}

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self.debouncer.reset()
        self.true_success_seen, self.max_score = False, 0.0
        return self._state_only(obs), info

    def step(self, action: np.ndarray):
        obs, _, true_success, truncated, info = self.env.step(action)
        probability = float(self.classifier.net.probabilities(obs["image"]))
        self.max_score = max(self.max_score, probability)
        success = self.debouncer.update(probability, bool(self.env.world.gripper_open))
        self.true_success_seen = self.true_success_seen or bool(true_success)
        steps_left = self.env.steps < self.cfg.control.max_episode_steps
        info = {**info, "true_success": bool(true_success), "score": probability}
        return self._state_only(obs), step_reward(success, self.cfg.reward), success, (not success and not steps_left), info

    def close(self) -> None:
        self.env.close()
