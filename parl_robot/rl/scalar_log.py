"""Learner statistics as TensorBoard scalars: `tensorboard --logdir <store_dir>/tensorboard`.

One run directory per launch (`<store_dir>/tensorboard/<UTC start time>`). Written by the learner node
(and usable by any loop around `Trainer`): its stats once a second against the number of critic
updates, and every stored online episode against its index in the store. `learner.tensorboard`
switches it; with the `tensorboard` package missing it says so once and records nothing.

Scalars:
  loss/critic, loss/policy            the latest update's losses
  q/data, q/optimized                  mean Q of dataset actions; of the optimized actions (distillation)
  q/optimization_gain                  how much the action optimizer raised Q over the policy's samples
  updates/critic, updates/policy, updates/policy_version
  episodes/success, episodes/steps     per stored online episode
  episodes/success_rate_last_10        over the last 10 online episodes
  episodes/intervention_steps          steps the operator acted in that episode
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path
from typing import Callable

STAT_SCALARS = {
    "critic_loss": "loss/critic",
    "policy_loss": "loss/policy",
    "q_data": "q/data",
    "q_optimized": "q/optimized",
    "q_optimization_gain": "q/optimization_gain",
    "critic_updates": "updates/critic",
    "policy_updates": "updates/policy",
    "policy_version": "updates/policy_version",
}
SUCCESS_WINDOW = 10


def _summary_writer_class():
    """torch's SummaryWriter, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


class ScalarLog:
    def __init__(self, root: Path, enabled: bool = True, log: Callable[[str], None] = print,
                 run_name: str | None = None):
        self.writer = None
        self.directory: Path | None = None
        self.recent_successes: deque[bool] = deque(maxlen=SUCCESS_WINDOW)
        if not enabled:
            return
        writer_class = _summary_writer_class()
        if writer_class is None:
            log("TensorBoard logging off: the `tensorboard` package is not installed (pip install tensorboard)")
            return
        self.directory = Path(root) / (run_name or time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
        self.writer = writer_class(log_dir=str(self.directory))
        log(f"TensorBoard scalars in {self.directory} (tensorboard --logdir {Path(root)})")

    @property
    def active(self) -> bool:
        return self.writer is not None

    def stats(self, stats: dict) -> None:
        """The trainer's stats (Trainer.stats()), against the critic update count."""
        if self.writer is None:
            return
        step = int(stats.get("critic_updates", 0))
        for key, tag in STAT_SCALARS.items():
            value = stats.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def episode(self, index: int, success: bool, steps: int, intervention_steps: int = 0) -> None:
        """A stored online episode; `index` counts the store's online episodes (0 = the first ever)."""
        if self.writer is None:
            return
        self.recent_successes.append(bool(success))
        self.writer.add_scalar("episodes/success", float(success), index)
        self.writer.add_scalar("episodes/steps", steps, index)
        self.writer.add_scalar("episodes/intervention_steps", intervention_steps, index)
        rate = sum(self.recent_successes) / len(self.recent_successes)
        self.writer.add_scalar(f"episodes/success_rate_last_{SUCCESS_WINDOW}", rate, index)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
