"""Episode storage: one directory per episode, written atomically, with a rebuildable index.

Layout of `<store>/episodes/<episode_id>/`: `meta.json` (labels, success, timestamps, policy
version, config hash, kind = demo|online), `arrays.npz` (states, actions, rewards, timestamps)
and, for image runs, `images.npz` (JPEG bytes per frame). A directory is first written under
`<store>/.incoming/`, fsynced, then renamed into place, so a crash never leaves half an episode.
Unreadable episodes are moved to `<store>/quarantine/` with a `reason.txt`, never dropped.
Demonstrations (kind "demo", ids `demo_NNNNN`) are the offline data set: they cannot be relabelled.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from parl_robot.data.episode import EpisodeData

LOG = logging.getLogger(__name__)
META = "meta.json"
ARRAYS = "arrays.npz"
IMAGES = "images.npz"
THUMBNAIL = "thumbnail.jpg"
INDEX = "index.json"


@dataclass
class EpisodeRecord:
    episode_id: str
    kind: str  # "demo" or "online"
    success: bool
    label: str  # "success" | "failure" | "unlabelled"
    label_source: str  # "detector" | "operator" | "demonstrator"
    steps: int
    policy_version: int
    config_hash: str
    task: str
    created: float = field(default_factory=time.time)
    phase: str = ""  # learner phase the episode ran in: "demo" | "warmup" | "online" ("" = older stores)
    # Ended by a safety hold (e-stop, tracking or motor error): kept for inspection, never labelled,
    # never loaded into a replay buffer.
    aborted: bool = False
    abort_reason: str = ""
    intervention_steps: int = 0  # steps the operator drove (robot/executed source "intervention")
    # The reward detector in use while the episode ran ("positions" | "classifier"; "" = older stores)
    # and, with the classifier, its highest P(success) in the episode. label_source says who labelled
    # it; an operator's relabel always replaces the label, these stay as a record of the detector.
    detector: str = ""
    detector_score: float | None = None


def is_demonstration(meta: dict) -> bool:
    """Whether a stored episode's metadata (a `records()` entry) is a demonstration."""
    return meta.get("kind") == "demo" or str(meta.get("episode_id", "")).startswith("demo_")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _contained_id(episode_id: str) -> bool:
    """An episode id that names a directory inside the store (no separators, not hidden)."""
    return bool(episode_id) and "/" not in episode_id and "\\" not in episode_id and not episode_id.startswith(".")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _write_file(path: Path, write) -> None:
    with open(path, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


class EpisodeStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.episodes_dir = self.root / "episodes"
        self.incoming_dir = self.root / ".incoming"
        self.quarantine_dir = self.root / "quarantine"
        for directory in (self.episodes_dir, self.incoming_dir, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._remove_abandoned_staging()

    def _remove_abandoned_staging(self) -> None:
        """Staging directories (`.incoming/<id>.<pid>`) of saves whose process is gone: a crash mid-save
        left them; they never were an episode. A live process's save in progress is left alone."""
        for entry in self.incoming_dir.iterdir():
            pid = entry.name.rsplit(".", 1)[-1]
            if entry.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    def next_episode_id(self, kind: str) -> str:
        existing = [p.name for p in self.episodes_dir.iterdir() if p.name.startswith(kind + "_")]
        numbers = [int(name.split("_")[1]) for name in existing if name.split("_")[1].isdigit()]
        return f"{kind}_{(max(numbers) + 1) if numbers else 0:05d}"

    def save(
        self,
        record: EpisodeRecord,
        episode: EpisodeData,
        timestamps: np.ndarray | None = None,
        thumbnail: np.ndarray | None = None,
    ) -> Path:
        """Write one episode atomically; `thumbnail` (RGB uint8) is the frame shown on the operator page."""
        final_dir = self.episodes_dir / record.episode_id
        if final_dir.exists():
            raise FileExistsError(f"episode {record.episode_id} already stored at {final_dir}")
        staging = self.incoming_dir / f"{record.episode_id}.{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        try:
            self._write_staged(staging, record, episode, timestamps, thumbnail)
            os.replace(staging, final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # a failed save leaves nothing behind
            raise
        _fsync_dir(self.episodes_dir)
        self._write_index()
        return final_dir

    def _write_staged(self, staging: Path, record: EpisodeRecord, episode: EpisodeData, timestamps: np.ndarray | None,
                      thumbnail: np.ndarray | None) -> None:
        """Every file of the episode into `staging`, each fsynced, then the directory itself."""
        steps = len(episode.actions)
        arrays = {
            "states": np.asarray(episode.states, np.float32),
            "actions": np.asarray(episode.actions, np.float32),
            "rewards": np.asarray(episode.rewards, np.float32),
            "terminal": np.asarray(episode.terminal),
            "timestamps": np.asarray(timestamps if timestamps is not None else np.zeros(steps + 1), np.float64),
        }
        if episode.sources is not None:
            if len(episode.sources) != steps:
                raise ValueError(f"{len(episode.sources)} step sources for {steps} actions")
            arrays["sources"] = np.asarray(episode.sources, np.uint8)
        if episode.q_values is not None:
            if len(episode.q_values) != steps or not np.all(np.isfinite(episode.q_values)):
                raise ValueError(f"q_values must be {steps} finite numbers, got {len(episode.q_values)}")
            arrays["q_values"] = np.asarray(episode.q_values, np.float32)
        _write_file(staging / ARRAYS, lambda h: np.savez_compressed(h, **arrays))
        if episode.images is not None:
            import cv2

            encoded = {
                f"frame_{i:05d}": np.frombuffer(cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1], np.uint8)
                for i, image in enumerate(episode.images)
            }
            _write_file(staging / IMAGES, lambda h: np.savez(h, **encoded))
        if thumbnail is not None:
            import cv2

            jpeg = cv2.imencode(".jpg", np.ascontiguousarray(thumbnail[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 85])[1]
            _write_file(staging / THUMBNAIL, lambda h: h.write(jpeg.tobytes()))
        record.steps = steps
        _write_file(staging / META, lambda h: h.write(json.dumps(vars(record), indent=2).encode()))
        _fsync_dir(staging)

    def relabel(
        self, episode_id: str, label: str, source: str = "operator", final_reward: float | None = None
    ) -> EpisodeRecord:
        """Change an episode's label. With `final_reward` the stored rewards follow the label too: the
        last step gets `final_reward` and the episode is terminal iff labelled success. Each file is
        replaced atomically (arrays first, so a crash between the two leaves the old label, not a mix).
        Demonstrations raise PermissionError and stay as they are."""
        if label not in ("success", "failure"):
            raise ValueError(f"label must be 'success' or 'failure', got {label!r}")
        directory = self.episodes_dir / episode_id
        meta_path = directory / META
        if not meta_path.is_file():
            raise KeyError(f"no stored episode '{episode_id}'")
        record = EpisodeRecord(**json.loads(meta_path.read_text()))
        if is_demonstration(vars(record)):
            raise PermissionError(f"'{episode_id}' is a demonstration: demonstrations are read-only")
        if record.aborted:
            raise ValueError(f"'{episode_id}' was aborted by a safety hold ({record.abort_reason}): it is kept for "
                             "inspection and cannot be labelled")
        if final_reward is not None and record.steps > 0:
            with np.load(directory / ARRAYS) as stored:
                arrays = {name: stored[name] for name in stored.files}
            arrays["rewards"] = arrays["rewards"].copy()
            arrays["rewards"][-1] = final_reward
            arrays["terminal"] = np.asarray(label == "success")
            temporary_arrays = directory / f".{ARRAYS}.tmp"
            _write_file(temporary_arrays, lambda h: np.savez_compressed(h, **arrays))
            os.replace(temporary_arrays, directory / ARRAYS)
        record.label, record.label_source, record.success = label, source, label == "success"
        temporary = directory / f".{META}.tmp"
        _write_file(temporary, lambda h: h.write(json.dumps(vars(record), indent=2).encode()))
        os.replace(temporary, meta_path)
        _fsync_dir(directory)
        self._write_index()
        return record

    def thumbnail_path(self, episode_id: str) -> Path | None:
        """The episode's thumbnail JPEG, if it has one (ids are checked so no path escapes the store)."""
        if not _contained_id(episode_id):
            return None
        path = self.episodes_dir / episode_id / THUMBNAIL
        return path if path.is_file() else None

    def load_episode(self, episode_id: str, with_images: bool = True) -> tuple[EpisodeRecord, EpisodeData]:
        """One stored episode (ValueError when its files disagree); `with_images=False` skips decoding
        the camera frames (`frame_jpeg` serves them one by one)."""
        directory = self.episodes_dir / episode_id
        record = EpisodeRecord(**json.loads((directory / META).read_text()))
        with np.load(directory / ARRAYS) as arrays:
            states, actions, rewards = arrays["states"], arrays["actions"], arrays["rewards"]
            terminal = bool(arrays["terminal"])
            timestamps = arrays["timestamps"] if "timestamps" in arrays.files else None
            sources = arrays["sources"] if "sources" in arrays.files else None
            q_values = arrays["q_values"] if "q_values" in arrays.files else None
        if sources is not None and len(sources) != len(actions):
            raise ValueError(f"inconsistent lengths: {len(sources)} step sources for {len(actions)} actions")
        if q_values is not None and (len(q_values) != len(actions) or not np.all(np.isfinite(q_values))):
            raise ValueError(f"q_values: {len(q_values)} values for {len(actions)} actions, or non-finite")
        if len(states) != len(actions) + 1 or len(rewards) != len(actions) or record.steps != len(actions):
            raise ValueError(f"inconsistent lengths: {len(states)} states, {len(actions)} actions, {len(rewards)} rewards")
        if not (np.all(np.isfinite(states)) and np.all(np.isfinite(actions)) and np.all(np.isfinite(rewards))):
            raise ValueError("non-finite values in arrays")
        images = None
        if with_images and (directory / IMAGES).exists():
            import cv2

            with np.load(directory / IMAGES) as frames:
                images = np.stack([cv2.imdecode(frames[name], cv2.IMREAD_COLOR)[:, :, ::-1] for name in sorted(frames.files)])
        return record, EpisodeData(states, actions, rewards, terminal, images, timestamps, sources, q_values)

    def episode_dir(self, episode_id: str) -> Path | None:
        """The episode's directory, for ids that cannot leave the store; None for others."""
        if not _contained_id(episode_id):
            return None
        directory = self.episodes_dir / episode_id
        return directory if (directory / META).is_file() else None

    def frame_count(self, episode_id: str) -> int:
        """How many camera frames the episode stored (one per state; 0 without frames)."""
        directory = self.episode_dir(episode_id)
        if directory is None or not (directory / IMAGES).exists():
            return 0
        with np.load(directory / IMAGES) as frames:
            return len(frames.files)

    def frame_jpeg(self, episode_id: str, index: int) -> bytes | None:
        """Frame `index` of a stored episode as the JPEG bytes the store keeps (no re-encoding); None
        when the episode, its frames or that index do not exist."""
        directory = self.episode_dir(episode_id)
        if directory is None or not (directory / IMAGES).exists() or index < 0:
            return None
        with np.load(directory / IMAGES) as frames:
            name = f"frame_{index:05d}"
            return frames[name].tobytes() if name in frames.files else None

    def quarantine(self, episode_id: str, reason: str) -> Path:
        target = self.quarantine_dir / f"{episode_id}.{int(time.time())}"
        shutil.move(str(self.episodes_dir / episode_id), target)
        (target / "reason.txt").write_text(reason + "\n")
        LOG.warning("quarantined episode %s: %s", episode_id, reason)
        return target

    def load_all(self, kind: str | None = None, with_images: bool = True) -> list[tuple[EpisodeRecord, EpisodeData]]:
        """Every readable episode (optionally of one kind), in id order; bad ones are quarantined.
        `with_images=False` leaves the camera frames on disk (a state learner does not need them)."""
        loaded = []
        for directory in sorted(p for p in self.episodes_dir.iterdir() if p.is_dir()):
            try:
                record, episode = self.load_episode(directory.name, with_images=with_images)
            except Exception as err:  # corrupt or partial on disk: keep it aside, with the reason
                self.quarantine(directory.name, f"{type(err).__name__}: {err}")
                continue
            if kind is None or record.kind == kind:
                loaded.append((record, episode))
        self._write_index()
        return loaded

    def records(self) -> list[dict]:
        """The index, rebuilt from the episode directories when missing or corrupt."""
        try:
            index = json.loads((self.root / INDEX).read_text())
            if isinstance(index, list):
                return index
        except (OSError, ValueError):
            pass
        return self._write_index()

    def _write_index(self) -> list[dict]:
        index = []
        for directory in sorted(p for p in self.episodes_dir.iterdir() if p.is_dir()):
            try:
                index.append(json.loads((directory / META).read_text()))
            except (OSError, ValueError):
                continue
        temporary = self.root / f".{INDEX}.tmp"
        _write_file(temporary, lambda h: h.write(json.dumps(index, indent=1).encode()))
        os.replace(temporary, self.root / INDEX)
        return index
