"""Two Linux network namespaces joined by a link, created and removed by the caller (needs root),
traffic only between them: `VethPair` (a veth pair that can be cut; the multi-host test) and
`DelayedLink` (TUN devices and a relay that delays every packet; the acting latency benchmark)."""

import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class NamespacesUnavailable(RuntimeError):
    """This machine does not let us create network namespaces (not root, or no `ip netns`)."""


def start_in_namespace(namespace: str, args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`python -u ARGS` inside `namespace`, from the repository root, in its own process group."""
    with open(log, "wb") as out:
        return subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-u", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Ctrl-C to the group (a launcher stops its nodes), SIGKILL after `grace_s`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def rclpy_log_times(text: str, marker: str) -> list[tuple[float, str]]:
    """(wall time, line) of each forwarded rclpy log line containing `marker`:
    `[sim_bridge] [INFO] [1732840000.123456789] [parl.sim_bridge]: ...`."""
    found = []
    for line in text.splitlines():
        if marker in line:
            stamp = re.search(r"\[(\d+\.\d+)\]", line)
            if stamp is None:
                raise ValueError(f"not an rclpy log line: {line!r}")
            found.append((float(stamp.group(1)), line))
    return found


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class VethPair:
    """Two network namespaces with one veth link between them (10.x.y.1 robot, 10.x.y.2 learner)."""

    def __init__(self):
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.robot, self.learner = f"parl_robot_{tag}", f"parl_learner_{tag}"
        self.ends = {self.robot: f"vr{tag}", self.learner: f"vl{tag}"}
        subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self.addresses = {self.robot: f"{subnet}.1", self.learner: f"{subnet}.2"}
        self.created: list[str] = []
        for ns in (self.robot, self.learner):
            result = _ip("netns", "add", ns, check=False)
            if result.returncode != 0:
                self.close()
                raise NamespacesUnavailable(f"cannot create network namespaces here: {result.stderr.strip()}")
            self.created.append(ns)
        _ip("link", "add", self.ends[self.robot], "type", "veth", "peer", "name", self.ends[self.learner])
        for ns in (self.robot, self.learner):
            _ip("link", "set", self.ends[ns], "netns", ns)
            _ip("-n", ns, "addr", "add", f"{self.addresses[ns]}/24", "dev", self.ends[ns])
            _ip("-n", ns, "link", "set", "lo", "up")
        self.up()

    def up(self) -> None:
        for ns in (self.robot, self.learner):
            _ip("-n", ns, "link", "set", self.ends[ns], "up")
            # Multicast (DDS discovery) needs a route; a downed link loses it, so set it on every up.
            _ip("-n", ns, "route", "replace", "224.0.0.0/4", "dev", self.ends[ns])

    def down(self) -> None:
        _ip("-n", self.robot, "link", "set", self.ends[self.robot], "down")

    def close(self) -> None:
        for ns in self.created:
            _ip("netns", "del", ns, check=False)  # deleting a namespace removes its veth end, and the pair


TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
CLONE_NEWNET = 0x40000000


def _tun_in_namespace(name: str, namespace: str) -> int:
    """A TUN device `name` created inside `namespace` (setns in a helper thread); its file descriptor."""
    import ctypes
    import fcntl
    import struct
    import threading

    libc = ctypes.CDLL(None, use_errno=True)
    made: dict = {}

    def make() -> None:
        try:
            namespace_fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            if libc.setns(namespace_fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {namespace}")
            os.close(namespace_fd)
            fd = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
            made["fd"] = fd
        except OSError as err:
            made["error"] = err

    thread = threading.Thread(target=make)  # the thread's namespace changes, never the caller's
    thread.start()
    thread.join()
    if "error" in made:
        raise NamespacesUnavailable(f"cannot create a TUN device in {namespace}: {made['error']}")
    return made["fd"]


class DelayedLink:
    """Two namespaces joined through a relay in this process that holds every IP packet for `delay_s`
    each way: a WAN-like link where the kernel has no `tc netem` (sch_netem is a module many
    containers lack). Each namespace has a TUN device; the relay thread copies packets between them
    after the delay (multicast too, so DDS discovery crosses it)."""

    def __init__(self, delay_s: float = 0.0):
        import heapq
        import select
        import threading
        import time

        self.delay_s = delay_s
        tag = f"{os.getpid() % 10000}{random.randint(0, 99)}"
        self.robot, self.learner = f"parl_robot_{tag}", f"parl_learner_{tag}"
        subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
        self.addresses = {self.robot: f"{subnet}.1", self.learner: f"{subnet}.2"}
        self.created: list[str] = []
        self.fds: dict[str, int] = {}
        self.packets = 0  # relayed, both ways
        self.bytes = 0
        self.dropped = 0  # packets a full TUN queue refused
        try:
            for ns, device in ((self.robot, f"tr{tag}"), (self.learner, f"tl{tag}")):
                result = _ip("netns", "add", ns, check=False)
                if result.returncode != 0:
                    raise NamespacesUnavailable(f"cannot create network namespaces here: {result.stderr.strip()}")
                self.created.append(ns)
                self.fds[ns] = _tun_in_namespace(device, ns)
                _ip("-n", ns, "addr", "add", f"{self.addresses[ns]}/24", "dev", device)
                _ip("-n", ns, "link", "set", device, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "route", "replace", "224.0.0.0/4", "dev", device)  # DDS discovery
        except (NamespacesUnavailable, subprocess.CalledProcessError):
            self.close()
            raise
        self.running = True
        other = {self.fds[self.robot]: self.fds[self.learner], self.fds[self.learner]: self.fds[self.robot]}

        def relay() -> None:
            queue: list = []
            while self.running:
                wait = 0.05 if not queue else max(0.0, queue[0][0] - time.monotonic())
                readable, _, _ = select.select(list(other), [], [], wait)
                now = time.monotonic()
                for fd in readable:
                    try:
                        packet = os.read(fd, 65536)
                    except OSError:
                        continue
                    self.packets += 1
                    self.bytes += len(packet)
                    heapq.heappush(queue, (now + self.delay_s, self.packets, other[fd], packet))
                while queue and queue[0][0] <= time.monotonic():
                    _, _, destination, packet = heapq.heappop(queue)
                    try:
                        os.write(destination, packet)
                    except OSError:
                        self.dropped += 1

        self.thread = threading.Thread(target=relay, name="delayed-link", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.running = False
        if getattr(self, "thread", None) is not None:
            self.thread.join(timeout=2)
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        for ns in self.created:
            _ip("netns", "del", ns, check=False)
        self.created = []
