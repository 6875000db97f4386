"""What a peer job does: pull from a peer, push to it, or mirror it (README "Peers").

* **pull** (``{"studies": [...]}``, ``{"series": [{"study", "series"}]}``,
  ``{"instances": [{"study", "series", "instance"}]}`` or ``{"query": {QIDO-RS keys}}``):
  the instances are listed at the peer (QIDO-RS), those Tessera already holds are
  skipped, each other one is retrieved as stored (WADO-RS, ``transfer-syntax=*``) and
  stored here (STOW-RS through the router, so placement, labels and audit apply);
* **push** (``studies`` or ``query``, the same forms, listed here): each instance the
  peer does not hold is retrieved here as stored and sent there (STOW-RS);
* **mirror**: a standing pull. A ``tessera`` peer is followed through its change feed
  (creates and replacements pulled, deletes deleted here; the cursor is kept with the
  job, so a restart goes on where it stopped; ``{"from": "now"}`` starts at the feed's
  end); any other peer is searched every ``interval`` seconds for studies of
  ``StudyDate`` since ``since`` whose instance count differs here, which are pulled.

Transfer Syntaxes are kept as stored. Each instance is verified after the transfer
(``"verify": false`` skips it): it is read back from where it went and must be the same
bytes, or failing that the same SOP Instance UID and Pixel Data (a peer may rewrite
File Meta Information). Instances that fail are counted, the first reasons kept; the
job goes on with the next one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from tessera.dimse.archive import Archive, Refused
from tessera.dimse.peers.remote import PeerRefused, Remote
from tessera.shared.auth import Permission, Principal
from tessera.shared.errors import BadRequest

log = logging.getLogger(__name__)

MAX_REASONS = 20
Ref = tuple[str, str, str]  # study, series, SOP instance


def principal_of(peer: str) -> Principal:
    """Whom the router sees when a job reads, stores or deletes here."""
    perms = frozenset({Permission.READ, Permission.WRITE, Permission.DELETE})
    return Principal(f"peer:{peer}", perms, None, method="peer")


def check_request(kind: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The job request, checked now (400) rather than in the job."""
    forms = {"studies", "series", "instances", "query"}
    options = {"verify"} | ({"from", "since", "interval"} if kind == "mirror" else set())
    unknown = set(doc) - forms - options
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    given = forms & set(doc)
    if kind == "mirror":
        if given:
            raise BadRequest("a mirror follows the whole peer: no studies, series or query")
        interval = doc.get("interval", 30)
        if not isinstance(interval, int | float) or not 1 <= interval <= 86400:
            raise BadRequest("interval: seconds, 1 to 86400")
        return {**doc, "interval": interval}
    if len(given) != 1:
        raise BadRequest("name what to transfer: one of studies, series, instances, query")
    (form,) = given
    value = doc[form]
    if form == "query":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise BadRequest("query: an object of QIDO-RS keys and string values")
    elif not isinstance(value, list) or not value:
        raise BadRequest(f"{form}: a non-empty list")
    elif form == "studies" and not all(isinstance(v, str) for v in value):
        raise BadRequest("studies: a list of StudyInstanceUIDs")
    elif form != "studies" and not all(isinstance(v, dict) for v in value):
        raise BadRequest(f"{form}: a list of objects with study, series(, instance)")
    if kind == "push" and form in ("series", "instances"):
        raise BadRequest("push: studies or query")
    return doc


@dataclass
class Progress:
    """What the job reports; saved with it as it goes."""

    total: int = 0
    completed: int = 0
    skipped: int = 0  # already there
    failed: int = 0
    deleted: int = 0
    bytes: int = 0
    reasons: list[str] = field(default_factory=list)
    cursor: str = ""
    polled: str = ""  # the last mirror round (ISO time)
    started: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-3)
        done = self.completed + self.skipped + self.failed
        rate = self.completed / elapsed
        left = max(self.total - done, 0)
        return {
            "total": self.total,
            "completed": self.completed,
            "skipped": self.skipped,
            "failed": self.failed,
            "deleted": self.deleted,
            "bytes": self.bytes,
            "rate": round(rate, 2),
            "eta": round(left / rate, 1) if rate > 0 and left else 0.0,
            "reasons": self.reasons,
            "cursor": self.cursor,
            "polled": self.polled,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Progress:
        p = cls()
        for name in ("total", "completed", "skipped", "failed", "deleted", "bytes"):
            setattr(p, name, int(doc.get(name, 0)))
        p.reasons = list(doc.get("reasons", []))[:MAX_REASONS]
        p.cursor = str(doc.get("cursor", ""))
        return p

    def fail(self, ref: Ref, reason: str) -> None:
        self.failed += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(f"{ref[2]}: {reason}"[:300])


def same_instance(a: Path, b: Path) -> bool:
    """The same bytes, or the same SOP Instance and Pixel Data (File Meta rewritten)."""
    if _sha256(a) == _sha256(b):
        return True
    try:
        da, db = pydicom.dcmread(a), pydicom.dcmread(b)
    except Exception:  # not readable: not the same
        return False
    return bool(
        da.get("SOPInstanceUID") == db.get("SOPInstanceUID")
        and da.get("PixelData") == db.get("PixelData")
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class Transfer:
    """One job's work; ``save`` writes the progress, ``stop`` says it was cancelled."""

    def __init__(
        self,
        archive: Archive,
        remote: Remote,
        request: dict[str, Any],
        progress: Progress,
        save: Callable[[Progress], None],
        stop: Callable[[], bool],
    ) -> None:
        self.archive = archive
        self.remote = remote
        self.request = request
        self.progress = progress
        self.save = save
        self.stop = stop
        self.principal = principal_of(remote.peer.name)
        self.verify = bool(request.get("verify", True))
        self._saved = 0.0

    def _tick(self, force: bool = False) -> None:
        if force or time.monotonic() - self._saved > 1.0:
            self.save(self.progress)
            self._saved = time.monotonic()

    # -- what is where -------------------------------------------------------------------
    def local_instances(self, study: str) -> set[str]:
        rows = self.archive.search(
            f"studies/{study}/instances", [("includefield", "00080018")], self.principal
        )
        return {_value(r, "00080018") for r in rows}

    def local_refs(self) -> Iterator[Ref]:
        """The instances a push sends: of the studies named, or found by the query."""
        studies = self.request.get("studies")
        if studies is None:
            rows = self.archive.search(
                "studies", list(self.request["query"].items()), self.principal
            )
            studies = [_value(r, "0020000D") for r in rows]
        for study in studies:
            rows = self.archive.search(
                f"studies/{study}/instances",
                [("includefield", "0020000E,00080018")],
                self.principal,
            )
            for r in rows:
                yield study, _value(r, "0020000E"), _value(r, "00080018")

    def remote_refs(self) -> Iterator[Ref]:
        """The instances a pull takes: named, or of the studies named or found."""
        req = self.request
        if "instances" in req:
            for i in req["instances"]:
                yield str(i["study"]), str(i["series"]), str(i["instance"])
            return
        if "series" in req:
            for s in req["series"]:
                for series, sop, _ in self.remote.instances(str(s["study"])):
                    if series == s["series"]:
                        yield str(s["study"]), series, sop
            return
        studies = req.get("studies")
        if studies is None:
            rows = self.remote.search("studies", dict(req["query"]))
            studies = [_value(r, "0020000D") for r in rows]
        for study in studies:
            for series, sop, _ in self.remote.instances(study):
                yield study, series, sop

    # -- pull ----------------------------------------------------------------------------
    def pull(self) -> None:
        refs = list(self.remote_refs())
        self.progress.total = len(refs)
        here: dict[str, set[str]] = {}
        for ref in refs:
            if self.stop():
                return
            if ref[0] not in here:
                here[ref[0]] = self.local_instances(ref[0])
            if ref[2] in here[ref[0]]:
                self.progress.skipped += 1
            else:
                self.pull_one(ref)
            self._tick()
        self._tick(force=True)

    def pull_one(self, ref: Ref) -> None:
        got = self.remote.fetch(*ref)
        try:
            size = got.stat().st_size
            result = self.archive.store(got, self.principal)
            if result.status not in (0x0000, 0xB000, 0xB006, 0xB007):
                self.progress.fail(ref, f"not stored here: {result.status:#06x} {result.comment}")
                return
            if self.verify and not self._verified_here(ref, got):
                self.progress.fail(ref, "stored here, but not the same instance read back")
                return
            self.progress.completed += 1
            self.progress.bytes += size
        finally:
            got.unlink(missing_ok=True)

    def _verified_here(self, ref: Ref, sent: Path) -> bool:
        back = self.archive.fetch(*ref, self.principal)
        try:
            return same_instance(sent, back)
        finally:
            back.unlink(missing_ok=True)

    # -- push ----------------------------------------------------------------------------
    def push(self) -> None:
        refs = list(self.local_refs())
        self.progress.total = len(refs)
        there: dict[str, set[str]] = {}
        for ref in refs:
            if self.stop():
                return
            if ref[0] not in there:
                there[ref[0]] = {sop for _, sop, _ in self.remote.instances(ref[0])}
            if ref[2] in there[ref[0]]:
                self.progress.skipped += 1
            else:
                self.push_one(ref)
            self._tick()
        self._tick(force=True)

    def push_one(self, ref: Ref) -> None:
        local = self.archive.fetch(*ref, self.principal)
        try:
            size = local.stat().st_size
            answer = self.remote.store([local])
            failed = (answer.get("00081198") or {}).get("Value") or []
            stored = {
                _value(i, "00081155") for i in (answer.get("00081199") or {}).get("Value") or []
            }
            if failed or ref[2] not in stored:
                reason = failed[0].get("00081197", {}).get("Value", ["?"])[0] if failed else "?"
                self.progress.fail(ref, f"the peer did not store it (FailureReason {reason})")
                return
            if self.verify:
                back = self.remote.fetch(*ref)
                try:
                    if not same_instance(local, back):
                        self.progress.fail(ref, "stored there, but not the same instance read back")
                        return
                finally:
                    back.unlink(missing_ok=True)
            self.progress.completed += 1
            self.progress.bytes += size
        finally:
            local.unlink(missing_ok=True)

    # -- mirror --------------------------------------------------------------------------
    def mirror(self) -> None:
        """Until cancelled: follow the peer (see the module docstring)."""
        if self.remote.peer.kind == "tessera":
            self._follow_feed()
        else:
            self._poll_by_date()

    def _follow_feed(self) -> None:
        if not self.progress.cursor and self.request.get("from") == "now":
            r = self.remote._ok(self.remote.request("GET", "/changefeed/latest"))
            self.progress.cursor = str(r.json()["cursor"])
            self._tick(force=True)
        while not self.stop():
            page = self.remote.changes(self.progress.cursor, wait=10)
            for event in page.get("events", []):
                self.apply(event)
            self.progress.cursor = str(page.get("cursor", self.progress.cursor))
            self.progress.polled = _now()
            self._tick(force=True)

    def apply(self, event: dict[str, Any]) -> None:
        ref = (str(event["study"]), str(event["series"]), str(event["instance"]))
        self.progress.total += 1
        try:
            if event.get("action") == "delete":
                self.archive.delete(ref, self.principal)
                self.progress.deleted += 1
            elif ref[2] in self.local_instances(ref[0]):
                if event.get("action") in ("create", "move"):  # a move: another shard there
                    self.progress.skipped += 1
                else:  # replaced there: the new object replaces ours
                    self.archive.delete(ref, self.principal)
                    self.pull_one(ref)
            else:
                self.pull_one(ref)
        except PeerRefused as e:
            if e.status == 404:  # gone at the peer since: its delete event follows
                self.progress.skipped += 1
            else:
                self.progress.fail(ref, str(e))
        except Refused as e:
            self.progress.fail(ref, e.reason)

    def _poll_by_date(self) -> None:
        since = str(self.request.get("since", ""))
        while not self.stop():
            query = {"includefield": "00201208"}
            if since:
                query["StudyDate"] = f"{since}-"
            for row in self.remote.search("studies", query):
                if self.stop():
                    return
                study = _value(row, "0020000D")
                count = int(_value(row, "00201208") or 0)
                here = self.local_instances(study)  # one search here per study
                if count and len(here) < count:
                    for series, sop, _ in self.remote.instances(study):
                        if sop not in here:
                            self.progress.total += 1
                            self.pull_one((study, series, sop))
                            self._tick()
            self.progress.polled = _now()
            self._tick(force=True)
            deadline = time.monotonic() + float(self.request.get("interval", 30))
            while time.monotonic() < deadline and not self.stop():
                time.sleep(0.5)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _value(row: dict[str, Any], tag: str) -> str:
    value = (row.get(tag) or {}).get("Value") or [""]
    return str(value[0]) if value[0] is not None else ""
