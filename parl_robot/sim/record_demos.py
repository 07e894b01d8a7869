"""Record scripted demonstrations into the episode store (the sim stand-in for teleoperation)."""

from __future__ import annotations

from parl_robot.config import TaskConfig
from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.sim.demonstrator import ScriptedDemonstrator
from parl_robot.sim.env import WidowXSimEnv
from parl_robot.sim.rollout import rollout


def demo_seed(seed: int, index: int) -> int:
    """Reset seed of demonstration `index`: the same demos for the same seed, in the store and the study."""
    return seed * 100_003 + index


def record_demos(cfg: TaskConfig, store: EpisodeStore, count: int, seed: int = 0, images: bool = False, log=print) -> int:
    """Record `count` demo episodes; returns how many succeeded. Failures are stored too (labelled)."""
    env = WidowXSimEnv(cfg, render_images=images)
    demonstrator = ScriptedDemonstrator(cfg, seed=seed)
    successes = 0
    try:
        for index in range(count):
            demonstrator.reset()
            episode = rollout(env, lambda obs: demonstrator.act(obs["state"]), cfg.control.max_episode_steps,
                              seed=demo_seed(seed, index), phase="demo")
            successes += int(episode.terminal)
            record = EpisodeRecord(
                episode_id=store.next_episode_id("demo"), kind="demo", success=episode.terminal,
                label="success" if episode.terminal else "failure", label_source="demonstrator",
                steps=len(episode.actions), policy_version=-1, config_hash=cfg.config_hash(), task=cfg.task.name,
                phase="demo",
            )
            store.save(record, episode, thumbnail=episode.images[-1] if images else env.world.render())
            log(f"demo {index + 1}/{count}: {'success' if episode.terminal else 'failure'} in {len(episode.actions)} steps")
    finally:
        env.close()
    return successes
