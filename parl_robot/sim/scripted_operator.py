"""A scripted operator for sim: stands in for the person at the teleop device, to exercise the
intervention path end to end (CI) and to measure what interventions do for learning.

It watches the episode through a noise-free scripted demonstrator that follows the arm's progress
along the task's waypoints (approach, grasp, close, lift, carry, lower, release). When the policy
makes no progress for `stall_steps` steps — it neither reaches the next waypoint nor gets at least
`progress_m` closer to it — the operator takes over for `takeover_steps` steps, driving with the
demonstrator's actions (with its own small noise, as a person's hand), then hands control back. At
most `max_takeovers` per episode, so the policy still acts for most of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parl_robot.config import TaskConfig
from parl_robot.data.episode import SOURCE_INTERVENTION, SOURCE_POLICY
from parl_robot.sim.demonstrator import DemonstratorConfig, ScriptedDemonstrator


@dataclass
class OperatorConfig:
    stall_steps: int = 6  # steps without progress before taking over
    progress_m: float = 0.01  # getting this much closer to the next waypoint counts as progress
    takeover_steps: int = 10  # steps the operator drives per take-over
    max_takeovers: int = 2  # per episode
    action_noise: float = 0.05

    def __post_init__(self) -> None:
        for name in ("stall_steps", "takeover_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"OperatorConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_takeovers < 0 or self.progress_m <= 0 or self.action_noise < 0:
            raise ValueError(f"OperatorConfig: max_takeovers >= 0, progress_m > 0, action_noise >= 0; got {self}")


class ScriptedOperator:
    def __init__(self, cfg: TaskConfig, operator: OperatorConfig | None = None, seed: int = 0):
        self.config = operator or OperatorConfig()
        # One demonstrator both tracks the progress and drives: its phase follows the arm whoever moves it.
        self.guide = ScriptedDemonstrator(cfg, DemonstratorConfig(action_noise=self.config.action_noise,
                                                                  grasp_offset_std_m=0.0, side_approach_probability=0.0),
                                          seed=seed)
        self.reset()

    def reset(self) -> None:
        self.guide.reset()
        self.best = (-1, np.inf)  # (waypoint phase, distance to it): progress is a later phase or closer
        self.steps_without_progress = 0
        self.driving_left = 0
        self.takeovers = 0

    def _progress(self, state: np.ndarray) -> bool:
        """Track the arm along the waypoints (and compute the guide's action for this step); True when the
        arm reached a later waypoint or got `progress_m` closer to the next one than ever before."""
        self.guide_action = self.guide.act(state)  # advances the guide's phase when the arm reached a waypoint
        phase, distance = self.guide.phase, float(np.linalg.norm(self.guide.target(state) - state[:3]))
        best_phase, best_distance = self.best
        improved = phase > best_phase or distance < best_distance - self.config.progress_m
        if improved:
            self.best = (phase, distance)
        return improved

    def step(self, obs: dict[str, np.ndarray], policy_action: np.ndarray) -> tuple[np.ndarray, int]:
        """The action to execute for this step and who acted (SOURCE_POLICY or SOURCE_INTERVENTION)."""
        improved = self._progress(obs["state"])
        if self.driving_left > 0:
            self.driving_left -= 1
            return self.guide_action, SOURCE_INTERVENTION
        self.steps_without_progress = 0 if improved else self.steps_without_progress + 1
        if self.steps_without_progress >= self.config.stall_steps and self.takeovers < self.config.max_takeovers:
            self.takeovers += 1
            self.steps_without_progress = 0
            self.driving_left = self.config.takeover_steps - 1
            return self.guide_action, SOURCE_INTERVENTION
        return np.asarray(policy_action, np.float32), SOURCE_POLICY
