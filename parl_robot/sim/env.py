"""Gymnasium-style environment over the MuJoCo twin, for learning and benchmarks without ROS.

`reset(seed) -> (obs, info)` and `step(action) -> (obs, reward, terminated, truncated, info)`
follow the Gymnasium API; actions use the same convention, integrator and safety limits as the
control node, so a policy trained here sees the arm the real node would drive.
"""

from __future__ import annotations

import numpy as np

from parl_robot.config import TaskConfig
from parl_robot.observation import state_vector
from parl_robot.perception.success import is_success, step_reward
from parl_robot.robot.backend import SimArmBackend
from parl_robot.robot.safety import DOWNWARD_ROTATION, CommandIntegrator, SafetyLimits
from parl_robot.sim.scenes import distractors_active
from parl_robot.sim.world import SimWorld


class WidowXSimEnv:
    def __init__(self, cfg: TaskConfig, render_images: bool = False):
        self.cfg = cfg
        self.render_images = render_images
        self.world = SimWorld(cfg.task.name, cfg.sim)
        self.limits = SafetyLimits.from_config(cfg.control)
        self.home_position = np.asarray(cfg.control.home_xyz, dtype=float)
        self.integrator = CommandIntegrator(self.limits, self.home_position, DOWNWARD_ROTATION)
        self.control_period = 1.0 / cfg.control.rate_hz
        # The control node's backend: it refuses the poses the real driver would refuse.
        self.arm = SimArmBackend(self.world, moving_time=cfg.control.moving_time_periods * self.control_period)
        self.rng = np.random.default_rng(cfg.sim.seed)
        self.steps = 0

    @property
    def object_name(self) -> str:
        return self.cfg.reward.object_name

    def observation(self) -> dict[str, np.ndarray]:
        ee_position, _ = self.world.ee_pose()
        obs = {"state": state_vector(ee_position, self.world.gripper_open, self.world.object_position(self.object_name))}
        if self.render_images:
            obs["image"] = self.world.render()
        return obs

    def success(self) -> bool:
        return self.world.grasped is None and is_success(
            self.world.object_position(self.object_name), self.world.gripper_open, self.cfg.reward
        )

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, np.ndarray], dict]:
        """Gymnasium reset. `options={"phase": "demo" | "offline_eval" | "warmup" | "online"}` decides,
        with `sim.distractors`, whether the scene's distractors are on the table (default "online")."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        unknown = set(options or {}) - {"phase"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; only 'phase' is accepted")
        phase = (options or {}).get("phase", "online")
        self.world.reset(
            self.rng, self.home_position, DOWNWARD_ROTATION, distractors=distractors_active(self.cfg.sim.distractors, phase)
        )
        self.integrator.reset(self.home_position, DOWNWARD_ROTATION, gripper_open=True)
        self.steps = 0
        return self.observation(), {"object_positions": self.world.object_positions()}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        previous = self.integrator.command
        command = self.integrator.apply(action)
        refused = not self.arm.execute(command, self.control_period)
        if refused:  # as on the arm: nothing moves for a refused pose, and the command does not drift
            self.integrator.command = previous
            self.world.execute(previous, self.control_period)  # the step's time still passes
        ik_error = self.arm.last_ik_error
        self.steps += 1
        success = self.success()
        reward = step_reward(success, self.cfg.reward)
        truncated = self.steps >= self.cfg.control.max_episode_steps and not success
        info = {"success": success, "ik_error": ik_error, "grasped": self.world.grasped, "refused": refused}
        return self.observation(), reward, success, truncated, info

    def close(self) -> None:
        self.world.close()
