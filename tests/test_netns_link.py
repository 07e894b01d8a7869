"""The delayed link the acting latency benchmark runs over: two namespaces, a relay holding every
packet for the set delay (root and /dev/net/tun needed; skipped where they are not)."""

import subprocess
import sys

import pytest

from netns_link import DelayedLink, NamespacesUnavailable

ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    s.sendto(data, peer)
"""
ECHO_CLIENT = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for size in (100, 5000):  # 5000 bytes: IP fragments, each delayed and reassembled
    start = time.monotonic()
    s.sendto(b"x" * size, (sys.argv[1], 9999))
    data, _ = s.recvfrom(65536)
    assert len(data) == size
    print(round((time.monotonic() - start) * 1e3, 1))
"""


def test_every_packet_waits_the_set_delay_each_way():
    try:
        link = DelayedLink(delay_s=0.03)
    except (NamespacesUnavailable, subprocess.CalledProcessError) as err:
        pytest.skip(f"no network namespaces / TUN here: {err}")
    server = None
    try:
        learner_address = link.addresses[link.learner]
        server = subprocess.Popen(["ip", "netns", "exec", link.learner, sys.executable, "-c", ECHO_SERVER, learner_address],
                                  stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.run(["ip", "netns", "exec", link.robot, sys.executable, "-c", ECHO_CLIENT, learner_address],
                                capture_output=True, text=True, timeout=60)
        assert client.returncode == 0, client.stderr
        round_trips_ms = [float(line) for line in client.stdout.split()]
        assert len(round_trips_ms) == 2 and all(rtt >= 60.0 for rtt in round_trips_ms), round_trips_ms
        assert link.packets >= 2 + 2 * 4  # the 5000-byte datagram crossed as fragments, both ways
    finally:
        if server is not None:
            server.kill()
            server.wait()
        link.close()
    assert link.created == [] and link.fds == {}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert link.robot not in listed and link.learner not in listed
