"""Export the episode store to one HDF5 file (robomimic-style layout) and import such files.

Layout (documented in docs/data_format.md):

    /data                       attrs: format="parl_robot.hdf5", version=1, total=<transitions>, tasks (JSON list)
    /data/<episode_id>/         attrs: every EpisodeRecord field, num_samples=<steps>
        actions     (T, 7)      float32, normalized [-1, 1] end-effector deltas + gripper
        rewards     (T,)        float32, biased (0 = success step)
        dones       (T,)        uint8, 1 on the final step of a successful (terminal) episode
        timestamps  (T + 1,)    float64, wall-clock seconds of each observation
        sources     (T,)        uint8, who acted: 0 policy, 1 intervention (operator), 2 not executed (when recorded)
        q_values    (T,)        float32, the critic's Q of each executed action when stored (when recorded)
        obs/state   (T + 1, 7)  float32, [ee_xyz, gripper_open, object_xyz]
        obs/image   (T + 1, H, W, 3) uint8 RGB, gzip-compressed (image episodes only)
    /mask/<kind>                ids of the episodes of that kind ("demo", "online"), as bytes

Import writes each episode through `EpisodeStore.save` (atomic) under a fresh id of its kind, so
demos recorded elsewhere (teleoperation, another lab's sim) join a store without clobbering it.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from parl_robot.data.episode_store import EpisodeRecord, EpisodeStore
from parl_robot.data.episode import EpisodeData

FORMAT = "parl_robot.hdf5"
VERSION = 1
_RECORD_FIELDS = [f.name for f in fields(EpisodeRecord)]


def _h5py():
    try:
        import h5py
    except ImportError as err:  # an optional dependency: only export/import need it
        raise RuntimeError("HDF5 export needs h5py: `pip install h5py`") from err
    return h5py


def export_hdf5(store: EpisodeStore, path: str | Path, kind: str | None = None) -> int:
    """Write every readable episode (optionally of one kind) to `path`; returns the episode count.
    The file is written next to its destination and renamed into place when complete."""
    h5py = _h5py()
    path = Path(path)
    temporary = path.with_suffix(path.suffix + ".tmp")
    episodes = store.load_all(kind)
    masks: dict[str, list[str]] = {}
    total = 0
    try:
        with h5py.File(temporary, "w") as handle:
            data = handle.create_group("data")
            for record, episode in episodes:
                _write_episode(data.create_group(record.episode_id), record, episode)
                masks.setdefault(record.kind, []).append(record.episode_id)
                total += len(episode.actions)
            data.attrs.update(format=FORMAT, version=VERSION, total=total,
                              tasks=json.dumps(sorted({record.task for record, _ in episodes})))
            mask = handle.create_group("mask")
            for mask_kind, ids in masks.items():
                mask.create_dataset(mask_kind, data=np.array([i.encode() for i in ids]))
    except BaseException:
        temporary.unlink(missing_ok=True)  # a failed export leaves no partial file, and the destination as it was
        raise
    temporary.replace(path)
    return len(episodes)


def _write_episode(group, record: EpisodeRecord, episode: EpisodeData) -> None:
    for name in _RECORD_FIELDS:
        if getattr(record, name) is not None:  # HDF5 has no null: an absent attribute reads back as None
            group.attrs[name] = getattr(record, name)
    steps = len(episode.actions)
    group.attrs["num_samples"] = steps
    group.create_dataset("actions", data=episode.actions.astype(np.float32))
    group.create_dataset("rewards", data=episode.rewards.astype(np.float32))
    dones = np.zeros(steps, np.uint8)
    if episode.terminal and steps:
        dones[-1] = 1
    group.create_dataset("dones", data=dones)
    # Episodes of stores older than timestamps have none: zeros, as the store itself reads them.
    timestamps = episode.timestamps if episode.timestamps is not None else np.zeros(steps + 1)
    group.create_dataset("timestamps", data=np.asarray(timestamps, np.float64))
    if episode.sources is not None:
        group.create_dataset("sources", data=np.asarray(episode.sources, np.uint8))
    if episode.q_values is not None:
        group.create_dataset("q_values", data=np.asarray(episode.q_values, np.float32))
    group.create_dataset("obs/state", data=episode.states.astype(np.float32))
    if episode.images is not None:  # gzip level 4, one frame per chunk: a reader decodes only the frames it reads
        group.create_dataset("obs/image", data=episode.images, compression="gzip", compression_opts=4,
                             chunks=(1, *episode.images.shape[1:]))


def read_hdf5(path: str | Path) -> list[tuple[EpisodeRecord, EpisodeData, np.ndarray]]:
    """(record, episode, timestamps) for every episode in an exported file, validated."""
    h5py = _h5py()
    path = Path(path)
    episodes = []
    with h5py.File(path, "r") as handle:
        data = handle.get("data")
        if data is None or data.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file (no /data group with format={FORMAT!r})")
        if int(data.attrs.get("version", -1)) > VERSION:
            raise ValueError(f"{path} has format version {data.attrs['version']}; this parl_robot reads up to {VERSION}")
        for episode_id in sorted(data):
            group = data[episode_id]
            try:
                attrs = {name: _plain(group.attrs[name]) for name in _RECORD_FIELDS if name in group.attrs}
                record = EpisodeRecord(**attrs)
                states = np.asarray(group["obs/state"], np.float32)
                actions = np.asarray(group["actions"], np.float32)
                rewards = np.asarray(group["rewards"], np.float32)
                dones = np.asarray(group["dones"])
                images = np.asarray(group["obs/image"], np.uint8) if "obs/image" in group else None
                timestamps = np.asarray(group["timestamps"], np.float64)
                sources = np.asarray(group["sources"], np.uint8) if "sources" in group else None
                q_values = np.asarray(group["q_values"], np.float32) if "q_values" in group else None
            except (KeyError, TypeError) as err:
                raise ValueError(f"{path}: episode {episode_id} is incomplete: {err}") from err
            if len(states) != len(actions) + 1 or len(rewards) != len(actions) or len(dones) != len(actions):
                raise ValueError(f"{path}: episode {episode_id} has inconsistent lengths")
            episode = EpisodeData(states, actions, rewards, bool(dones[-1]) if len(dones) else False, images, sources=sources,
                                  q_values=q_values)
            episodes.append((record, episode, timestamps))
    return episodes


def import_hdf5(store: EpisodeStore, path: str | Path, kind: str | None = None) -> list[str]:
    """Add the file's episodes to `store` under fresh ids (kind kept unless `kind` overrides it)."""
    added = []
    for record, episode, timestamps in read_hdf5(path):
        record.kind = kind or record.kind
        record.episode_id = store.next_episode_id(record.kind)
        thumbnail = episode.images[-1] if episode.images is not None else None
        store.save(record, episode, timestamps, thumbnail=thumbnail)
        added.append(record.episode_id)
    return added


def _plain(value):
    """h5py attributes come back as numpy scalars / bytes: make them plain Python for the dataclass."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
