"""Episode manager: the episode state machine (`parl_robot.episode_machine`), announced on
`episode/event` and, latched with why the run is held, on `episode/state`.

This node is its ROS side only: it feeds the machine the learner's stats, `episode/event`,
`reward/success`, `robot/action` (step count) and the latched `robot/safety`, ticks it at 10 Hz on
the wall clock, and serves its service calls (`sim/reset`; `robot/home` after each saved episode and
after an abort). After `episodes.num_online_episodes` saved episodes the machine announces
`finished` and the node exits 0, which ends the launch.

The 1 Hz `robot/safety` republication is also the robot side's heartbeat: silent for
LINK_LOST_AFTER_S (the link to the robot host is down, or the control node is gone) it counts as a
hold with reason `link_lost` (a running episode is aborted) until the next message, which carries
the real state again. With `role:=learner` a start-up peer check names the robot-side topics it
does not see and the discovery settings to check.
"""

from __future__ import annotations

import json
import time

from rclpy.node import Node
from std_msgs.msg import Bool, Float32MultiArray, String
from std_srvs.srv import Trigger

from parl_robot.episode_machine import LINK_LOST, EpisodeMachine
from parl_robot.nodes import common

SERVICE_WAIT_S = 5.0
LINK_LOST_AFTER_S = 3.0  # robot/safety comes at 1 Hz from the control node


class EpisodeManagerNode(Node):
    def __init__(self):
        super().__init__("episode_manager")
        self.cfg = common.declare_task_config(self)
        self.event_pub = self.create_publisher(String, common.EPISODE_EVENT, common.EVENT_QOS)
        self.state_pub = self.create_publisher(String, common.EPISODE_STATE, common.LATCHED_QOS)
        reset_client = self.create_client(Trigger, common.SRV_SIM_RESET)
        home_client = self.create_client(Trigger, common.SRV_HOME)
        self.trigger_clients = {"reset": (reset_client, "reset"), "home": (home_client, "home"),
                         "home_after_abort": (home_client, "home after an aborted episode")}
        self.machine = EpisodeMachine(self.cfg.episodes, self.cfg.control.max_episode_steps, self.cfg.task.instruction,
                                      ports=self)
        self.create_subscription(String, common.EPISODE_EVENT, self.on_event, common.EVENT_QOS)
        self.create_subscription(String, common.LEARNER_STATS, self.on_learner_stats, common.EVENT_QOS)
        self.create_subscription(Bool, common.REWARD_SUCCESS, self.on_success, common.COMMAND_QOS)
        self.create_subscription(Float32MultiArray, common.ROBOT_ACTION, self.on_action, common.COMMAND_QOS)
        self.safety_heard: float | None = None  # robot/safety is also the robot side's heartbeat
        self.create_subscription(String, common.ROBOT_SAFETY, self.on_safety, common.LATCHED_QOS)
        common.wall_timer(self, 0.1, self.tick)
        self.peer_check = common.start_peer_check(self)  # role:=learner: is the robot side there?

    def tick(self) -> None:
        self.check_link()
        self.machine.tick()

    def check_link(self) -> None:
        """No robot/safety for LINK_LOST_AFTER_S: a hold with reason `link_lost`, which aborts a running
        episode and holds the next one; the next heartbeat's real state replaces it."""
        if self.safety_heard is None or LINK_LOST in self.machine.safety_reasons:
            return
        silent_s = time.monotonic() - self.safety_heard
        if silent_s > LINK_LOST_AFTER_S:
            self.get_logger().error(f"no robot/safety heartbeat for {silent_s:.1f} s: link to the robot side lost")
            self.machine.on_safety({"state": "held", "reasons": [LINK_LOST]})

    @property
    def exit_code(self) -> int | None:
        return self.machine.exit_code

    # ----- the machine's ports ---------------------------------------------------------------
    def publish(self, kind: str, **fields) -> None:
        self.event_pub.publish(common.event_message(kind, **fields))

    def publish_state(self, state: dict) -> None:
        self.state_pub.publish(String(data=json.dumps(state)))

    def call_service(self, name: str):
        client, what = self.trigger_clients[name]
        if not client.wait_for_service(timeout_sec=SERVICE_WAIT_S):
            self.get_logger().error(f"service {client.srv_name} not available for {what}")
            return None
        return client.call_async(Trigger.Request())

    def log(self, level: str, text: str) -> None:
        # One call site per severity: rclpy refuses a second severity from the same line of code.
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level in ("warning", "warn"):
            logger.warning(text)
        elif level == "debug":
            logger.debug(text)
        else:
            logger.info(text)

    # ----- subscriptions ---------------------------------------------------------------------
    def on_safety(self, msg: String) -> None:
        self.safety_heard = time.monotonic()
        safety = common.parse_json_object(msg)
        if safety is not None:
            self.machine.on_safety(safety)

    def on_learner_stats(self, msg: String) -> None:
        stats = common.parse_json_object(msg)
        if stats is not None:
            self.machine.on_learner_stats(stats)

    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is not None:
            self.machine.on_event(event)

    def on_action(self, msg: Float32MultiArray) -> None:
        self.machine.on_action()

    def on_success(self, msg: Bool) -> None:
        self.machine.on_success(bool(msg.data))


def main(args=None) -> int:
    return common.run_node(EpisodeManagerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
