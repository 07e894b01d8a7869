"""Success classifier node (learner host, `success_classifier:=true`): the classifier in shadow mode.

On every `saved` or `relabeled` episode event it judges the stored episode with the current success
classifier (the reward node's rule on the episode's frames) against its label, and retrains a new
version every `reward.classifier_retrain_every` labelled episodes (parl_robot/perception/
classifier_monitor.py). Judging and training run on a worker thread, never in a callback. It
publishes the classifier's version, held-out metrics, agreement with the labels since it was
trained and its recent disagreements on `reward/classifier` (latched JSON); the operator page shows
them and switches the reward detector (`use_detector` event) when the operator decides. Needs frames
in the stored episodes: image observations, or `episodes.record_frames: true`.
"""

from __future__ import annotations

import json
import queue
import threading

from rclpy.node import Node
from std_msgs.msg import String

from parl_robot.data.episode_store import EpisodeStore
from parl_robot.nodes import common
from parl_robot.perception.classifier_monitor import ClassifierMonitor


class SuccessClassifierNode(Node):
    def __init__(self):
        super().__init__("success_classifier")
        self.cfg = common.declare_task_config(self)
        reward = self.cfg.reward
        self.monitor = ClassifierMonitor(EpisodeStore(self.cfg.episodes.store_dir), reward, self.cfg.task.name,
                                         retrain_every=reward.classifier_retrain_every,
                                         min_episodes=reward.classifier_min_episodes, log=self.get_logger().info)
        self.status_pub = self.create_publisher(String, common.REWARD_CLASSIFIER, common.LATCHED_QOS)
        self.create_subscription(String, common.EPISODE_EVENT, self.on_event, common.EVENT_QOS)
        self.work: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="success_classifier", daemon=True)
        self.worker.start()
        self.work.put(("", False))  # first: train if the store already has enough, and publish the status

    def on_event(self, msg: String) -> None:
        event = common.parse_event(msg)
        if event is None or not isinstance(event.get("episode_id"), str) or not event["episode_id"]:
            return
        if event["type"] == "saved":
            self.work.put((event["episode_id"], True))
        elif event["type"] == "relabeled":
            self.work.put((event["episode_id"], False))

    def _work(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            episode_id, new = item
            try:
                if episode_id:
                    verdict = self.monitor.on_labelled(episode_id, new=new)
                    if verdict is not None and not verdict.agrees:
                        self.get_logger().info(
                            f"classifier v{verdict.version} disagrees on {episode_id}: label {verdict.label} "
                            f"({verdict.label_source}), classifier {'success' if verdict.predicted else 'failure'} "
                            f"(max score {verdict.score:.2f})")
                if self.monitor.retrain_due():
                    self.monitor.retrain()
            except Exception as err:  # keep judging later episodes; say what went wrong
                self.monitor.last_error = f"{type(err).__name__}: {err}"
                self.get_logger().error(f"success classifier: {self.monitor.last_error}")
            self.status_pub.publish(String(data=json.dumps(self.monitor.summary(), default=float, allow_nan=False)))

    def close(self) -> None:
        self.work.put(None)
        self.worker.join(timeout=30.0)


def main(args=None) -> int:
    return common.run_node(SuccessClassifierNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
