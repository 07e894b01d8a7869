"""Plain-Python launcher: every node of a graph as its own process, logs prefixed, stopped together.

Used where `ros2 launch` is not available (pip-only machines, CI). Ctrl-C (SIGINT) or SIGTERM
stops every node (SIGINT, then SIGTERM, then SIGKILL). If a node exits, the others are stopped;
the launch succeeds only when a node marked `ends_launch` exited with code 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from parl_robot.graph import NodeSpec, ros_arguments

STOP_GRACE_S = 8.0
COLOURS = ("36", "33", "35", "32", "34", "31", "37")


@dataclass
class RunningNode:
    spec: NodeSpec
    process: subprocess.Popen
    reader: threading.Thread


def _forward(prefix: str, stream, out, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        with lock:
            out.write(f"{prefix} {line}\n")
            out.flush()
    stream.close()


def start_node(spec: NodeSpec, index: int, env: dict, out, lock: threading.Lock, colour: bool) -> RunningNode:
    command = [sys.executable, "-u", "-m", spec.module, *ros_arguments(spec)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    name = f"[{spec.name}]"
    prefix = f"\033[{COLOURS[index % len(COLOURS)]}m{name}\033[0m" if colour else name
    reader = threading.Thread(target=_forward, args=(prefix, process.stdout, out, lock), daemon=True)
    reader.start()
    return RunningNode(spec, process, reader)


def stop_nodes(nodes: list[RunningNode], grace_s: float = STOP_GRACE_S) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [n for n in nodes if n.process.poll() is None]
        if not alive:
            break
        for node in alive:
            try:
                os.killpg(node.process.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace_s if sig != signal.SIGKILL else 2.0)
        while time.monotonic() < deadline and any(n.process.poll() is None for n in alive):
            time.sleep(0.05)
    for node in nodes:
        node.reader.join(timeout=2.0)


def launch(specs: list[NodeSpec], env: dict | None = None, out=None, timeout_s: float | None = None) -> int:
    """Run the graph until it ends; returns the launch's exit code (0 = finished normally)."""
    out = out or sys.stdout
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    lock = threading.Lock()
    colour = hasattr(out, "isatty") and out.isatty()
    nodes: list[RunningNode] = []
    stop_requested = threading.Event()

    def request_stop(signum, frame):
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    exit_code = 0
    started = time.monotonic()
    try:
        for index, spec in enumerate(specs):
            nodes.append(start_node(spec, index, env, out, lock, colour))
        while True:
            if stop_requested.is_set():
                with lock:
                    out.write("[launch] stop requested; stopping all nodes\n")
                exit_code = 130
                break
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                with lock:
                    out.write(f"[launch] timed out after {timeout_s:.0f} s; stopping all nodes\n")
                exit_code = 124
                break
            ended = next((n for n in nodes if n.process.poll() is not None), None)
            if ended is not None:
                code = ended.process.returncode
                if ended.spec.ends_launch and code == 0:
                    message, exit_code = f"{ended.spec.name} finished", 0
                else:
                    message, exit_code = f"{ended.spec.name} exited with code {code}", code if code else 1
                with lock:
                    out.write(f"[launch] {message}; stopping all nodes\n")
                break
            time.sleep(0.1)
    finally:
        stop_nodes(nodes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code
