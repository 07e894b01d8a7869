"""Which action the arm executes once PA-RL has optimized the candidates
(`learner.optimizer.gripper_from`).

Acting only: TD targets and distillation targets stay the optimized actions whole.
- `critic`: PA-RL as published, the optimized action is executed whole.
- `policy`: the critic's pick moves the arm, but the gripper value (the last dimension) is a policy
  sample's (the first of the k). An offline critic trained on a few demos rates "stay open" above
  "close now" near the grasp and defers it; the policy's own gripper does not (on cup_to_rack, 10
  seeds: 63 % offline start instead of 36 %, docs/finetune_study.md).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def critic(optimized: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """`optimized`: (A,) the optimized action; `samples`: (k, A) the policy samples it came from."""
    return optimized


def policy_gripper(optimized: np.ndarray, samples: np.ndarray) -> np.ndarray:
    action = optimized.copy()
    action[-1] = samples[0, -1]
    return action


EXECUTED_ACTION: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"critic": critic, "policy": policy_gripper}
