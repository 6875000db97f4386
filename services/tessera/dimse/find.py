"""C-FIND SCP (PS3.4 C.4.1): the Patient Root and Study Root Query/Retrieve information
models, at PATIENT, STUDY, SERIES and IMAGE level, answered by QIDO-RS.

The identifier becomes a QIDO-RS query, so C-FIND and QIDO-RS match the same way (one
implementation: PS3.4 C.2.2.2 single value, wildcard, range, UID list, sequence
matching, case-insensitive PN): a key with a value is a matching key, an empty one a
return key (``includefield``). The answer to each match holds exactly the keys asked
for (C.4.1.1.3.2), empty where the archive has no value, plus Query/Retrieve Level and
Retrieve AE Title. A key this archive cannot match on (a private one, or one below the
query level) is answered empty and the matches carry status FF01 (C.4.1.1.4: optional
keys not supported). PATIENT level is the studies grouped by Patient ID and Issuer.

Specific Character Set, both ways: pydicom decodes the request in the character set it
names; the answer keeps that character set when every value fits in it, else it is
UTF-8 (ISO_IR 192).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from typing import Any

from pydicom.charset import convert_encodings, encode_string
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pynetdicom.events import Event

from tessera.dimse import metrics
from tessera.dimse.archive import Refused, Unavailable
from tessera.dimse.context import NOT_AUTHORIZED, Gateway
from tessera.dimse.sop import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from tessera.shared.errors import QueryError
from tessera.shared.qido.attributes import Level, resolve_attribute

log = logging.getLogger(__name__)

PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # optional keys not supported
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

LEVELS = {
    str(PATIENT_ROOT_FIND): ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    str(STUDY_ROOT_FIND): ("STUDY", "SERIES", "IMAGE"),
}
# where each level is searched, and the level of the index its attributes are kept at
RESOURCE = {"PATIENT": "studies", "STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
INDEX_LEVEL = {
    "PATIENT": Level.STUDY,
    "STUDY": Level.STUDY,
    "SERIES": Level.SERIES,
    "IMAGE": Level.INSTANCE,
}
QUERY_RETRIEVE_LEVEL = Tag(0x0008, 0x0052)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
RETRIEVE_AE_TITLE = Tag(0x0008, 0x0054)
PATIENT_ID, ISSUER = "00100020", "00100021"
# never matching keys: answered by the gateway or computed
_NOT_KEYS = {QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE, Tag(0x00080056)}
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
             "UC", "UI", "UR", "UT"}  # fmt: skip


class Query:
    """The QIDO-RS form of a C-FIND identifier."""

    def __init__(self, identifier: Dataset, level: str) -> None:
        self.level = level
        self.params: list[tuple[str, str]] = []
        self.includes: set[str] = set()
        self.unsupported = False
        index_level = INDEX_LEVEL[level]
        for elem in identifier:
            if elem.tag.group in (0x0000, 0x0002) or elem.tag in _NOT_KEYS:
                continue
            name = f"{elem.tag:08X}"
            try:
                if elem.tag.is_private:
                    raise QueryError("private")
                attribute = resolve_attribute(name)
            except QueryError:
                self.unsupported |= not _empty(elem)
                continue
            if attribute.level.value > index_level.value:
                self.unsupported |= not _empty(elem)  # below the query level: no match
                continue
            self.includes.add(name)
            if elem.VR == "SQ":
                self._sequence(name, elem)
            elif not _empty(elem):
                self.params.append((name, _text(elem)))
        if level == "PATIENT":
            self.includes |= {PATIENT_ID, ISSUER}

    def _sequence(self, name: str, elem: DataElement) -> None:
        """Sequence matching (C.2.2.2.6): the keys of its one item, each on the item."""
        if not elem.value:
            return
        for inner in elem.value[0]:
            if inner.VR == "SQ" or inner.tag.is_private or _empty(inner):
                self.unsupported |= inner.VR == "SQ" and bool(inner.value)
                continue
            self.params.append((f"{name}.{inner.tag:08X}", _text(inner)))

    def qido(self) -> list[tuple[str, str]]:
        fields = ",".join(sorted(self.includes))
        return [*self.params, *([("includefield", fields)] if fields else [])]


def _empty(elem: DataElement) -> bool:
    value = elem.value
    if value is None or value == "" or value == b"":
        return True
    if isinstance(value, MultiValue | list) and not [v for v in value if str(v) != ""]:
        return True
    return elem.VR != "SQ" and str(value).strip() in ("", "*")


def _text(elem: DataElement) -> str:
    value = elem.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value)


def handle_find(gateway: Gateway, event: Event) -> Iterator[tuple[int, Dataset | None]]:
    status = PENDING
    for status, answer in _find(gateway, event):
        if status in (PENDING, PENDING_WARNING):
            if event.is_cancelled:
                status = CANCELLED
                yield status, None
                break
        yield status, answer
    else:
        status = 0x0000 if status in (PENDING, PENDING_WARNING) else status
    metrics.OPERATIONS.labels("C-FIND", metrics.status_class(status)).inc()


def _failure(status: int, comment: str) -> tuple[int, Dataset]:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return status, answer


def _find(gateway: Gateway, event: Event) -> Iterator[tuple[int, Dataset | None]]:
    node = gateway.node_of(event)
    if node is None or not node.may("find"):
        yield _failure(NOT_AUTHORIZED, "this AE may not query")
        return
    try:
        identifier = event.identifier
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        requested_charset = identifier.get("SpecificCharacterSet")
        query = Query(identifier, level) if level in RESOURCE else None
    except Exception as e:  # an identifier pydicom cannot decode
        log.info("C-FIND from %s: identifier not decodable: %s", node.ae_title, e)
        yield _failure(UNABLE_TO_PROCESS, "the identifier cannot be decoded")
        return
    model = str(event.request.AffectedSOPClassUID)
    if query is None or level not in LEVELS.get(model, ()):
        yield _failure(IDENTIFIER_DOES_NOT_MATCH, f"Query/Retrieve Level {level!r} invalid")
        return
    pending = PENDING_WARNING if query.unsupported else PENDING
    seen: set[tuple[str, str]] = set()
    try:
        for doc in gateway.archive.search(RESOURCE[level], query.qido(), node.principal):
            if level == "PATIENT":
                key = (_first(doc, PATIENT_ID), _first(doc, ISSUER))
                if key in seen:
                    continue
                seen.add(key)
            yield pending, answer(doc, identifier, level, gateway.ae_title, requested_charset)
    except Refused as e:
        log.info("C-FIND from %s refused: %s", node.ae_title, e.reason)
        yield _failure(IDENTIFIER_DOES_NOT_MATCH, e.reason)
    except Unavailable as e:
        log.warning("C-FIND from %s: %s", node.ae_title, e)
        yield _failure(OUT_OF_RESOURCES, "the archive is unavailable; retry")


def _first(doc: dict[str, Any], tag: str) -> str:
    values = (doc.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def answer(
    doc: dict[str, Any], identifier: Dataset, level: str, ae_title: str, charset: Any
) -> Dataset:
    """The response identifier: the keys asked for, from one QIDO-RS result."""
    found = Dataset.from_json(doc)
    out = Dataset()
    for elem in identifier:
        tag = elem.tag
        if tag.group in (0x0000, 0x0002) or tag == SPECIFIC_CHARACTER_SET:
            continue
        if tag == RETRIEVE_AE_TITLE:
            out.RetrieveAETitle = ae_title
        elif tag == QUERY_RETRIEVE_LEVEL:
            continue
        elif tag in found and elem.VR == "SQ" and elem.value and len(elem.value[0]):
            out.add_new(tag, "SQ", [_only(item, elem.value[0]) for item in found[tag].value])
        elif tag in found:
            out.add(found[tag])
        else:
            out.add(DataElement(tag, elem.VR, [] if elem.VR == "SQ" else None))
    out.QueryRetrieveLevel = level
    chosen = _charset(out, charset)
    if chosen:
        out.SpecificCharacterSet = chosen
    return out


def _only(item: Dataset, keys: Dataset) -> Dataset:
    """A sequence item with only the keys the request's item asked for."""
    out = Dataset()
    for key in keys:
        if key.tag in item:
            out.add(item[key.tag])
        else:
            out.add(DataElement(key.tag, key.VR, [] if key.VR == "SQ" else None))
    return out


def _texts(ds: Dataset) -> Iterator[str]:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _texts(item)
        elif elem.VR in _TEXT_VRS and elem.value is not None:
            values = elem.value if isinstance(elem.value, MultiValue | list) else [elem.value]
            yield from (str(v) for v in values)


def _charset(out: Dataset, requested: Any) -> Any:
    """The request's character set if every value of ``out`` fits in it, else UTF-8."""
    texts = [t for t in _texts(out) if not t.isascii()]
    if not texts:
        return requested
    if requested:
        try:
            encodings = convert_encodings(requested)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                for text in texts:
                    encode_string(text, encodings)
            return requested
        except (UnicodeError, LookupError, ValueError, Warning):
            pass
    return "ISO_IR 192"
