"""Record scripted demonstrations into the episode store (the sim stand-in for teleoperation)."""

from __future__ import annotations

import numpy as np

from parl_robot.config import TaskConfig
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.rl.replay_buffer import EpisodeData
from parl_robot.sim.demonstrator import ScriptedDemonstrator
from parl_robot.sim.env import WidowXSimEnv


def record_demos(cfg: TaskConfig, store: EpisodeStore, count: int, seed: int = 0, images: bool = False, log=print) -> int:
    """Record `count` demo episodes; returns how many succeeded. Failures are stored too (labelled)."""
    env = WidowXSimEnv(cfg, render_images=images)
    demonstrator = ScriptedDemonstrator(cfg, seed=seed)
    successes = 0
    try:
        for index in range(count):
            obs, _ = env.reset(seed=seed * 100_003 + index, options={"phase": "demo"})
            demonstrator.reset()
            states, frames, actions, rewards = [obs["state"]], [obs.get("image")], [], []
            terminal = False
            for _ in range(cfg.control.max_episode_steps):
                action = demonstrator.act(obs["state"])
                obs, reward, terminal, truncated, _ = env.step(action)
                states.append(obs["state"])
                frames.append(obs.get("image"))
                actions.append(action)
                rewards.append(reward)
                if terminal or truncated:
                    break
            successes += int(terminal)
            episode = EpisodeData(
                np.asarray(states), np.asarray(actions), np.asarray(rewards, np.float32), terminal,
                np.asarray(frames) if images else None,
            )
            record = EpisodeRecord(
                episode_id=store.next_episode_id("demo"), kind="demo", success=terminal,
                label="success" if terminal else "failure", label_source="demonstrator", steps=len(actions),
                policy_version=-1, config_hash=cfg.config_hash(), task=cfg.task.name, phase="demo",
            )
            store.save(record, episode, thumbnail=frames[-1] if images else env.world.render())
            log(f"demo {index + 1}/{count}: {'success' if terminal else 'failure'} in {len(actions)} steps")
    finally:
        env.close()
    return successes
