"""The PA-RL agent of a task config, as the learner builds it (and the robot host's actor its acting
copy): observation spec from the task's camera, value range from its rewards. No ROS here, so
benchmarks and offline tools build exactly the product's agent."""

from __future__ import annotations

from parl_robot.config import TaskConfig
from parl_robot.nets.encoders import ObservationSpec
from parl_robot.observation import STATE_DIM
from parl_robot.rl.agent import PARLAgent
from parl_robot.rl.losses import achievable_returns


def agent_for(cfg: TaskConfig) -> PARLAgent:
    """The PA-RL agent of a task config (the learner's, and the robot host's acting copy)."""
    learner = cfg.learner
    image_shape = (cfg.sim.camera_height, cfg.sim.camera_width, 3) if learner.observation == "image" else None
    return PARLAgent(
        learner,
        ObservationSpec(STATE_DIM, image_shape),
        value_range=achievable_returns(cfg.reward.success_reward, cfg.reward.reward_bias, learner.critic.discount),
        instruction=cfg.task.instruction,
        action_scale=cfg.control.action_scale,
    )
