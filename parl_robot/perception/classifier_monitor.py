"""The success classifier in shadow mode: judged on every labelled episode, retrained as labels accumulate.

While another detector (object positions) or the operator decides success, `ClassifierMonitor` runs
the current classifier on each newly labelled episode's stored frames, with the reward node's rule
(`SuccessDebouncer`: consecutive positive frames, the gripper open when the task asks for it), and
records whether it agrees with the label. Every `retrain_every` newly labelled episodes (once the
store holds `min_episodes` with frames) it retrains on all of them and saves a new version. The
summary — agreement of the current version on the episodes labelled since it was trained, and its
recent disagreements — is what the operator page shows before the operator switches the reward to
the classifier (issue 32). No ROS here; `parl_robot/nodes/success_classifier_node.py` runs it.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from parl_robot.config import RewardConfig
from parl_robot.json_values import finite_or_none
from parl_robot.perception.success_classifier import (SuccessDebouncer, SuccessModelError, TrainedClassifier,
                                                      TrainingSettings, frames_from_store, load_classifier,
                                                      save_classifier, train_success_classifier, trainable_record)

GRIPPER_INDEX = 3  # parl_robot/observation.py: state = ee xyz, gripper open, object xyz


@dataclass
class Verdict:
    episode_id: str
    label: str  # the episode's label when judged: success | failure
    label_source: str
    predicted: bool  # the classifier (with the reward node's rule) would have called it a success
    score: float  # the highest P(success) over the episode's frames
    version: int  # the classifier version that judged it

    @property
    def agrees(self) -> bool:
        return self.predicted == (self.label == "success")


class ClassifierMonitor:
    def __init__(self, store, reward: RewardConfig, task: str, retrain_every: int = 10, min_episodes: int = 20,
                 history: int = 200, settings: TrainingSettings | None = None, log=None):
        self.store, self.reward, self.task = store, reward, task
        self.retrain_every, self.min_episodes = retrain_every, min_episodes
        self.settings = settings or TrainingSettings(precision_target=reward.classifier_precision_target)
        self.log = log or (lambda message: None)
        self.path = Path(reward.classifier_file)
        self.verdicts: deque[Verdict] = deque(maxlen=history)
        self.labelled_since_training = 0
        self.model: TrainedClassifier | None = None
        self.version = 0
        self.last_error = ""
        if self.path.is_file():
            try:
                self.model = load_classifier(self.path)
                self.version = int(json.loads(self.path.with_suffix(".json").read_text()).get("version", 1)) \
                    if self.path.with_suffix(".json").is_file() else 1
            except (SuccessModelError, ValueError, OSError) as err:
                self.last_error = str(err)

    def judge(self, episode_id: str) -> Verdict | None:
        """The current classifier's verdict on a stored, labelled episode; None without a model, frames or label."""
        if self.model is None:
            return None
        try:
            record, episode = self.store.load_episode(episode_id)
        except (OSError, ValueError, KeyError) as err:
            self.last_error = f"{episode_id}: {err}"
            return None
        if episode.images is None or not trainable_record(vars(record), None):
            return None  # no frames, no label, or labelled by the classifier itself (it would agree with itself)
        probabilities = self.model.net.probabilities(episode.images)
        threshold = self.reward.classifier_threshold or self.model.threshold
        debouncer = SuccessDebouncer(threshold, self.reward.classifier_consecutive_frames, self.reward.require_gripper_open)
        gripper_open = np.asarray(episode.states)[:, GRIPPER_INDEX] > 0.5
        predicted = any([debouncer.update(float(p), bool(g)) for p, g in zip(probabilities, gripper_open)])
        verdict = Verdict(episode_id, record.label, record.label_source, bool(predicted), float(np.max(probabilities)),
                          self.version)
        # A relabel replaces the episode's earlier verdict of the same version (the operator's label wins).
        self.verdicts = deque([v for v in self.verdicts if not (v.episode_id == episode_id and v.version == self.version)],
                              maxlen=self.verdicts.maxlen)
        self.verdicts.append(verdict)
        return verdict

    def on_labelled(self, episode_id: str, new: bool = True) -> Verdict | None:
        """A newly saved (or relabelled, `new=False`) episode: judge it and count it toward retraining."""
        if new:
            self.labelled_since_training += 1
        return self.judge(episode_id)

    def retrain_due(self) -> bool:
        if self.model is not None and self.labelled_since_training < self.retrain_every:
            return False
        with_frames = [r for r in self.store.records()
                       if trainable_record(r, self.task) and self.store.frame_count(r["episode_id"]) > 0]
        if not with_frames and not self.last_error:
            self.last_error = ("no labelled episode has stored frames: set episodes.record_frames: true "
                               "(state policies) to train the classifier")
        return len(with_frames) >= self.min_episodes

    def retrain(self) -> TrainedClassifier | None:
        """Train on every labelled episode with frames and save the next version; None (and
        `last_error`) when the store cannot train one yet."""
        self.labelled_since_training = 0
        try:
            data = frames_from_store(self.store, self.task, image_size=self.settings.image_size, thumbnails=False)
            trained = train_success_classifier(data, self.settings)
        except ValueError as err:
            self.last_error = str(err)
            return None
        metrics = trained.metrics
        if not metrics["met"]:  # never replace a model by one that cannot reach the precision target
            kept = f"v{self.version} stays in use" if self.model is not None else "no model yet"
            self.last_error = (f"a retrained classifier did not reach held-out precision {metrics['precision_target']} "
                               f"({len(trained.held_out_episode_ids)} held-out episodes); {kept}")
            self.log(self.last_error)
            return None
        self.version += 1
        save_classifier(self.path, trained, self.task)
        summary_path = self.path.with_suffix(".json")
        summary = json.loads(summary_path.read_text())
        summary_path.write_text(json.dumps({**summary, "version": self.version}, indent=2))
        self.model, self.last_error = trained, ""
        self.log(f"success classifier v{self.version}: trained on {len(trained.train_episode_ids)} episodes, held-out "
                 f"precision {metrics['precision']:.3f} recall {metrics['recall']:.3f}")
        return trained

    def summary(self, disagreements: int = 10) -> dict:
        return finite_or_none(self._summary(disagreements))

    def _summary(self, disagreements: int) -> dict:
        """What the page shows: the current version, its held-out metrics, and its agreement with the
        labels of the episodes labelled since it was trained, with the most recent disagreements."""
        current = [v for v in self.verdicts if v.version == self.version]
        agreed = sum(v.agrees for v in current)
        false_positives = sum(v.predicted and v.label != "success" for v in current)
        return {
            "version": self.version,
            "model_file": str(self.path),
            "trained_episodes": len(self.model.train_episode_ids) if self.model else 0,
            "held_out": dict(self.model.metrics) if self.model else None,
            "threshold": (self.reward.classifier_threshold or self.model.threshold) if self.model else None,
            "judged": len(current),
            "agreed": agreed,
            "agreement": agreed / len(current) if current else None,
            "false_positives": false_positives,
            "labelled_since_training": self.labelled_since_training,
            "disagreements": [{**asdict(v), "agrees": False} for v in current if not v.agrees][-disagreements:],
            "last_error": self.last_error,
        }
