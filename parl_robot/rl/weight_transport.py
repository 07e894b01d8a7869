"""Policy weights as versioned, checksummed chunks, and their reassembly (no ROS here).

The learner publishes the weights the robot host acts with (`acting:=robot`, docs/multi_host.md):
`encode_weights` serializes a tensor dict (`torch.save`) and cuts it into at most `max_chunks`
chunks, each with a `WeightsHeader` (the publishing run, version, SHA-256 of the whole payload,
size, index, count). A restarted learner is a new run: its versions count again from its own
start (a fresh store starts at 0), so the receiver orders versions within a run only.
`WeightsAssembler` takes chunks in any order, with duplicates and with interleaved versions, and
returns a version only when all its chunks are in and the checksum matches; a newer version drops
an older incomplete one, and an older version than the newest delivered is ignored. What it loads
is read with `torch.load(weights_only=True)`: tensors and plain containers, never code.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass

CHUNK_BYTES = 256 * 1024
MAX_CHUNKS = 64  # the topic's history depth: a late subscriber still gets one whole version


@dataclass(frozen=True)
class WeightsHeader:
    run: str
    version: int
    sha256: str
    total_bytes: int
    chunks: int
    index: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "WeightsHeader":
        """The header of a chunk; ValueError naming what is wrong with it."""
        try:
            fields = json.loads(text)
        except ValueError as err:
            raise ValueError(f"weights chunk header is not JSON: {err}") from None
        if not isinstance(fields, dict) or set(fields) != {"run", "version", "sha256", "total_bytes", "chunks", "index"}:
            raise ValueError(f"weights chunk header needs run, version, sha256, total_bytes, chunks, index; got {text[:200]!r}")
        header = cls(**fields)
        integers = (header.version, header.total_bytes, header.chunks, header.index)
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in integers):
            raise ValueError(f"weights chunk header fields must be integers: {text[:200]!r}")
        if header.chunks < 1 or not 0 <= header.index < header.chunks or header.total_bytes < 0 or header.version < 0:
            raise ValueError(f"weights chunk header out of range: {text[:200]!r}")
        if not isinstance(header.run, str) or not header.run:
            raise ValueError(f"weights chunk header run must be a non-empty string: {text[:200]!r}")
        if not isinstance(header.sha256, str) or len(header.sha256) != 64:
            raise ValueError(f"weights chunk header sha256 must be 64 hex digits: {text[:200]!r}")
        return header


def encode_weights(weights: dict, version: int, run: str, max_chunks: int = MAX_CHUNKS,
                   chunk_bytes: int = CHUNK_BYTES) -> list[tuple[WeightsHeader, bytes]]:
    """(header, payload) per chunk of `weights` (a dict of tensors, possibly nested), version `version` of `run`.
    Chunks grow beyond `chunk_bytes` when needed so that there are never more than `max_chunks`."""
    import torch  # here, so that the nodes that only name the QoS (camera, control) never load torch

    buffer = io.BytesIO()
    torch.save(weights, buffer)
    payload = buffer.getvalue()
    size = max(chunk_bytes, math.ceil(len(payload) / max_chunks))
    count = max(1, math.ceil(len(payload) / size))
    digest = hashlib.sha256(payload).hexdigest()
    return [(WeightsHeader(run, version, digest, len(payload), count, index), payload[index * size:(index + 1) * size])
            for index in range(count)]


class WeightsAssembler:
    """Collects chunks into whole, verified versions (see the module docstring)."""

    def __init__(self):
        self.run = ""
        self.delivered_version = -1
        self._version: int | None = None
        self._digest = ""
        self._parts: dict[int, bytes] = {}
        self.rejected: list[str] = []  # why versions were dropped (checksum, size, unreadable)

    def add(self, header: WeightsHeader, payload: bytes) -> tuple[int, dict] | None:
        """(version, weights) when this chunk completes a verified version newer than the last delivered."""
        if header.run != self.run:  # a (re)started learner: its versions start over
            self.run, self.delivered_version = header.run, -1
            self._version, self._digest, self._parts = None, "", {}
        if header.version <= self.delivered_version:
            return None
        if header.version != self._version or header.sha256 != self._digest:
            if self._version is not None and header.version < self._version:
                return None  # a straggler of an older version than the one being assembled
            self._version, self._digest, self._parts = header.version, header.sha256, {}
        self._parts[header.index] = bytes(payload)
        if len(self._parts) < header.chunks:
            return None
        data = b"".join(self._parts[index] for index in range(header.chunks))
        self._version, self._digest, self._parts = None, "", {}
        if len(data) != header.total_bytes or hashlib.sha256(data).hexdigest() != header.sha256:
            self.rejected.append(f"version {header.version}: {len(data)} bytes with SHA-256 "
                                 f"{hashlib.sha256(data).hexdigest()[:12]}, header says {header.total_bytes} bytes "
                                 f"with {header.sha256[:12]}")
            return None
        import torch

        try:
            weights = torch.load(io.BytesIO(data), weights_only=True)
        except Exception as err:  # noqa: BLE001  (any unreadable payload is rejected, never loaded)
            self.rejected.append(f"version {header.version}: unreadable ({type(err).__name__}: {err})")
            return None
        self.delivered_version = header.version
        return header.version, weights
