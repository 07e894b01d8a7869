"""A learned success detector: a small image classifier trained from the operator's own labels.

The reward from object positions needs a marker or a distinctive colour, a calibrated camera and a
hand-written target region. Like SERL and LeRobot HIL-SERL, this classifier instead learns
P(success | camera frame) from labelled episodes already in the store (issue 32):

- positives: the last `positive_steps` frames of episodes labelled success (demos included);
- negatives: every frame of episodes labelled failure, and the first `negative_fraction` of the
  frames of successful episodes (the task is not done yet there); the frames in between are left
  out, since when success begins in them is not known;
- a held-out split by episode (never frames of one episode on both sides); random shifts and colour
  jitter while training;
- the decision threshold is chosen on the held-out episodes for a precision target (false positives
  are the dangerous error: the learner would train on fake successes), and saved with the model, its
  metrics and the episode ids it was trained and tested on.

`SuccessDebouncer` turns per-frame probabilities into the sparse success the reward node publishes:
a required number of consecutive positive frames, and the gripper open when the task asks for it.
No ROS here; `parl_robot/nodes/reward_node.py` runs it on the camera's frames.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from parl_robot.nets.activations import Mish

MODEL_FORMAT = "parl_robot.success_classifier/1"


class SuccessModelError(RuntimeError):
    """The success classifier's model file is missing, unreadable or not a success classifier."""


class SuccessClassifierNet(nn.Module):
    """Four stride-2 convolutions with GroupNorm, global average pooling, one logit. Frames are
    uint8 (batch, H, W, 3) RGB, resized to `image_size` square."""

    def __init__(self, image_size: int = 64, width: int = 32):
        super().__init__()
        self.image_size, self.width = image_size, width
        channels = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), Mish()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels[-1], 1)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        images = frames.permute(0, 3, 1, 2).float() / 255.0
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = nn.functional.interpolate(images, size=(self.image_size, self.image_size), mode="area")
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (batch,) from prepared images (batch, 3, S, S) in [0, 1]."""
        return self.head(self.features(images).mean(dim=(2, 3))).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """P(success) per uint8 frame (batch, H, W, 3) or for one frame (H, W, 3)."""
        single = frames.ndim == 3
        batch = torch.from_numpy(np.array(frames[None] if single else frames, dtype=np.uint8))  # a writable copy
        self.eval()
        out = torch.sigmoid(self(self.prepare(batch))).numpy()
        return out[0] if single else out


@dataclass
class LabelledFrames:
    frames: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) 1.0 = success
    episode_ids: np.ndarray  # (N,) the stored episode each frame comes from

    def __len__(self) -> int:
        return len(self.labels)


def frames_from_episode(frames: np.ndarray, success: bool, positive_steps: int, negative_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(frames, labels) one episode contributes; see the module docstring."""
    count = len(frames)
    if not success:
        return frames, np.zeros(count, np.float32)
    positives = frames[max(0, count - positive_steps):]
    early = int(np.floor(count * negative_fraction))
    early = min(early, max(0, count - positive_steps))  # never a frame on both sides
    negatives = frames[:early]
    return np.concatenate([negatives, positives]), np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))]).astype(np.float32)


def trainable_record(record: dict, task: str | None) -> bool:
    """A labelled, non-aborted episode of `task` whose label is not the classifier's own (an episode the
    classifier auto-labelled teaches it nothing, and would let its false positives reinforce themselves)."""
    if record.get("aborted") or record.get("label") not in ("success", "failure"):
        return False
    if task is not None and record.get("task") not in (task, None, ""):
        return False
    return not (record.get("detector") == "classifier" and record.get("label_source") == "detector")


def frames_from_store(store, task: str | None = None, positive_steps: int = 3, negative_fraction: float = 0.5,
                      image_size: int = 64, thumbnails: bool = True) -> LabelledFrames:
    """Labelled frames, resized to `image_size` square, from every trainable episode of `store` (an
    EpisodeStore; `trainable_record`). With `thumbnails`, episodes stored without per-step frames
    contribute their thumbnail (the last frame they saw) as their final frame. Raises ValueError when
    no episode has frames or one class is missing."""
    import cv2

    def resized(images: np.ndarray) -> np.ndarray:  # uint8 at the network's size: memory stays small
        return np.stack([cv2.resize(np.ascontiguousarray(image), (image_size, image_size), interpolation=cv2.INTER_AREA)
                         for image in images])

    frames, labels, ids = [], [], []
    for record in store.records():
        if not trainable_record(record, task):
            continue
        episode_id = record["episode_id"]
        try:
            _, episode = store.load_episode(episode_id)
        except (OSError, ValueError, KeyError):
            continue  # the store quarantines what it cannot read; nothing to learn from it
        images = episode.images
        if images is None:
            thumbnail = store.thumbnail_path(episode_id) if thumbnails else None
            if thumbnail is None:
                continue
            images = cv2.imread(str(thumbnail), cv2.IMREAD_COLOR)[None, :, :, ::-1]
        chosen, chosen_labels = frames_from_episode(np.asarray(images), record["label"] == "success", positive_steps, negative_fraction)
        if len(chosen):
            frames.append(resized(chosen))
            labels.append(chosen_labels)
            ids += [episode_id] * len(chosen)
    if not frames:
        raise ValueError("no labelled episode in the store has camera frames (record with episodes.record_frames: true)")
    data = LabelledFrames(np.concatenate(frames), np.concatenate(labels), np.asarray(ids))
    if data.labels.min() == data.labels.max():
        raise ValueError(f"only {'successful' if data.labels[0] else 'failed'} frames in the store: both are needed")
    return data


def split_by_episode(episode_ids: np.ndarray, held_out_fraction: float, seed: int = 0,
                     labels: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the held-out frames: whole episodes, about `held_out_fraction` of them. With
    `labels`, the split is made within each outcome (episodes with a success frame, and the others),
    at least one episode of each held out and one kept, so that the threshold is chosen on both
    outcomes; ValueError when an outcome has fewer than two episodes."""
    rng = np.random.default_rng(seed)
    if labels is None:
        groups = [np.unique(episode_ids)]
    else:
        successful = set(np.unique(episode_ids[np.asarray(labels) > 0.5]).tolist())
        groups = [np.array(sorted(successful)), np.array(sorted(set(np.unique(episode_ids).tolist()) - successful))]
        for name, group in zip(("successful", "failed"), groups):
            if len(group) < 2:
                raise ValueError(f"{len(group)} {name} labelled episode(s) with frames: at least 2 of each outcome are "
                                 "needed (one to train on, one to choose the threshold on); label more episodes")
    held_out: set = set()
    for group in groups:
        count = min(len(group) - 1, max(1, int(round(len(group) * held_out_fraction))))
        held_out |= set(rng.choice(group, size=count, replace=False).tolist())
    return np.isin(episode_ids, list(held_out))


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4, jitter: float = 0.2) -> torch.Tensor:
    """Random shift (replicate-pad, crop back) and per-image brightness/contrast jitter; (B, 3, S, S) in [0, 1]."""
    batch, _, height, width = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator)
    shifted = torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(offsets.tolist())])
    brightness = 1 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    contrast = 1 + (torch.rand(batch, 1, 1, 1, generator=generator) * 2 - 1) * jitter
    mean = shifted.mean(dim=(1, 2, 3), keepdim=True)
    return ((shifted - mean) * contrast + mean * brightness).clamp(0, 1)


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, precision_target: float) -> dict:
    """The lowest threshold whose held-out precision reaches `precision_target` (the most recall at
    that precision), with its precision, recall and F1. When no threshold reaches it, the threshold
    is above every probability (the classifier never says success) and `met` is False."""
    labels = labels > 0.5
    highest = float(probabilities.max()) if len(probabilities) else 1.0
    best = {"threshold": float(np.nextafter(max(1.0, highest), 2.0)), "precision": None, "recall": 0.0, "f1": 0.0,
            "met": False}
    for threshold in np.unique(probabilities)[::-1]:  # high to low: recall grows
        predicted = probabilities >= threshold
        true_positives = int(np.sum(predicted & labels))
        precision = true_positives / int(predicted.sum())
        recall = true_positives / max(int(labels.sum()), 1)
        if precision >= precision_target:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            best = {"threshold": float(threshold), "precision": precision, "recall": recall, "f1": f1, "met": True}
    return best


@dataclass
class TrainingSettings:
    image_size: int = 64
    width: int = 32
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    held_out_fraction: float = 0.25
    precision_target: float = 0.95
    seed: int = 0


@dataclass
class TrainedClassifier:
    net: SuccessClassifierNet
    threshold: float
    metrics: dict  # held-out precision, recall, f1, met, frame and episode counts
    train_episode_ids: list[str] = field(default_factory=list)
    held_out_episode_ids: list[str] = field(default_factory=list)


def train_success_classifier(data: LabelledFrames, settings: TrainingSettings = TrainingSettings(), log=None) -> TrainedClassifier:
    """Train on the non-held-out episodes (positives re-weighted to balance the classes), choose the
    threshold on the held-out ones."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    held_out = split_by_episode(data.episode_ids, settings.held_out_fraction, settings.seed, data.labels)
    net = SuccessClassifierNet(settings.image_size, settings.width)
    images = net.prepare(torch.as_tensor(data.frames))  # resized once
    labels = torch.as_tensor(data.labels, dtype=torch.float32)
    train_index = np.flatnonzero(~held_out)
    positives = float(labels[train_index].sum())
    if positives == 0 or positives == len(train_index):
        raise ValueError("the training episodes hold only one class; label more episodes (both outcomes)")
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(train_index) - positives) / positives))
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    for epoch in range(settings.epochs):
        net.train()
        order = train_index[torch.randperm(len(train_index), generator=generator).numpy()]
        total = 0.0
        for start in range(0, len(order), settings.batch_size):
            index = torch.as_tensor(order[start:start + settings.batch_size])
            loss = loss_fn(net(augment(images[index], generator)), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        if log is not None and (epoch + 1) % max(1, settings.epochs // 5) == 0:
            log(f"epoch {epoch + 1}/{settings.epochs}: training loss {total / len(order):.4f}")
    net.eval()
    with torch.no_grad():
        held_out_probabilities = torch.sigmoid(net(images[torch.as_tensor(np.flatnonzero(held_out))])).numpy()
    chosen = choose_threshold(held_out_probabilities, data.labels[held_out], settings.precision_target)
    metrics = {**chosen, "precision_target": settings.precision_target,
               "held_out_frames": int(held_out.sum()), "held_out_positives": int(data.labels[held_out].sum()),
               "training_frames": int(len(train_index)), "training_positives": int(positives)}
    return TrainedClassifier(net, chosen["threshold"], metrics,
                             sorted(set(data.episode_ids[~held_out].tolist())), sorted(set(data.episode_ids[held_out].tolist())))


def save_classifier(path: str | Path, trained: TrainedClassifier, task: str) -> Path:
    """Write the model, threshold, metrics and episode ids atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": MODEL_FORMAT, "task": task, "image_size": trained.net.image_size, "width": trained.net.width,
        "threshold": trained.threshold, "metrics": trained.metrics, "state_dict": trained.net.state_dict(),
        "train_episode_ids": trained.train_episode_ids, "held_out_episode_ids": trained.held_out_episode_ids,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in payload.items() if k != "state_dict"}, indent=2))
    return path


def load_classifier(path: str | Path) -> TrainedClassifier:
    """The saved classifier; SuccessModelError naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise SuccessModelError(f"success classifier '{path}' does not exist: train one with "
                                "`parl-robot reward train task:=... store_dir:=...` or set reward.classifier_file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: torch raises many kinds
        raise SuccessModelError(f"success classifier '{path}' cannot be read ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise SuccessModelError(f"'{path}' is not a success classifier (expected format {MODEL_FORMAT})")
    try:
        net = SuccessClassifierNet(int(payload["image_size"]), int(payload["width"]))
        net.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise SuccessModelError(f"success classifier '{path}' is damaged: {err}") from None
    net.eval()
    return TrainedClassifier(net, float(payload["threshold"]), dict(payload.get("metrics", {})),
                             list(payload.get("train_episode_ids", [])), list(payload.get("held_out_episode_ids", [])))


class SuccessDebouncer:
    """Success once `consecutive` frames in a row reach `threshold` — and the gripper is open when
    `require_gripper_open` — so one odd frame does not end an episode."""

    def __init__(self, threshold: float, consecutive: int, require_gripper_open: bool):
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        self.threshold, self.consecutive, self.require_gripper_open = threshold, consecutive, require_gripper_open
        self.streak = 0

    def reset(self) -> None:
        self.streak = 0

    def update(self, probability: float, gripper_open: bool) -> bool:
        self.streak = self.streak + 1 if probability >= self.threshold else 0
        return self.streak >= self.consecutive and (gripper_open or not self.require_gripper_open)
