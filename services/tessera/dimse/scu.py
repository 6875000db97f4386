"""The gateway as an SCU, for the admin API (like Orthanc's ``/modalities``): C-ECHO,
C-FIND on a node, C-MOVE from a node into Tessera, C-STORE from Tessera to a node.

Every call is blocking (the API runs it in a thread) and opens one association with the
node, called at its registered host and port (TLS when the node says so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from tessera.dimse import metrics, tcp
from tessera.dimse.archive import Refused, Unavailable
from tessera.dimse.context import Gateway
from tessera.dimse.filesend import send_files
from tessera.dimse.nodes import DicomNode
from tessera.dimse.retrieve import (
    Ref,
    accepted_pairs,
    choose,
    client_tls,
    proposed_contexts,
    remove_file,
    to_send,
)
from tessera.dimse.sop import (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    VERIFICATION,
)
from tessera.shared.auth import Principal
from tessera.shared.errors import BadRequest

FIND_MODELS = {
    "study": STUDY_ROOT_FIND,
    "patient": PATIENT_ROOT_FIND,
}
MOVE_MODELS = {
    "study": STUDY_ROOT_MOVE,
    "patient": PATIENT_ROOT_MOVE,
}
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
Progress = Callable[[int, int, int, int], None]  # total, completed, warning, failed


class NodeUnreachable(Exception):
    """The node did not accept an association (or is not callable)."""


def identifier(level: str, keys: Any) -> Dataset:
    """A Q/R identifier from ``{"Keyword or tag": "value"}`` (an empty value: a return key)."""
    if level not in LEVELS:
        raise BadRequest(f"level: one of {', '.join(LEVELS)}")
    if not isinstance(keys, dict):
        raise BadRequest("keys: an object of DICOM keywords (or tags) and values")
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for name, value in keys.items():
        tag = tag_for_keyword(name) if not _is_tag(name) else int(name, 16)
        if tag is None:
            raise BadRequest(f"{name}: not a DICOM keyword or tag")
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"{name}: a string value (empty: a return key)")
        try:
            vr = str(dictionary_VR(tag)).split(" or ")[0]
        except KeyError:
            raise BadRequest(f"{name}: not in the DICOM dictionary") from None
        ds.add_new(tag, vr, value or None)
    return ds


def _is_tag(name: str) -> bool:
    return len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name)


@contextmanager
def associate(
    gateway: Gateway, node: DicomNode, contexts: list[PresentationContext]
) -> Iterator[Association]:
    if not node.callable:
        raise NodeUnreachable(f"{node.ae_title} has no host and port to be called at")
    ae = AE(ae_title=gateway.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = gateway.settings.dimse_timeout
    ae.connection_timeout = 10
    tls = (client_tls(gateway), node.host) if node.tls else None
    assoc = ae.associate(
        node.host,
        node.port or 104,
        contexts,
        ae_title=node.ae_title,
        max_pdu=0,
        tls_args=tls,
        evt_handlers=[tcp.HANDLER],
    )
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer"
        raise NodeUnreachable(f"{node.ae_title} at {node.host}:{node.port}: association {why}")
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def echo(gateway: Gateway, node: DicomNode) -> int:
    with associate(gateway, node, [build_context(VERIFICATION)]) as assoc:
        status = assoc.send_c_echo()
        return int(status.Status) if "Status" in status else 0xC000


def find(gateway: Gateway, node: DicomNode, query: Dataset, model: str) -> list[dict[str, Any]]:
    """The matches' identifiers as DICOM JSON; :class:`Refused` with the final status."""
    sop_class = FIND_MODELS.get(model)
    if sop_class is None:
        raise BadRequest("model: study or patient")
    out: list[dict[str, Any]] = []
    with associate(gateway, node, [build_context(sop_class)]) as assoc:
        for status, answer in assoc.send_c_find(query, sop_class):
            code = int(status.Status) if "Status" in status else 0xC000
            if code in (0xFF00, 0xFF01) and answer is not None:
                out.append(answer.to_json_dict())
            elif code != 0x0000:
                comment = str(status.get("ErrorComment", ""))
                raise Refused(502, f"C-FIND answered 0x{code:04X} {comment}".strip())
    return out


def move(
    gateway: Gateway, node: DicomNode, query: Dataset, model: str, progress: Progress
) -> tuple[int, int, int, int]:
    """C-MOVE from ``node`` to Tessera's own AE title; the final counts."""
    sop_class = MOVE_MODELS.get(model)
    if sop_class is None:
        raise BadRequest("model: study or patient")
    counts = (0, 0, 0, 0)
    with associate(gateway, node, [build_context(sop_class)]) as assoc:
        for status, _ in assoc.send_c_move(query, gateway.ae_title, sop_class):
            if "Status" not in status:
                raise Unavailable("the C-MOVE ended without a status")
            code = int(status.Status)
            completed = int(status.get("NumberOfCompletedSuboperations") or 0)
            warning = int(status.get("NumberOfWarningSuboperations") or 0)
            failed = int(status.get("NumberOfFailedSuboperations") or 0)
            remaining = int(status.get("NumberOfRemainingSuboperations") or 0)
            counts = (completed + warning + failed + remaining, completed, warning, failed)
            progress(*counts)
            if code not in (0xFF00, 0xFF01, 0x0000, 0xB000):
                comment = str(status.get("ErrorComment", ""))
                raise Refused(502, f"C-MOVE answered 0x{code:04X} {comment}".strip())
    return counts


def store(
    gateway: Gateway,
    node: DicomNode,
    refs: list[Ref],
    progress: Progress,
    start: int = 0,
) -> tuple[int, int, int, int]:
    """C-STORE ``refs[start:]`` from the archive to ``node``, read as the node may see
    (its labels); the counts, those before ``start`` taken as done."""
    principal = node.principal_read
    total, completed, warning, failed = len(refs), start, 0, 0
    with associate(gateway, node, proposed_contexts(refs[start:])) as assoc:
        send_files(assoc)
        pairs = accepted_pairs(assoc.accepted_contexts, scu=False)
        for ref in refs[start:]:
            outcome = _store_one(gateway, assoc, ref, principal, pairs)
            if outcome == "success":
                completed += 1
            elif outcome == "warning":
                warning += 1
            else:
                failed += 1
            progress(total, completed, warning, failed)
    return total, completed, warning, failed


def _store_one(
    gateway: Gateway, assoc: Association, ref: Ref, principal: Principal, pairs: set[Any]
) -> str:
    """The status class of one C-STORE (:func:`~tessera.dimse.metrics.status_class`)."""
    how = choose(ref, pairs)
    if how is None:
        return "failure"
    try:
        path = gateway.archive.fetch(ref.study, ref.series, ref.instance, principal, how[0])
    except (Unavailable, Refused):
        return "failure"
    try:
        status = assoc.send_c_store(to_send(path, ref, as_file=how[1]))
        return metrics.status_class(int(status.Status)) if "Status" in status else "failure"
    except Exception:
        return "failure"
    finally:
        remove_file(path)
