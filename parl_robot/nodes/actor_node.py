"""Actor node (`acting:=robot`): the policy acts on the robot host, from the weights the learner publishes.

With the learner on a GPU server across a slow link, acting there puts the link's round trip
inside every control period (image out, action back). This node runs next to the arm instead:
it builds the same agent from the same task config, loads each policy version the learner
publishes on `learner/policy_weights` (versioned, SHA-256-checked chunks: `rl/weight_transport.py`;
the sampling policy's trained weights and the critic: `rl/acting_weights.py`), and acts with the
same rule (samples, the critic's action optimization, selection) at the control rate. Each step
goes to the learner on `actor/steps` (state, the image's stamp, the action, the policy version),
and the learner records the episode from those. Until the first version arrives it does not act
(the control node's watchdog holds the arm) and says so.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from std_msgs.msg import String, UInt8MultiArray

from parl_robot.nodes import common
from parl_robot.nodes.acting_node import ActingNode, agent_for
from parl_robot.rl.acting_weights import load_acting_weights
from parl_robot.rl.weight_transport import WeightsAssembler, WeightsHeader


class ActorNode(ActingNode):
    def __init__(self):
        super().__init__("actor")
        torch.set_num_threads(1)
        self.agent = agent_for(self.cfg)
        self.assembler = WeightsAssembler()
        self.policy_version: int | None = None
        self.rejections_reported = 0
        self.waiting_said_for: int | None = None  # the episode for which "no weights yet" was logged
        self.steps_pub = self.create_publisher(String, common.ACTOR_STEPS, common.COMMAND_QOS)
        self.create_subscription(UInt8MultiArray, common.POLICY_WEIGHTS, self.on_weights, common.WEIGHTS_QOS)
        self.start_acting()
        self.get_logger().info("waiting for the learner's policy weights (learner/policy_weights)")

    def on_weights(self, msg: UInt8MultiArray) -> None:
        try:
            header = WeightsHeader.from_json(msg.layout.dim[0].label if msg.layout.dim else "")
        except ValueError as err:
            self.get_logger().warning(f"ignoring a weights chunk: {err}")
            return
        delivered = self.assembler.add(header, bytes(msg.data))
        for reason in self.assembler.rejected[self.rejections_reported:]:
            self.get_logger().error(f"policy weights rejected, still acting with v{self.policy_version}: {reason}")
        self.rejections_reported = len(self.assembler.rejected)
        if delivered is None:
            return
        version, weights = delivered
        try:
            load_acting_weights(self.agent, weights)
        except ValueError as err:
            self.get_logger().error(f"policy v{version} not loaded: {err}")
            return
        first = self.policy_version is None
        self.policy_version = version
        self.get_logger().info(f"acting with policy v{version}" + (" (first weights: acting from now on)" if first else ""))

    def ready_to_act(self) -> bool:
        if self.policy_version is None:
            if self.waiting_said_for != self.running_episode:
                self.waiting_said_for = self.running_episode
                self.get_logger().warning(f"episode {self.running_episode} runs but no policy weights came from the "
                                          "learner yet: not acting (the arm holds)")
            return False
        return True

    def compute_action(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        action, _ = self.agent.act(obs)
        return action

    def acted(self, obs: dict[str, np.ndarray], action: np.ndarray) -> None:
        """The step for the learner's record, before the action goes to the arm."""
        self.steps_pub.publish(String(data=json.dumps({
            "episode": self.running_episode, "step": self.step, "state": obs["state"].tolist(),
            "image_stamp": self.image_stamp if "image" in obs else None, "action": action.tolist(),
            "policy_version": self.policy_version,
        })))


def main(args=None) -> int:
    return common.run_node(ActorNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
