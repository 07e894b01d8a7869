"""The learner's lock (parl_robot/rl/fair_lock.py): waiters are served in arrival order, so an action or
an episode save waits at most for the update in progress, never behind a run of updates."""

import threading
import time

import pytest

from parl_robot.rl.fair_lock import FairLock


def _wait_until(condition, budget_s: float = 30.0) -> None:
    deadline = time.monotonic() + budget_s
    while not condition():
        assert time.monotonic() < deadline, "condition never came"
        time.sleep(0.001)


def test_a_waiter_goes_before_the_learning_threads_next_update():
    lock = FairLock()
    order: list[str] = []
    first_update_in, release_first_update = threading.Event(), threading.Event()

    def learning_thread():  # back-to-back updates, as the learner's learning loop does them
        for index in range(3):
            with lock:
                order.append(f"update {index}")
                if index == 0:
                    first_update_in.set()
                    release_first_update.wait()

    def acting_thread():
        with lock:
            order.append("act")

    learner = threading.Thread(target=learning_thread)
    learner.start()
    first_update_in.wait()
    actor = threading.Thread(target=acting_thread)
    actor.start()
    _wait_until(lambda: lock.waiting == 1)
    release_first_update.set()
    learner.join()
    actor.join()
    assert order == ["update 0", "act", "update 1", "update 2"]


def test_holders_never_overlap():
    lock = FairLock()
    inside, overlaps = [0], []

    def hold_many_times():
        for _ in range(200):
            with lock:
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                time.sleep(0.0002)
                inside[0] -= 1

    threads = [threading.Thread(target=hold_many_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [] and inside == [0] and lock.waiting == 0


def test_releasing_a_lock_not_held_is_an_error():
    with pytest.raises(RuntimeError, match="^FairLock released while not held$"):
        FairLock().release()
