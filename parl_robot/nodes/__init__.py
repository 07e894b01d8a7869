"""Thin rclpy nodes. Importing this package installs the nodes' SIGINT/SIGTERM handler first, so a
stop that arrives while a node still imports its heavy dependencies (torch, MuJoCo) is remembered
and ends the node cleanly instead of raising KeyboardInterrupt inside an import."""

import signal
import threading


class StopRequest:
    """SIGINT/SIGTERM handled by the node itself (rclpy initialised without its own signal handlers),
    so that the rclpy context is still up while the node cleans up (parks the arm, saves data)."""

    def __init__(self):
        self.signal_name: str | None = None

    def __call__(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self)

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


STOP = StopRequest()
STOP.install()
