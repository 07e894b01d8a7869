"""One episode in the sim: the loop that scripted demonstrations, the study's warm-up and online
episodes and its evaluations all share."""

from __future__ import annotations

from typing import Callable

import numpy as np

from parl_robot.data.episode import SOURCE_POLICY, EpisodeData


def rollout(env, act: Callable[[dict], np.ndarray], max_steps: int, seed: int | None = None,
            phase: str = "online", operator=None) -> EpisodeData:
    """Reset `env` (a `WidowXSimEnv`: `seed` and `phase` go to its reset), then act until success, the
    env's truncation or `max_steps`. Images are kept when the env renders them. `terminal` = success.
    With an `operator` (parl_robot/sim/scripted_operator.py) it may take over steps: the episode stores
    what was executed and who acted (`sources`), as the learner node records a real intervention."""
    obs, _ = env.reset(seed=seed, options={"phase": phase})
    if operator is not None:
        operator.reset()
    states, frames, actions, rewards, sources = [obs["state"]], [obs.get("image")], [], [], []
    terminal = False
    for _ in range(max_steps):
        action = act(obs)
        source = SOURCE_POLICY
        if operator is not None:
            action, source = operator.step(obs, action)
        sources.append(source)
        obs, reward, terminal, truncated, _ = env.step(action)
        states.append(obs["state"])
        frames.append(obs.get("image"))
        actions.append(action)
        rewards.append(reward)
        if terminal or truncated:
            break
    images = np.asarray(frames) if frames[0] is not None else None
    return EpisodeData(np.asarray(states, np.float32), np.asarray(actions, np.float32).reshape(len(actions), -1),
                       np.asarray(rewards, np.float32), bool(terminal), images,
                       sources=np.asarray(sources, np.uint8) if operator is not None else None)
