"""A scripted, noisy demonstrator that stands in for teleoperation in sim.

It is multimodal on purpose (a top-down approach or a low side approach, chosen per episode) and
imperfect (per-episode grasp offset and per-step action noise), so that behaviour cloning alone
does not solve the task and PA-RL has something to improve. Success rate on `cup_to_rack` with the
defaults lies in the band stated in `tests/test_sim.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parl_robot.config import TaskConfig
from parl_robot.sim.scenes import SCENE_OBJECTS

APPROACH_HEIGHT_M = 0.09
CARRY_HEIGHT_M = 0.16
RELEASE_CLEARANCE_M = 0.035


@dataclass
class DemonstratorConfig:
    action_noise: float = 0.15  # std of Gaussian noise on normalized actions
    grasp_offset_std_m: float = 0.014  # per-episode xy error of the grasp point
    side_approach_probability: float = 0.5


class ScriptedDemonstrator:
    def __init__(self, cfg: TaskConfig, demo: DemonstratorConfig | None = None, seed: int = 0):
        self.cfg = cfg
        self.demo = demo or DemonstratorConfig()
        self.rng = np.random.default_rng(seed)
        self.translation_scale = np.asarray(cfg.control.action_scale[:3])
        target_low, target_high = np.asarray(cfg.reward.target_low), np.asarray(cfg.reward.target_high)
        self.place_xy = (target_low[:2] + target_high[:2]) / 2
        self.place_surface = target_low[2]
        obj = next(o for o in SCENE_OBJECTS[cfg.task.name] if o.name == cfg.reward.object_name)
        self.grasp_height = obj.grasp_height
        self.reset()

    def reset(self) -> None:
        self.phase = 0
        self.side_approach = bool(self.rng.random() < self.demo.side_approach_probability)
        self.grasp_offset = np.append(self.rng.normal(0.0, self.demo.grasp_offset_std_m, 2), 0.0)

    def _waypoints(self, object_position: np.ndarray) -> list[tuple[np.ndarray, bool, float]]:
        """(position, gripper_open, tolerance) per phase."""
        grasp = np.array([object_position[0], object_position[1], self.grasp_height]) + self.grasp_offset
        if self.side_approach:
            approach = grasp + np.array([-0.07, 0.0, 0.01])
        else:
            approach = grasp + np.array([0.0, 0.0, APPROACH_HEIGHT_M])
        place_height = self.place_surface + self.grasp_height + RELEASE_CLEARANCE_M
        return [
            (approach, True, 0.012),
            (grasp, True, 0.006),
            (grasp, False, np.inf),  # close
            (np.array([grasp[0], grasp[1], CARRY_HEIGHT_M]), False, 0.015),
            (np.array([*self.place_xy, CARRY_HEIGHT_M]), False, 0.015),
            (np.array([*self.place_xy, place_height]), False, 0.01),
            (np.array([*self.place_xy, place_height]), True, np.inf),  # release and wait
        ]

    def target(self, state: np.ndarray) -> np.ndarray:
        """The position of the waypoint the demonstrator is heading for now (its current phase)."""
        return self._waypoints(state[4:7])[self.phase][0]

    def act(self, state: np.ndarray) -> np.ndarray:
        """Action in [-1, 1]^7 for the state vector of `parl_robot.observation.state_vector`."""
        ee_position, object_position = state[:3], state[4:7]
        waypoints = self._waypoints(object_position)
        target, gripper_open, tolerance = waypoints[self.phase]
        if np.linalg.norm(target - ee_position) < tolerance and self.phase < len(waypoints) - 1:
            self.phase += 1
        elif self.phase == 2:  # one control step to close the gripper
            self.phase += 1
        target, gripper_open, _ = waypoints[self.phase]
        action = np.zeros(7)
        action[:3] = np.clip((target - ee_position) / self.translation_scale, -1.0, 1.0)
        action[:6] += self.rng.normal(0.0, self.demo.action_noise, 6) * np.array([1, 1, 1, 0.2, 0.2, 0.2])
        action[6] = 1.0 if gripper_open else -1.0
        return np.clip(action, -1.0, 1.0).astype(np.float32)
