"""Queue contracts: every message that crosses Redis, as versioned frozen dataclasses.

Services import this module, never each other. A message is JSON on the wire with a
``v`` field; a consumer refuses a version it does not know rather than guessing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

INDEX_JOB_VERSION = 1
INDEX_REPLY_VERSION = 1


class UnknownMessageVersion(ValueError):
    pass


@dataclass(frozen=True)
class IndexInstance:
    """One stored object to index: where it is and what it says."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size: int
    sha256: str
    metadata: dict[str, Any]  # DICOM JSON of the dataset, BulkDataURIs root-relative
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None
    # ParsedInstance.pixel_data_json(): {"offset", "length", "vr", "encapsulated", "tag",
    # "deflated"} and the frame index (tessera.shared.frameindex)
    pixel_data: dict[str, Any] | None = None
    # study labels to add (from the storer's credential or the request's label parameter)
    labels: tuple[str, ...] = ()
    # the storer's own labels: if given, an existing study without one of them is refused
    # (outcome "refused"); None: the storer may store into any study
    visible: tuple[str, ...] | None = None
    # stored by a rebalance moving its study here: the change feed says "move-in"
    moved: bool = False


@dataclass(frozen=True)
class IndexJob:
    """Ask the shard's index to commit these instances, then answer on ``reply_to``."""

    job_id: str
    reply_to: str
    instances: tuple[IndexInstance, ...]
    duplicate_policy: str = "reject"
    # the writer pinned each instance's object (tessera.shared.storage.guard): the worker
    # unpins them in the step that answers, one round trip less for the writer
    unpin: bool = False
    v: int = INDEX_JOB_VERSION

    def dumps(self) -> bytes:
        # what asdict() gives, without its deep copy of every instance's metadata
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["instances"] = [{f.name: getattr(i, f.name) for f in fields(i)} for i in self.instances]
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> IndexJob:
        d = json.loads(raw)
        if d.get("v") != INDEX_JOB_VERSION:
            raise UnknownMessageVersion(f"index job version {d.get('v')!r}")
        d["instances"] = tuple(_instance(i) for i in d["instances"])
        return cls(**d)


def _instance(doc: dict[str, Any]) -> IndexInstance:
    """An :class:`IndexInstance` from its JSON (lists made tuples again)."""
    doc["labels"] = tuple(doc.get("labels") or ())
    if doc.get("visible") is not None:
        doc["visible"] = tuple(doc["visible"])
    return IndexInstance(**doc)


Outcome = Literal["stored", "unchanged", "replaced", "conflict", "refused", "failed"]


@dataclass(frozen=True)
class InstanceOutcome:
    """What the index did with one instance.

    stored: new row; unchanged: the same object was already indexed (idempotent
    re-send); replaced: a different object under the same SOPInstanceUID replaced the
    old one (duplicate_policy=replace); conflict: it was kept out (duplicate_policy=
    reject, or the UIDs clash with another study/series); refused: the storer's labels do
    not reach the study (PS3.7 C.4.2 0x0124 Refused: Not Authorized); failed: see
    ``reason``.
    """

    sop_instance_uid: str
    outcome: Outcome
    reason: str = ""
    previous_storage_key: str | None = None


@dataclass(frozen=True)
class IndexReply:
    job_id: str
    outcomes: tuple[InstanceOutcome, ...] = field(default_factory=tuple)
    v: int = INDEX_REPLY_VERSION

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> IndexReply:
        d = json.loads(raw)
        if d.get("v") != INDEX_REPLY_VERSION:
            raise UnknownMessageVersion(f"index reply version {d.get('v')!r}")
        d["outcomes"] = tuple(InstanceOutcome(**o) for o in d["outcomes"])
        return cls(**d)
