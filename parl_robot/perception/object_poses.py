"""The `objects/poses` message, and the detector's memory of where it last saw the object.

The message is a JSON object {name: [x, y, z], ...} (robot base frame, metres) plus one reserved
key, `_meta`: {"stamp": capture stamp (s) of the image the poses come from, "occluded": {name:
bool}, "age_s": {name: s since the object was last seen}}. Readers that only look up their
object's name keep working. An occluded object (the gripper over it) keeps its last seen position,
flagged, so the actor does not stall while it grasps; before the first sighting there is no pose.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

META_KEY = "_meta"


@dataclass
class ObjectPoses:
    positions: dict[str, list[float]]  # name -> [x, y, z]
    occluded: dict[str, bool]  # name -> the position is the last seen one, not seen in this image
    age_s: dict[str, float]  # name -> seconds between the last sighting and `stamp`
    stamp: float | None  # capture stamp (s) of the image (sim: the publish time)


def encode_object_poses(poses: ObjectPoses) -> str:
    return json.dumps({
        **poses.positions,
        META_KEY: {"stamp": poses.stamp, "occluded": poses.occluded, "age_s": poses.age_s},
    })


def decode_object_poses(text: str) -> ObjectPoses | None:
    """The message's poses (entries that are not 3 finite numbers are left out), or None if it is not
    a JSON object. Messages without `_meta` read as all seen now."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    meta = data.pop(META_KEY, None)
    meta = meta if isinstance(meta, dict) else {}
    positions = {name: [float(v) for v in value] for name, value in data.items() if _is_position(value)}
    occluded_in, age_in = meta.get("occluded"), meta.get("age_s")
    occluded_in = occluded_in if isinstance(occluded_in, dict) else {}
    age_in = age_in if isinstance(age_in, dict) else {}
    stamp = meta.get("stamp")
    return ObjectPoses(
        positions,
        {name: bool(occluded_in.get(name, False)) for name in positions},
        {name: float(age_in[name]) if _is_number(age_in.get(name)) else 0.0 for name in positions},
        float(stamp) if _is_number(stamp) else None,
    )


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_position(value) -> bool:
    return isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)


class LastSeenPosition:
    """Object permanence for one detected object: the newest sighting, reused while it is occluded.
    Ages come from the images' capture stamps, so they do not depend on when images arrive."""

    def __init__(self, name: str):
        self.name = name
        self.position: list[float] | None = None
        self.seen_stamp: float | None = None

    def update(self, detected: np.ndarray | None, stamp: float) -> ObjectPoses | None:
        """The poses to publish for an image captured at `stamp` in which the object was `detected`
        at that (3,) position, or not (None); None while the object has never been seen."""
        if detected is not None:
            self.position, self.seen_stamp = np.asarray(detected, float).round(4).tolist(), stamp
        if self.position is None:
            return None
        age = max(0.0, stamp - self.seen_stamp)
        return ObjectPoses({self.name: self.position}, {self.name: detected is None}, {self.name: round(age, 3)}, stamp)
