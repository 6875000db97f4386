"""Sending what :mod:`.files` found: STOW-RS requests (PS3.18 10.5) of up to ``batch``
instances (and ``batch_bytes``), ``parallel`` of them at once, each instance's outcome
read from the response's ReferencedSOPSequence / FailedSOPSequence by its SOP Instance
UID (read here from the file; a file whose UID cannot be read goes alone in its request,
so that the answer is its own).

Retried, with back-off: a request the archive could not take (503, honouring
``Retry-After``; a connection refused or lost), and an instance it answered 0xA700 (Out
of Resources: send it again) for, up to ``attempts`` times. Not retried: an instance
refused for what it is (0xA900, 0xC000, 0x0111...), and a request refused as a whole
(401, 403, 413...): both are failures with the archive's reason.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tessera.importer.files import Source
from tessera.shared.multipart import multipart_content_type, new_boundary
from tessera.shared.stow import DICOM
from tessera.shared.uids import read_uids

A700 = 0xA700
RETRYABLE_STATUS = {502, 503, 504}


@dataclass(frozen=True)
class Outcome:
    source: Source
    sop: str | None
    stored: bool
    reason: int | None = None  # Failure Reason (PS3.18 Table I.2-2); None: see http
    message: str = ""
    http: int | None = None  # the HTTP status of a request refused as a whole


@dataclass
class Item:
    source: Source
    data: bytes
    sop: str | None
    attempts: int = 0


def sop_instance_uid(data: bytes) -> str | None:
    """The file's SOP Instance UID, None if it cannot be read here."""
    return read_uids(io.BytesIO(data))[2]


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    """A multipart/related body of PS3.10 files (PS3.18 8.7.5), and its Content-Type."""
    boundary = new_boundary()
    head = f"--{boundary}\r\nContent-Type: {DICOM}\r\n\r\n".encode()
    body = b"".join(head + data + b"\r\n" for data in parts) + f"--{boundary}--\r\n".encode()
    return body, multipart_content_type(DICOM, boundary)


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list((item.get(tag) or {}).get("Value") or [])


def _distinct(batch: list[Item]) -> list[list[Item]]:
    """``batch`` as consecutive batches in which no SOPInstanceUID occurs twice: first
    every first occurrence (and the files whose UID could not be read here), then every
    second, and so on."""
    rounds: list[list[Item]] = []
    seen: dict[str, int] = {}
    for item in batch:
        n = 0
        if item.sop is not None:
            n = seen.get(item.sop, 0)
            seen[item.sop] = n + 1
        while len(rounds) <= n:
            rounds.append([])
        rounds[n].append(item)
    return rounds


@dataclass
class Sender:
    """Sends batches on one ``httpx.Client``; ``done`` gets every final outcome."""

    client: httpx.Client
    done: Callable[[Outcome], None]
    attempts: int = 5
    stop: threading.Event = field(default_factory=threading.Event)

    def send(self, batch: list[Item]) -> None:
        """Send ``batch`` until each instance has a final outcome (or ``stop`` is set).

        Files that share a SOPInstanceUID go in separate requests, in the order they were
        found: a STOW-RS answer names each instance by its SOPInstanceUID alone (PS3.18
        10.5.3, the Store Instances Response Module), so two parts with the same one
        could not be told apart (the second's refusal was reported as the first's
        success)."""
        for requests in _distinct(batch):
            self._send(requests)

    def _send(self, batch: list[Item]) -> None:
        pending = batch
        delay = 1.0
        while pending and not self.stop.is_set():
            for item in pending:
                item.attempts += 1
            retry, wait = self._once(pending)
            pending = []
            for item in retry:
                if item.attempts >= self.attempts:
                    self.done(
                        Outcome(
                            item.source, item.sop, False, A700, "still refused: out of resources"
                        )
                    )
                else:
                    pending.append(item)
            if pending:
                self.stop.wait(max(wait, delay))
                delay = min(delay * 2, 30.0)

    def _once(self, batch: list[Item]) -> tuple[list[Item], float]:
        """One request: the items to send again, and how long to wait first."""
        body, content_type = multipart([item.data for item in batch])
        try:
            r = self.client.post("/studies", content=body, headers={"Content-Type": content_type})
        except httpx.TransportError:
            return batch, 1.0
        if r.status_code in RETRYABLE_STATUS:
            try:
                wait = float(r.headers.get("Retry-After", "1"))
            except ValueError:
                wait = 1.0
            return batch, wait
        doc = None
        if r.status_code in (200, 202, 409) and "json" in r.headers.get("content-type", ""):
            try:
                doc = r.json()
            except ValueError:
                doc = None
        if not isinstance(doc, dict):
            why = r.text.strip().splitlines()[0][:200] if r.text.strip() else r.reason_phrase
            message = f"HTTP {r.status_code}: {why}"
            for item in batch:
                self.done(Outcome(item.source, item.sop, False, None, message, r.status_code))
            return [], 0.0
        stored = {uid for i in _values(doc, "00081199") for uid in _values(i, "00081155")}
        failed: dict[str | None, tuple[int, str]] = {}
        for i in _values(doc, "00081198"):
            uid = (_values(i, "00081155") or [None])[0]
            reason = (_values(i, "00081197") or [0])[0]
            comment = (_values(i, "00000902") or [""])[0]
            failed[uid] = (int(reason), str(comment))
        if len(batch) == 1 and batch[0].sop is None:  # sent alone: the answer is its own
            batch[0].sop = next(iter(stored), None) or next(iter(failed), None)
        retry = []
        for item in batch:
            if item.sop is not None and item.sop in stored:
                self.done(Outcome(item.source, item.sop, True))
                continue
            reason, comment = failed.get(item.sop) or failed.get(None) or (0, "no result for it")
            if reason == A700:
                retry.append(item)
            else:
                self.done(Outcome(item.source, item.sop, False, reason, comment))
        return retry, 1.0
