"""Start-up peer check for a graph split across hosts (`role:=robot` / `role:=learner`).

When the two halves do not discover each other (another ROS_DOMAIN_ID, discovery limited to
localhost, multicast blocked without a discovery server) every node starts fine and simply waits.
This turns that silence into one error naming the topics that are missing and the settings to
check. ROS-free: the node passes in how many publishers each topic has (from DDS discovery).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

# What each side must see from the other; a tuple is satisfied by any one of its topics.
FROM_ROBOT = (("robot/safety",), ("robot/state",), ("camera/image_raw", "objects/poses"))
FROM_LEARNER = (("learner/stats",), ("episode/state",))
EXPECTED_FROM_PEER = {"learner": ("robot", FROM_ROBOT), "robot": ("learner", FROM_LEARNER)}
DISCOVERY_VARIABLES = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_DISCOVERY_SERVER",
                       "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION")


def missing_topics(groups, publisher_count: Callable[[str], int]) -> list[str]:
    """The groups nobody publishes, each as 'a or b'."""
    return [" or ".join(group) for group in groups if not any(publisher_count(topic) > 0 for topic in group)]


def discovery_settings(env: Mapping[str, str] | None = None) -> str:
    """The discovery environment as `NAME=value` pairs (unset ones say so and what that means)."""
    env = os.environ if env is None else env
    defaults = {"ROS_DOMAIN_ID": "unset = 0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "unset = SUBNET"}
    return ", ".join(f"{name}={env[name]}" if env.get(name) else f"{name} ({defaults.get(name, 'unset')})"
                     for name in DISCOVERY_VARIABLES)


def peer_missing_message(role: str, missing: list[str], waited_s: float, env: Mapping[str, str] | None = None) -> str:
    peer, _ = EXPECTED_FROM_PEER[role]
    return (f"no {peer} side after {waited_s:.0f} s: nobody publishes {', '.join(missing)} in this ROS domain. "
            f"Is the {peer} role running (role:={peer})? Both hosts need the same ROS_DOMAIN_ID, discovery beyond "
            f"localhost (ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, or ROS_STATIC_PEERS), and on networks without "
            f"multicast the same ROS_DISCOVERY_SERVER (docs/multi_host.md). Here: {discovery_settings(env)}")


class PeerCheck:
    """Reports when the peer's topics go missing or come back; quiet for the first `grace_s`."""

    def __init__(self, role: str, grace_s: float, started_s: float):
        if role not in EXPECTED_FROM_PEER:
            raise ValueError(f"peer check for role '{role}': expected one of {', '.join(EXPECTED_FROM_PEER)}")
        self.role = role
        self.grace_s = grace_s
        self.started_s = started_s
        self.missing: list[str] = []  # as last reported ([] = the peer is there, or still in grace)

    def update(self, now_s: float, publisher_count: Callable[[str], int]) -> tuple[str, str] | None:
        """("error", text) when topics went missing, ("info", text) when they are all back, else None."""
        if now_s - self.started_s < self.grace_s:
            return None
        _, groups = EXPECTED_FROM_PEER[self.role]
        missing = missing_topics(groups, publisher_count)
        if missing == self.missing:
            return None
        was_missing, self.missing = self.missing, missing
        if missing:
            return "error", peer_missing_message(self.role, missing, now_s - self.started_s)
        peer, _ = EXPECTED_FROM_PEER[self.role]
        return "info", f"{peer} side seen: {', '.join(' or '.join(g) for g in groups)} ({', '.join(was_missing)} back)"
