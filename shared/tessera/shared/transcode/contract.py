"""Task names, queue and request types of the transcode workers (versioned, frozen).

A request crosses Redis as Celery's one JSON argument, ``request.to_json()``: a dict with
a ``v`` field. A worker refuses a version it does not know
(:class:`~tessera.shared.messages.UnknownMessageVersion`) rather than guessing. Every
task answers the storage key of its result (:mod:`tessera.shared.storage` key layout).

The queue is per shard (:func:`queue_name`), so the shards of a cluster can share one
Redis database: a shard's retrieve sends only to its own workers, which read only its
objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from tessera.shared.messages import UnknownMessageVersion
from tessera.shared.rendering import RenderParams

TRANSCODE_TASK = "tessera.transcode.to_transfer_syntax"
FRAME_TASK = "tessera.transcode.frame_to_transfer_syntax"
RENDER_TASK = "tessera.transcode.render"

REQUEST_VERSION = 1

# A header (everything before Pixel Data) larger than this is refused: no sane object has
# one, and a worker would otherwise allocate whatever a bad location names.
MAX_HEADER_BYTES = 64 * 1024 * 1024


def queue_name(shard: str) -> str:
    """The Celery queue of shard ``shard``'s transcode workers."""
    return f"tessera.{shard}.transcode"


# Every running worker of a shard renews this key every HEARTBEAT seconds, for
# ALIVE_TTL seconds: a sender that finds it missing answers 503 at once instead of
# waiting out its timeout for a task nobody will take (issue 15).
HEARTBEAT = 2.0
ALIVE_TTL = 6


def alive_key(shard: str) -> str:
    """The Redis key that says shard ``shard`` has a transcode worker consuming."""
    return f"tessera:{shard}:transcode:alive"


def lock_name(shard: str, key: str) -> str:
    """The Redis lock under which a worker makes derived object ``key`` of ``shard``."""
    return f"tessera:{shard}:transcode:{key}"


def _version(doc: Mapping[str, Any], what: str) -> None:
    if doc.get("v") != REQUEST_VERSION:
        raise UnknownMessageVersion(f"{what} version {doc.get('v')!r}")


@dataclass(frozen=True)
class TranscodeRequest:
    """A whole instance converted to ``target_ts``."""

    storage_key: str
    target_ts: str
    task: ClassVar[str] = TRANSCODE_TASK

    def to_json(self) -> dict[str, Any]:
        return {"v": REQUEST_VERSION, "storage_key": self.storage_key, "target_ts": self.target_ts}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> TranscodeRequest:
        _version(doc, "transcode request")
        return cls(str(doc["storage_key"]), str(doc["target_ts"]))

    def describe(self) -> str:
        return f"transcode to {self.target_ts}"


@dataclass(frozen=True)
class FrameLocation:
    """Where one encapsulated frame is in the stored object (byte offsets), so a worker
    reads only the attributes and that frame (``tessera.transcode.frame_source``).

    ``header``: the Pixel Data value's offset (its first item tag), so ``[0, header)`` is
    everything before it; ``offset``/``length``/``items`` as in
    :class:`tessera.shared.frameindex.FrameRange`.
    """

    header: int
    offset: int
    length: int
    items: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "header": self.header,
            "offset": self.offset,
            "length": self.length,
            "items": self.items,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> FrameLocation | None:
        """The location a task was given, or None when absent or not four sane numbers
        (the task then reads the whole object)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            values = [doc[k] for k in ("header", "offset", "length", "items")]
        except KeyError:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        header, offset, length, items = values
        if not 0 < header <= MAX_HEADER_BYTES or offset < header or length == 0:
            return None
        return cls(header, offset, length, items)


@dataclass(frozen=True)
class FrameRequest:
    """Frame ``frame_number`` (1-based) in ``target_ts``; ``location`` if retrieve knows
    where the frame is (else the worker reads the whole object)."""

    storage_key: str
    frame_number: int
    target_ts: str
    location: FrameLocation | None = None
    task: ClassVar[str] = FRAME_TASK

    def to_json(self) -> dict[str, Any]:
        return {
            "v": REQUEST_VERSION,
            "storage_key": self.storage_key,
            "frame_number": self.frame_number,
            "target_ts": self.target_ts,
            "location": self.location.to_json() if self.location else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> FrameRequest:
        _version(doc, "frame request")
        return cls(
            str(doc["storage_key"]),
            int(doc["frame_number"]),
            str(doc["target_ts"]),
            FrameLocation.from_json(doc.get("location")),
        )

    def describe(self) -> str:
        return f"converting frame {self.frame_number} to {self.target_ts}"


@dataclass(frozen=True)
class RenderRequest:
    """Frame ``frame_number`` rendered with ``params`` (PS3.18 8.3.5)."""

    storage_key: str
    frame_number: int
    params: RenderParams
    task: ClassVar[str] = RENDER_TASK

    def to_json(self) -> dict[str, Any]:
        return {
            "v": REQUEST_VERSION,
            "storage_key": self.storage_key,
            "frame_number": self.frame_number,
            "params": self.params.to_dict(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RenderRequest:
        """Raises what :meth:`RenderParams.from_dict` raises for bad parameters."""
        _version(doc, "render request")
        return cls(
            str(doc["storage_key"]),
            int(doc["frame_number"]),
            RenderParams.from_dict(doc["params"]),
        )

    def describe(self) -> str:
        return f"rendering frame {self.frame_number} as {self.params.media_type}"


Request = TranscodeRequest | FrameRequest | RenderRequest
