"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): instances read from the archive by
WADO-RS, sent by C-STORE sub-operations, to a registered move destination on an
association of their own (C-MOVE) or back on the requester's association (C-GET).

Which instances: a QIDO-RS search of ``/instances`` by the unique keys the identifier
gives at its level (Patient ID; Study, Series, SOP Instance UIDs and their lists). Each
is sent in the Transfer Syntax it is stored in when the receiver accepted a presentation
context for it, else decoded by the archive into Explicit VR Little Endian (WADO-RS
``transfer-syntax``), which pynetdicom writes as Implicit VR if that is what was
accepted. For C-MOVE the gateway proposes, per SOP Class, one context per stored
Transfer Syntax and one with the two uncompressed ones.

pynetdicom counts the sub-operations (remaining, completed, warning, failed; the
Failed SOP Instance UID List) from the receiver's C-STORE answers. An instance the
archive cannot give, or the receiver has no context for, is a failed sub-operation.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from tessera.dimse import metrics, tcp
from tessera.dimse.archive import Refused, Unavailable
from tessera.dimse.context import NOT_AUTHORIZED, Gateway
from tessera.dimse.filesend import FileBacked, send_files
from tessera.dimse.nodes import DicomNode
from tessera.shared.auth import Principal
from tessera.shared.transcode.syntaxes import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)

log = logging.getLogger(__name__)

PENDING = 0xFF00
PREFETCH = 2  # instances read from the archive ahead of the one being sent
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES_MATCHES = 0xA701  # C.4.2.1.5: unable to calculate number of matches
MOVE_DESTINATION_UNKNOWN = 0xA801
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)

# the unique keys a retrieve identifier may give, per level and above (C.4.2.2.1)
KEYS = {
    "PATIENT": ("00100020",),
    "STUDY": ("00100020", "0020000D"),
    "SERIES": ("00100020", "0020000D", "0020000E"),
    "IMAGE": ("00100020", "0020000D", "0020000E", "00080018"),
}
REQUIRED = {"PATIENT": "00100020", "STUDY": "0020000D", "SERIES": "0020000E", "IMAGE": "00080018"}
FIELDS = "0020000D,0020000E,00080016,00080018,00083002"


@dataclass(frozen=True)
class Ref:
    study: str
    series: str
    instance: str
    sop_class: str
    transfer_syntax: str


def _value(doc: dict[str, Any], tag: str) -> str:
    values = (doc.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def matches(gateway: Gateway, identifier: Dataset, principal: Principal) -> list[Ref]:
    """The instances a C-MOVE / C-GET identifier names (``Refused``: it names none
    properly; ``Unavailable``: the archive did not answer)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in KEYS:
        raise Refused(400, f"Query/Retrieve Level {level!r} invalid")
    params: list[tuple[str, str]] = []
    for tag in KEYS[level]:
        elem = identifier.get(int(tag, 16))
        value = "" if elem is None or elem.value is None else elem.value
        text = "\\".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if text.strip() and ("*" in text or "?" in text):
            raise Refused(400, "a unique key has a wildcard")
        if text.strip():
            params.append((tag, text.strip()))
        elif tag == REQUIRED[level]:
            raise Refused(400, f"the identifier has no {tag} for level {level}")
    params.append(("includefield", FIELDS))
    refs = [
        Ref(
            _value(doc, "0020000D"),
            _value(doc, "0020000E"),
            _value(doc, "00080018"),
            _value(doc, "00080016"),
            _value(doc, "00083002") or EXPLICIT_VR_LITTLE_ENDIAN,
        )
        for doc in gateway.archive.search("instances", params, principal)
    ]
    return sorted(refs, key=lambda r: (r.study, r.series, r.instance))


def _stub(ref: Ref) -> Dataset:
    """A data set pynetdicom cannot send (no File Meta): a failed sub-operation that
    names its SOP Instance UID in the Failed SOP Instance UID List."""
    ds = Dataset()
    ds.SOPClassUID = ref.sop_class
    ds.SOPInstanceUID = ref.instance
    return ds


def choose(ref: Ref, accepted: set[tuple[str, str]]) -> tuple[str, bool] | None:
    """How to send ``ref`` to a receiver that accepted ``accepted`` (SOP Class, Transfer
    Syntax) pairs: the Transfer Syntax to fetch it in, and whether the file goes as it
    is (:mod:`.filesend`) or is decoded for pynetdicom to write in Implicit VR (which
    the archive does not produce); None if the receiver takes it in no syntax."""
    if (ref.sop_class, ref.transfer_syntax) in accepted:
        return "*", True
    if (ref.sop_class, EXPLICIT_VR_LITTLE_ENDIAN) in accepted:
        return EXPLICIT_VR_LITTLE_ENDIAN, True
    if (ref.sop_class, IMPLICIT_VR_LITTLE_ENDIAN) in accepted:
        return EXPLICIT_VR_LITTLE_ENDIAN, False
    return None


def _sends(
    gateway: Gateway, refs: list[Ref], principal: Principal, accepted: Any
) -> Iterator[tuple[int, Dataset]]:
    """(Pending, data set) per instance, read from the archive as the receiver takes it,
    the next ``PREFETCH`` read while one is sent. ``accepted`` is called for the
    receiver's accepted pairs when the first is sent (after the association)."""
    pool = ThreadPoolExecutor(PREFETCH, thread_name_prefix="dimse-fetch")
    queue: deque[tuple[Ref, tuple[str, bool] | None, Future[Path] | None]] = deque()
    todo = iter(refs)
    pairs: set[tuple[str, str]] | None = None
    try:
        while True:
            if pairs is None:
                pairs = accepted()
            while len(queue) <= PREFETCH and (ref := next(todo, None)) is not None:
                how = choose(ref, pairs)
                future = None
                if how is not None:
                    future = pool.submit(gateway.archive.fetch, ref.study, ref.series,
                                         ref.instance, principal, how[0])  # fmt: skip
                queue.append((ref, how, future))
            if not queue:
                return
            ref, how, future = queue.popleft()
            if how is None or future is None:
                log.info("no accepted presentation context for %s in %s", ref.sop_class,
                         ref.transfer_syntax)  # fmt: skip
                yield PENDING, _stub(ref)
                continue
            try:
                path = future.result()
            except (Unavailable, Refused) as e:
                log.warning("instance not read from the archive: %s", e)
                yield PENDING, _stub(ref)
                continue
            try:
                metrics.BYTES.labels("sent").inc(path.stat().st_size)
                yield PENDING, to_send(path, ref, as_file=how[1])
            finally:
                remove_file(path)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for _, _, future in queue:  # read ahead, never sent (cancelled, or a failure)
            if future is not None and future.done() and future.exception() is None:
                remove_file(future.result())


def to_send(path: Path, ref: Ref, as_file: bool) -> Dataset:
    """What to give ``send_c_store`` for the instance fetched to ``path``: the file as it
    is (:class:`FileBacked`), or decoded, for pynetdicom to write in Implicit VR; a
    file pydicom cannot read is a stub (a failed sub-operation)."""
    if as_file:
        return FileBacked(path, ref.sop_class, ref.instance)
    try:
        return dcmread(path)
    except Exception as e:
        log.error("instance %s not readable: %s", ref.instance, type(e).__name__)
        return _stub(ref)


def remove_file(path: Path) -> None:
    with suppress(OSError):
        path.unlink()


def _failure(status: int, comment: str) -> tuple[Dataset, Dataset]:
    """A final failure: the status with its Error Comment, and the (empty) Failed SOP
    Instance UID List pynetdicom puts in the identifier."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    identifier = Dataset()
    identifier.FailedSOPInstanceUIDList = []
    return answer, identifier


class Refusal(Exception):
    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


def _resolve(gateway: Gateway, event: Event, operation: str) -> tuple[DicomNode, list[Ref]]:
    """The calling node and the instances its identifier names, or :class:`Refusal`."""
    node = gateway.node_of(event)
    if node is None or not node.may(operation):
        raise Refusal(NOT_AUTHORIZED, f"this AE may not {operation}")
    try:
        return node, matches(gateway, event.identifier, node.principal)
    except Refused as e:
        raise Refusal(IDENTIFIER_DOES_NOT_MATCH, e.reason) from None
    except Unavailable:
        raise Refusal(OUT_OF_RESOURCES_MATCHES, "the archive is unavailable; retry") from None
    except Exception as e:
        log.info("%s: identifier not decodable: %s", operation, type(e).__name__)
        raise Refusal(0xC000, "the identifier cannot be decoded") from None


def _send_all(
    gateway: Gateway, event: Event, service: str, node: DicomNode, refs: list[Ref], accepted: Any
) -> Iterator[Any]:
    for pending, ds in _sends(gateway, refs, node.principal, accepted):
        if event.is_cancelled:
            yield 0xFE00, None
            metrics.OPERATIONS.labels(service, "cancel").inc()
            return
        yield pending, ds
    metrics.OPERATIONS.labels(service, "success").inc()


# -- C-GET -------------------------------------------------------------------------------


def handle_get(gateway: Gateway, event: Event) -> Iterator[Any]:
    try:
        node, refs = _resolve(gateway, event, "get")
    except Refusal as e:
        yield 1  # pynetdicom answers a count of 0 with Success: one failed sub-operation
        yield _failure(e.status, e.comment)
        metrics.OPERATIONS.labels("C-GET", "failure").inc()
        return
    yield len(refs)

    send_files(event.assoc)

    def accepted() -> set[tuple[str, str]]:
        return accepted_pairs(event.assoc.accepted_contexts, scu=True)

    yield from _send_all(gateway, event, "C-GET", node, refs, accepted)


def accepted_pairs(contexts: list[PresentationContext], scu: bool) -> set[tuple[str, str]]:
    out = set()
    for cx in contexts:
        if scu and cx.as_scu is False:
            continue
        for ts in cx.transfer_syntax:
            out.add((str(cx.abstract_syntax), str(ts)))
    return out


# -- C-MOVE ------------------------------------------------------------------------------


def proposed_contexts(refs: list[Ref]) -> list[PresentationContext]:
    """Per SOP Class: a context per stored Transfer Syntax, and one uncompressed."""
    wanted: dict[str, set[str]] = {}
    for ref in refs:
        wanted.setdefault(ref.sop_class, set()).add(ref.transfer_syntax)
    contexts: list[PresentationContext] = []
    for sop_class in sorted(wanted):
        for ts in sorted(wanted[sop_class] - set(UNCOMPRESSED)):
            contexts.append(build_context(sop_class, [ts]))
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts; proposing %d", len(contexts),
                    MAX_CONTEXTS)  # fmt: skip
    return contexts[:MAX_CONTEXTS]


def handle_move(gateway: Gateway, event: Event) -> Iterator[Any]:
    destination = gateway.nodes.get(str(event.move_destination))
    if destination is None or not destination.callable:
        log.info("C-MOVE: destination %r unknown", str(event.move_destination).strip())
        yield None, None  # pynetdicom answers A801, Move Destination unknown
        metrics.OPERATIONS.labels("C-MOVE", "failure").inc()
        return
    try:
        node, refs = _resolve(gateway, event, "move")
        refusal = None
    except Refusal as e:
        refs, refusal = [], e
    established: list[Association] = []

    def on_established(ev: Event) -> None:
        send_files(ev.assoc)
        established.append(ev.assoc)

    kwargs: dict[str, Any] = {
        "contexts": proposed_contexts(refs) or [build_context("1.2.840.10008.1.1")],
        "evt_handlers": [(evt.EVT_ESTABLISHED, on_established), tcp.HANDLER],
        "max_pdu": 0,
    }
    if destination.tls:
        kwargs["tls_args"] = (client_tls(gateway), destination.host)
    yield destination.host, destination.port, kwargs
    if refusal is not None:
        yield 1
        yield _failure(refusal.status, refusal.comment)
        metrics.OPERATIONS.labels("C-MOVE", "failure").inc()
        return
    yield len(refs)

    def accepted() -> set[tuple[str, str]]:
        return accepted_pairs(established[0].accepted_contexts, scu=False) if established else set()

    yield from _send_all(gateway, event, "C-MOVE", node, refs, accepted)


def client_tls(gateway: Gateway) -> ssl.SSLContext:
    """TLS to a node marked ``tls`` (PS3.15 B.1): its certificate verified against
    ``dimse_tls_ca`` (else the system's), ours presented when we have one."""
    settings = gateway.settings
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.dimse_tls_ca or None
    )
    if settings.dimse_tls_cert and settings.dimse_tls_key:
        context.load_cert_chain(settings.dimse_tls_cert, settings.dimse_tls_key)
    return context
