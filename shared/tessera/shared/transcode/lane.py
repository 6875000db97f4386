"""The render lane: a first rendering of an uncompressed image without Celery (issue 12).

A Celery round trip (publish, the prefork parent handing the task to a child, the result
stored and published back, the caller's result consumer) cost a first ``/rendered``
about as much as the rendering itself. For the images whose pixels need no decoder
(:data:`NATIVE` transfer syntaxes: numpy and Pillow only, nothing that can crash a
process on hostile data) retrieve pushes a :class:`LaneJob` on the shard's lane list and
waits on its own reply list; threads of each transcode worker (``tessera.transcode.lane``)
pop jobs, render through the same code and storage cache as the Celery task, and push a
:class:`LaneAnswer`. Two Redis round trips in all. A rendering made for the job comes
back in the answer itself, and the worker writes it to storage after answering (with its
fsync, under the cache lock): retrieve serves the bytes it got, not a read of storage.

The lane is used only while a worker keeps :func:`lane_alive_key` (renewed every
``HEARTBEAT``, lasting ``ALIVE_TTL``): the push and that check are one step
(:data:`PUSH_IF_ALIVE`), so without a lane the request goes the Celery way, as do
compressed images and every conversion. Settings ``transcode_lane`` (on) turns it off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tessera.shared.messages import UnknownMessageVersion
from tessera.shared.transcode.contract import RenderRequest

LANE_VERSION = 2  # 2: an answer may carry the rendering

# Implicit VR Little Endian, Explicit VR Little Endian, Explicit VR Big Endian (retired)
NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})

REPLY_TTL = 60  # seconds an answer waits for a caller that may have given up

# KEYS[1] the lane's alive key, KEYS[2] the lane; ARGV[1] the job: 1 if pushed
PUSH_IF_ALIVE = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "redis.call('LPUSH', KEYS[2], ARGV[1]) return 1 end return 0"
)

# what a worker answers instead of a key, and what retrieve makes of it
NOT_ACCEPTABLE = "not-acceptable"  # 406
BAD_REQUEST = "bad-request"  # 400 (a frame number out of range)
MISSING = "missing"  # the stored object is not in storage: 500
UNAVAILABLE = "unavailable"  # Redis or storage away for the worker: 503, try again
FAILED = "failed"  # anything else: 500


def lane_key(shard: str) -> str:
    return f"tessera:{shard}:transcode:lane"


def lane_alive_key(shard: str) -> str:
    return f"tessera:{shard}:transcode:lane:alive"


def lane_reply_key(shard: str, job_id: str) -> str:
    return f"tessera:{shard}:transcode:lane:reply:{job_id}"


@dataclass(frozen=True)
class LaneJob:
    reply_to: str
    request: RenderRequest

    def dumps(self) -> str:
        return json.dumps(
            {"v": LANE_VERSION, "reply_to": self.reply_to, "request": self.request.to_json()}
        )

    @classmethod
    def loads(cls, raw: bytes | str) -> LaneJob:
        doc = json.loads(raw)
        _version(doc, "lane job")
        return cls(str(doc["reply_to"]), RenderRequest.from_json(doc["request"]))


@dataclass(frozen=True)
class LaneAnswer:
    """The storage key of the rendering, or why there is none (``error``, ``reason``).

    ``body``: the rendering itself, when the worker made it for this job; it is written to
    storage after the answer, so whoever gets it serves these bytes. On the wire: the JSON
    header, a newline (JSON text has none of its own), then the body's bytes as they are.
    """

    key: str = ""
    error: str = ""
    reason: str = ""
    body: bytes | None = None

    def dumps(self) -> bytes:
        head = {
            "v": LANE_VERSION,
            "key": self.key,
            "error": self.error,
            "reason": self.reason,
            "body": self.body is not None,
        }
        return json.dumps(head).encode() + b"\n" + (self.body or b"")

    @classmethod
    def loads(cls, raw: bytes | str) -> LaneAnswer:
        head, _, body = (raw.encode() if isinstance(raw, str) else raw).partition(b"\n")
        doc = json.loads(head)
        _version(doc, "lane answer")
        return cls(
            str(doc.get("key", "")),
            str(doc.get("error", "")),
            str(doc.get("reason", "")),
            body if doc.get("body") else None,
        )


def _version(doc: Mapping[str, Any], what: str) -> None:
    if doc.get("v") != LANE_VERSION:
        raise UnknownMessageVersion(f"{what} version {doc.get('v')!r}")
