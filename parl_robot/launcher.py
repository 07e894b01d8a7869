"""Plain-Python launcher: every node of a graph as its own process, logs prefixed, supervised.

Used where `ros2 launch` is not available (pip-only machines, CI). Ctrl-C (SIGINT) or SIGTERM
stops every node (SIGINT, then SIGTERM after the node's `stop_timeout_s`, then SIGKILL) and exits 0
when they all stopped cleanly. Supervision, as `launch/finetune.launch.py` does it: the run ends
with 0 when every node marked `ends_launch` (an episode manager per arm) has exited with 0; a `respawn` node that dies is restarted after
RESPAWN_DELAY_S (at most RESPAWN_LIMIT times), so a dead learner never takes the arm's node or the
page down; a `critical` node (the arm's) or any other node exiting stops the run with its code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from parl_robot.graph import RESPAWN_DELAY_S, RESPAWN_LIMIT, NodeSpec, ros_arguments

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
    name = f"[{spec.label}]"
    prefix = f"\033[{COLOURS[index % len(COLOURS)]}m{name}\033[0m" if colour else name
    reader = threading.Thread(target=_forward, args=(prefix, process.stdout, out, lock), daemon=True)
    reader.start()
    return RunningNode(spec, process, reader)


def stop_nodes(nodes: list[RunningNode]) -> list[str]:
    """SIGINT every node, escalate per node after its grace; returns the names that had to be killed."""
    escalated: list[str] = []
    for node in nodes:
        if node.process.poll() is None:
            _signal(node, signal.SIGINT)
    started = time.monotonic()
    pending = [n for n in nodes if n.process.poll() is None]
    terminated: set[str] = set()
    while pending:
        elapsed = time.monotonic() - started
        for node in pending:
            grace = node.spec.stop_timeout_s
            if elapsed > grace and node.spec.label not in terminated:
                _signal(node, signal.SIGTERM)
                terminated.add(node.spec.label)
                escalated.append(node.spec.label)
            elif elapsed > grace + 2.0:
                _signal(node, signal.SIGKILL)
        time.sleep(0.05)
        pending = [n for n in pending if n.process.poll() is None]
    for node in nodes:
        node.reader.join(timeout=2.0)
    return escalated


def _signal(node: RunningNode, sig: signal.Signals) -> None:
    try:
        os.killpg(node.process.pid, sig)
    except ProcessLookupError:
        pass


def launch(specs: list[NodeSpec], env: dict | None = None, out=None, timeout_s: float | None = None) -> int:
    """Run the graph until it ends; returns the launch's exit code (0 = finished normally or stopped)."""
    out = out or sys.stdout
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    lock = threading.Lock()
    colour = hasattr(out, "isatty") and out.isatty()
    nodes: list[RunningNode] = []
    restarts: dict[str, int] = {}
    ending = {spec.label for spec in specs if spec.ends_launch}  # the run is done when all of them finished
    finished: set[str] = set()
    due_restarts: list[tuple[float, int, NodeSpec]] = []
    stop_requested = threading.Event()

    def say(message: str) -> None:
        with lock:
            out.write(f"[launch] {message}\n")
            out.flush()

    def request_stop(signum, frame):
        stop_requested.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    exit_code = 0
    started = time.monotonic()
    stopping_on_request = False
    try:
        for index, spec in enumerate(specs):
            nodes.append(start_node(spec, index, env, out, lock, colour))
        while True:
            if stop_requested.is_set():
                say("stop requested; stopping all nodes")
                stopping_on_request = True
                break
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                say(f"timed out after {timeout_s:.0f} s; stopping all nodes")
                exit_code = 124
                break
            now = time.monotonic()
            for due in [d for d in due_restarts if d[0] <= now]:
                due_restarts.remove(due)
                _, index, spec = due
                nodes.append(start_node(spec, index, env, out, lock, colour))
            ended = next((n for n in nodes if n.process.poll() is not None), None)
            if ended is not None:
                nodes.remove(ended)
                ended.reader.join(timeout=2.0)
                spec, code = ended.spec, ended.process.returncode
                if spec.ends_launch and code == 0:
                    finished.add(spec.label)
                    if finished >= ending:
                        say(f"{spec.label} finished; stopping all nodes")
                        break
                    say(f"{spec.label} finished; waiting for {', '.join(sorted(ending - finished))}")
                    continue
                if spec.respawn and not spec.critical and restarts.get(spec.label, 0) < RESPAWN_LIMIT:
                    restarts[spec.label] = restarts.get(spec.label, 0) + 1
                    say(f"{spec.label} exited with code {code}; restarting it in {RESPAWN_DELAY_S:.0f} s "
                        f"({restarts[spec.label]}/{RESPAWN_LIMIT})")
                    due_restarts.append((now + RESPAWN_DELAY_S, specs.index(spec), spec))
                    continue
                limit = f" (restarted {RESPAWN_LIMIT} times already)" if spec.respawn and not spec.critical else ""
                say(f"{spec.label} exited with code {code}{limit}; stopping all nodes")
                exit_code = code if code else 1
                break
            time.sleep(0.1)
    finally:
        killed = stop_nodes(nodes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if killed:
        say(f"{', '.join(killed)} did not stop within its grace period and had to be terminated")
    if stopping_on_request:
        failed = [n.spec.label for n in nodes if n.process.returncode not in (0, None)]
        if failed or killed:
            say(f"stopped; {', '.join(sorted(set(failed + killed)))} did not exit cleanly")
            return 1
        say("stopped cleanly")
        return 0
    return exit_code
