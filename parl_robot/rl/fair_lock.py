"""A first-come, first-served lock between the learner's updates and everything else that touches the
agent (computing an action, adding or relabelling an episode).

The learner node trains in a learning thread that releases its lock after each update and takes it
again at once for the next one. A plain `threading.Lock` is not fair: the thread that just released
it usually wins it back, so on a loaded machine an action computation waits behind many updates (the
control period passes, the watchdog holds the arm), and saving an episode during the critic's
catch-up blocks the node's executor for seconds (its stats stop, the episode manager reports the
learner lost). Here waiters are served in arrival order: whoever waits gets the lock before the
learning thread's next update, so it waits at most for the update in progress.
"""

from __future__ import annotations

import threading


class FairLock:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._next_ticket = 0  # handed to the next caller of acquire()
        self._serving = 0  # the ticket that holds (or may take) the lock

    @property
    def waiting(self) -> int:
        """Callers waiting for the lock now (for tests and diagnostics)."""
        with self._condition:
            return max(self._next_ticket - self._serving - 1, 0)

    def acquire(self) -> None:
        with self._condition:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._condition.wait_for(lambda: self._serving == ticket)

    def release(self) -> None:
        with self._condition:
            if self._serving >= self._next_ticket:
                raise RuntimeError("FairLock released while not held")
            self._serving += 1
            self._condition.notify_all()

    def __enter__(self) -> "FairLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
