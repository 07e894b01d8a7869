"""Export the episode store as a LeRobot dataset (the LeRobotDataset v3.0 layout), beside HDF5.

Layout (documented in docs/data_format.md; field names as LeRobot's own writer makes them):

    meta/info.json                           codebase_version "v3.0", fps, features, totals, path templates
    meta/stats.json                          per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    meta/tasks.parquet                       task_index, indexed by the task's instruction
    meta/episodes/chunk-000/file-000.parquet one row per episode: length, data and video offsets,
                                             stats/<feature>/<stat>, and every EpisodeRecord field
    data/chunk-000/file-000.parquet          one row per step (all episodes, in order)
    videos/<camera key>/chunk-000/file-000.mp4  every episode's frames back to back (image episodes only)
    README.md                                a short card: repo id, counts, how to load it

A step is LeRobot's frame: the observation before the action, the action, and the reward and done
that followed it. The store keeps one more state than actions; that final state is kept in the
episodes table (`final_observation.state`) rather than as a frame with no action. The export is
written next to its destination and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.data.episode import EpisodeData

CODEBASE_VERSION = "v3.0"
CAMERA_KEY = "observation.images.camera"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
TASKS_PATH = "meta/tasks.parquet"
# LeRobot's writer settings, recorded in info.json so that LeRobot can append to the dataset; this
# export writes one data file and one video file per camera, which LeRobot reads at any size.
CHUNKS_SIZE, DATA_FILES_SIZE_IN_MB, VIDEO_FILES_SIZE_IN_MB = 1000, 100, 200
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_open", "object_x", "object_y", "object_z"]
ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
# Per-step origin of the action (e.g. "policy" or "operator"), exported as the `source` feature when
# episodes carry it. The episode store does not record it yet: EpisodeData gains a `sources`
# (steps,) array of strings when it does, and nothing here changes.
STEP_SOURCES = "sources"


@dataclass
class LeRobotExport:
    root: Path
    episodes: int
    frames: int
    skipped_aborted: list[str]  # safety-aborted episodes left out (include_aborted exports them)
    skipped_empty: list[str]  # episodes with no steps: a LeRobot episode needs at least one frame
    video_codec: str | None  # e.g. "av1 (PyAV)"; None for state-only data


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as err:  # an optional dependency: only this export needs it
        raise RuntimeError("LeRobot export needs pyarrow: `pip install pyarrow`") from err
    return pyarrow, pyarrow.parquet


def export_lerobot(store: EpisodeStore, out_dir: str | Path, fps: int, kind: str | None = None,
                   include_aborted: bool = False, repo_id: str | None = None, instructions: dict[str, str] | None = None,
                   video_backend: str | None = None) -> LeRobotExport:
    """Every readable episode of the store (optionally of one kind) as a LeRobot dataset in `out_dir`.
    Safety-aborted episodes are left out unless `include_aborted`; their `aborted` column flags them.
    The other arguments are `write_lerobot_dataset`'s."""
    episodes, aborted, empty = [], [], []
    for record, episode in store.load_all(kind):
        if record.aborted and not include_aborted:
            aborted.append(record.episode_id)
        elif len(episode.actions) == 0:
            empty.append(record.episode_id)
        else:
            episodes.append((record, episode))
    if not episodes:
        raise ValueError(f"no episodes to export from {store.root}" + (f" of kind '{kind}'" if kind else "")
                         + (f" ({len(aborted)} aborted: include_aborted:=true exports them)" if aborted else ""))
    result = write_lerobot_dataset(episodes, out_dir, fps, repo_id=repo_id, instructions=instructions,
                                   video_backend=video_backend)
    result.skipped_aborted, result.skipped_empty = aborted, empty
    return result


def write_lerobot_dataset(episodes: list[tuple[EpisodeRecord, EpisodeData]], out_dir: str | Path, fps: int,
                          repo_id: str | None = None, instructions: dict[str, str] | None = None,
                          robot_type: str = "widowx_250", video_backend: str | None = None) -> LeRobotExport:
    """Write `episodes` (each with at least one step) as a LeRobot v3.0 dataset.

    `fps` is the control rate (LeRobot timestamps are frame_index / fps); `instructions` maps a
    parl_robot task name to the language instruction LeRobot stores as the task (default: the name);
    `video_backend` is "pyav", "opencv" or None (PyAV when installed)."""
    pa, pq = _pyarrow()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} already exists and is not an empty directory: choose a new one")
    if int(fps) != fps or fps <= 0:
        raise ValueError(f"LeRobot datasets need a whole, positive frame rate; got fps={fps}")
    fps = int(fps)
    image_shape = _image_shape(episodes)
    instructions = instructions or {}
    tasks: dict[str, int] = {}
    for record, _ in episodes:
        tasks.setdefault(instructions.get(record.task, record.task), len(tasks))
    with_sources = any(getattr(episode, STEP_SOURCES, None) is not None for _, episode in episodes)

    staging = out_dir.parent / f".{out_dir.name}.incoming"
    if staging.exists():
        shutil.rmtree(staging)  # left by an export that died: ours, by name
    staging.mkdir(parents=True)
    try:
        video = None
        if image_shape is not None:
            video = _open_video(staging / VIDEO_PATH.format(video_key=CAMERA_KEY, chunk_index=0, file_index=0),
                                fps, image_shape, video_backend)
        columns: dict[str, list[np.ndarray]] = {}
        episode_rows, episode_stats = [], []
        start = 0
        for episode_index, (record, episode) in enumerate(episodes):
            instruction = instructions.get(record.task, record.task)
            frames = episode_frames(episode, episode_index, start, tasks[instruction], fps, with_sources)
            steps = len(episode.actions)
            stats = {name: feature_stats(values) for name, values in frames.items() if name != "source"}
            row = {"episode_index": episode_index, "tasks": [instruction], "length": steps,
                   "data/chunk_index": 0, "data/file_index": 0,
                   "dataset_from_index": start, "dataset_to_index": start + steps}
            if video is not None:
                video.write(episode.images[:steps])  # (steps, H, W, 3): the observation of each step
                stats[CAMERA_KEY] = image_stats(episode.images[:steps])
                row.update({f"videos/{CAMERA_KEY}/chunk_index": 0, f"videos/{CAMERA_KEY}/file_index": 0,
                            f"videos/{CAMERA_KEY}/from_timestamp": start / fps,
                            f"videos/{CAMERA_KEY}/to_timestamp": (start + steps) / fps})
            row.update({f"stats/{name}/{stat}": value.tolist() for name, values in stats.items()
                        for stat, value in values.items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            row.update({field.name: getattr(record, field.name) for field in fields(EpisodeRecord)})
            row["final_observation.state"] = np.asarray(episode.states[-1], np.float32).tolist()
            episode_rows.append(row)
            episode_stats.append(stats)
            for name, values in frames.items():
                columns.setdefault(name, []).append(values)
            start += steps
        video_codec = video.close() if video is not None else None

        data = {name: np.concatenate(parts) for name, parts in columns.items()}
        for relative, table in [(DATA_PATH.format(chunk_index=0, file_index=0), _frames_table(pa, data)),
                                (EPISODES_PATH, pa.Table.from_pylist(episode_rows)),
                                (TASKS_PATH, _tasks_table(pa, list(tasks)))]:
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, staging / relative, compression="snappy")
        features = _features(image_shape, video_codec, fps, with_sources)
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
            "total_episodes": len(episodes), "total_frames": start, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB, "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if image_shape is not None else None, "features": features,
        }
        (staging / "meta" / "info.json").write_text(json.dumps(info, indent=4))
        stats = {name: {stat: value.tolist() for stat, value in values.items()}
                 for name, values in aggregate_stats(episode_stats).items()}
        (staging / "meta" / "stats.json").write_text(json.dumps(stats, indent=4))
        repo_id = repo_id or f"parl_robot/{out_dir.name}"
        (staging / "README.md").write_text(_card(repo_id, out_dir.name, info, sorted({r.kind for r, _ in episodes})))
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return LeRobotExport(out_dir, len(episodes), start, [], [], video_codec)


def episode_frames(episode: EpisodeData, episode_index: int, start: int, task_index: int, fps: int,
                   with_sources: bool = False) -> dict[str, np.ndarray]:
    """The episode's steps as LeRobot frame columns (image frames go to the video separately)."""
    steps = len(episode.actions)
    done = np.zeros(steps, bool)
    done[-1] = bool(episode.terminal)  # the episode ended in success: nothing to bootstrap past it
    frame_index = np.arange(steps, dtype=np.int64)
    frames = {
        "observation.state": np.asarray(episode.states[:steps], np.float32),  # (steps, 7)
        "action": np.asarray(episode.actions, np.float32),  # (steps, 7)
        "next.reward": np.asarray(episode.rewards, np.float32),  # (steps,)
        "next.done": done,
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": np.full(steps, episode_index, np.int64),
        "index": start + frame_index,
        "task_index": np.full(steps, task_index, np.int64),
    }
    if with_sources:
        sources = getattr(episode, STEP_SOURCES, None)
        frames["source"] = np.asarray(sources if sources is not None else [""] * steps, dtype=object)
    return frames


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of one feature over frames: per component for vectors, shape (1,) for scalars;
    min and max keep the feature's dtype (bool, int64, float32), the others are float64."""
    raw = np.asarray(values).reshape(len(values), -1)  # (frames, components)
    values = raw.astype(np.float64)
    stats = {"min": raw.min(0), "max": raw.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for quantile, value in zip(QUANTILES, np.quantile(values, QUANTILES, axis=0)):
        stats[f"q{round(quantile * 100):02d}"] = value
    return stats


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of RGB frames scaled to [0, 1], shaped (3, 1, 1) as LeRobot keeps them."""
    stats = feature_stats(frames.reshape(-1, frames.shape[-1]) / 255.0)  # over (frames * H * W, 3) pixels
    stats = {name: value.reshape(-1, 1, 1) for name, value in stats.items() if name != "count"}
    return {**stats, "count": np.array([len(frames)])}


def aggregate_stats(episode_stats: list[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Dataset statistics from per-episode ones, combined as LeRobot combines them: exact min, max,
    mean and std; quantiles as the frame-weighted mean of the episodes' quantiles."""
    combined = {}
    for name in episode_stats[0]:
        parts = [stats[name] for stats in episode_stats]
        counts = np.array([part["count"][0] for part in parts], np.float64)
        weights = (counts / counts.sum()).reshape(-1, *[1] * parts[0]["mean"].ndim)  # (episodes, 1...)
        means = np.stack([part["mean"] for part in parts])
        mean = (weights * means).sum(0)
        variance = (weights * (np.stack([part["std"] for part in parts]) ** 2 + (means - mean) ** 2)).sum(0)
        combined[name] = {"min": np.min([part["min"] for part in parts], 0), "max": np.max([part["max"] for part in parts], 0),
                          "mean": mean, "std": np.sqrt(variance), "count": np.array([int(counts.sum())])}
        for key in (key for key in parts[0] if key.startswith("q")):
            combined[name][key] = (weights * np.stack([part[key] for part in parts])).sum(0)
    return combined


def _image_shape(episodes: list[tuple[EpisodeRecord, EpisodeData]]) -> tuple[int, int, int] | None:
    """(H, W, 3) when every episode has camera frames, None when none has; anything else is an error."""
    shapes = {None if episode.images is None else tuple(episode.images.shape[1:]) for _, episode in episodes}
    if len(shapes) > 1:
        raise ValueError(f"episodes differ in camera frames ({sorted(map(str, shapes))}): a LeRobot dataset "
                         "has one feature set; export image and state-only runs separately (kind:= or separate stores)")
    shape = shapes.pop()
    if shape is not None and (shape[0] % 2 or shape[1] % 2):
        raise ValueError(f"camera frames of {shape[1]}x{shape[0]} pixels: video (yuv420p) needs even sizes")
    return shape


def _features(image_shape, video_codec, fps, with_sources) -> dict[str, dict]:
    scalar = {"shape": [1], "names": None}
    features = {
        "observation.state": {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": STATE_NAMES},
        "action": {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": ACTION_NAMES},
        "next.reward": {"dtype": "float32", **scalar},
        "next.done": {"dtype": "bool", **scalar},
    }
    if image_shape is not None:
        features[CAMERA_KEY] = {
            "dtype": "video", "shape": list(image_shape), "names": ["height", "width", "channels"],
            "info": {"video.height": image_shape[0], "video.width": image_shape[1], "video.codec": video_codec.split()[0],
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": image_shape[2], "has_audio": False},
        }
    features.update({"timestamp": {"dtype": "float32", **scalar}, "frame_index": {"dtype": "int64", **scalar},
                     "episode_index": {"dtype": "int64", **scalar}, "index": {"dtype": "int64", **scalar},
                     "task_index": {"dtype": "int64", **scalar}})
    if with_sources:
        features["source"] = {"dtype": "string", **scalar}
    return features


def _frames_table(pa, data: dict[str, np.ndarray]):
    """Vectors as fixed-size lists and scalars as plain columns, the arrow types LeRobot's loader casts to."""
    arrays = {}
    for name, values in data.items():
        if values.ndim == 2:
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        elif values.dtype == object:
            arrays[name] = pa.array(values.tolist(), pa.string())
        else:
            arrays[name] = pa.array(values)
    return pa.table(arrays)


def _tasks_table(pa, tasks: list[str]):
    """task_index indexed by the instruction: the pandas DataFrame LeRobot reads with `read_parquet`."""
    pandas_metadata = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
                     "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks, pa.large_string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_metadata)})


class _PyAVVideo:
    """LeRobot's own encoding: AV1 (SVT-AV1) in MP4, yuv420p, a key frame every 2 frames, crf 30."""

    def __init__(self, av, path: Path, fps: int, shape: tuple[int, int, int]):
        self.av = av
        self.container = av.open(str(path), "w")
        codec = "libsvtav1" if "libsvtav1" in av.codecs_available else "mpeg4"
        options = {"g": "2", "crf": "30", "preset": "12"} if codec == "libsvtav1" else {"g": "2"}
        self.stream = self.container.add_stream(codec, rate=fps, options=options)
        self.stream.pix_fmt, self.stream.height, self.stream.width = "yuv420p", shape[0], shape[1]
        self.codec = "av1 (PyAV)" if codec == "libsvtav1" else "mpeg4 (PyAV)"

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            for packet in self.stream.encode(self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self.container.mux(packet)

    def close(self) -> str:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return self.codec


class _OpenCVVideo:
    """MPEG-4 Part 2 ('mp4v') in MP4: the encoder every OpenCV FFmpeg build has; FFmpeg-based decoders
    (torchcodec, PyAV: LeRobot's video backends) read it. Browsers do not play it."""

    def __init__(self, cv2, path: Path, fps: int, shape: tuple[int, int, int]):
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
        if not self.writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write mp4v video to {path}; `pip install av` encodes with PyAV instead")

    def write(self, frames: np.ndarray) -> None:
        for frame in frames:
            self.writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV takes BGR

    def close(self) -> str:
        self.writer.release()
        return "mpeg4 (OpenCV mp4v)"


def _open_video(path: Path, fps: int, shape: tuple[int, int, int], backend: str | None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if backend not in (None, "pyav", "opencv"):
        raise ValueError(f"video backend must be 'pyav' or 'opencv', got {backend!r}")
    if backend in (None, "pyav"):
        try:
            import av
        except ImportError:
            if backend == "pyav":
                raise RuntimeError("video_backend 'pyav' needs PyAV: `pip install av`") from None
        else:
            return _PyAVVideo(av, path, fps, shape)
    import cv2

    return _OpenCVVideo(cv2, path, fps, shape)


def _card(repo_id: str, directory: str, info: dict, kinds: list[str]) -> str:
    return f"""---
tags: [LeRobot, parl_robot]
task_categories: [robotics]
configs:
- config_name: default
  data_files: data/*/*.parquet
---
# {repo_id}

{info['total_episodes']} episodes ({', '.join(kinds)}), {info['total_frames']} frames at {info['fps']} fps from a
{info['robot_type']}, exported by parl_robot (`parl-robot export ... format:=lerobot`) in the LeRobotDataset
{info['codebase_version']} layout. Per-episode labels (success, label, aborted, phase, policy_version) are
columns of `meta/episodes/chunk-000/file-000.parquet`.

```python
from lerobot.datasets.lerobot_dataset import LeRobotDataset
dataset = LeRobotDataset("{repo_id}", root="path/to/{directory}")
```
"""
