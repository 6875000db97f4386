"""DICOM JSON Model codec (PS3.18 Annex F.2) on top of pydicom.

:func:`dataset_to_json` follows :meth:`pydicom.dataset.Dataset.to_json_dict` value for
value, with these differences, each deliberate:

* **Bulk data** (PS3.18 F.2.6, 10.4.1.1.2). Values of VR OB, OD, OF, OL, OV, OW, UN (and the
  ambiguous ``OB or OW`` / ``US or OW`` / ``US or SS or OW`` once resolved to a binary VR, as
  pydicom does) longer than ``bulk_data_threshold`` *bytes* (pydicom measures the base64
  text instead) become ``{"vr": ..., "BulkDataURI": prefix + "/" + tag_path}``; shorter ones
  stay ``InlineBinary``. Values of the other VRs PS3.18 10.4.1.1.2 allows to be bulk data
  (DS, FL, FD, IS, LT, SL, SS, ST, SV, UC, UL, US, UT, UV) are replaced by a BulkDataURI only
  above ``large_value_threshold`` (1 MiB by default): pydicom never does so, but a
  multi-megabyte UT must not end up in every metadata response.
* **Never raises on a value.** Each element is encoded on its own; when pydicom cannot
  convert it (odd-length US, unknown VR, broken sequence...) the element is emitted as
  ``{"vr": "UN", "InlineBinary" | "BulkDataURI": ...}`` holding the bytes as stored (an IS
  or DS as the strings stored, see below), and its path is listed in
  :attr:`DicomJson.fallbacks`. Elements that cannot be represented at all (non-finite
  FL/FD values, which JSON numbers cannot carry; sequences nested deeper than
  :data:`MAX_SEQUENCE_DEPTH`; in-memory values without bytes to fall back to) are left
  out and listed in :attr:`DicomJson.discarded`, so that a STOW-RS caller can report
  Warning 0xB006 "Elements Discarded" (PS3.18 Table I.2-1).
* **Empty values** (PS3.18 F.2.5): an empty value inside a multi-valued element is
  ``null`` (pydicom writes ``""`` or fails); a sequence with no items has no ``"Value"``
  (pydicom writes ``[]``).
* **IS / DS** (PS3.18 Table F.2.3-1, CP-1861: Number or String): valid values are JSON
  numbers as in pydicom; a value that is not a finite number (``"1,5"``, ``"NaN"``,
  ``"1e999"``) or an IS that is not an integer (``"1.5"``, which pydicom truncates to 1) is
  kept as the JSON string of its stored text instead of raising or changing it.

Tag paths (bulk data URIs and the report lists) are ``/``-separated, upper-case 8-digit
hexadecimal tags with a decimal 0-based item index after each sequence tag::

    7FE00010                      top-level element
    00540016/0/00181072           (0018,1072) in item 0 of (0054,0016)
    00409096/2/00409212/0/00409224

:func:`resolve_tag_path` turns such a path back into the element of a dataset.
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_deferred_data_element
from pydicom.hooks import raw_element_vr
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import ISfloat, PersonName

from tessera.shared import rawvalues
from tessera.shared.errors import NotFound

__all__ = [
    "MAX_SEQUENCE_DEPTH",
    "CapturedWarnings",
    "DicomJson",
    "dataset_to_json",
    "format_tag_path",
    "json_dumps",
    "json_loads",
    "parse_tag_path",
    "quiet_pydicom",
    "resolve_tag_path",
]

#: Items nested deeper than this (counting sequences from the top-level data set) are
#: discarded: real objects stay far below (SR content trees are a few tens deep) and it
#: keeps the encoder well clear of Python's recursion limit.
MAX_SEQUENCE_DEPTH = 64

DEFAULT_LARGE_VALUE_THRESHOLD = 1024 * 1024

UNDEFINED_LENGTH = 0xFFFFFFFF

# PS3.18 F.2.7: InlineBinary is for these VRs; pydicom also treats the ambiguous VRs that
# include OW / OB as binary.
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_AMBIGUOUS_BINARY_VRS = frozenset({"OB or OW", "US or OW", "US or SS or OW"})
# PS3.18 10.4.1.1.2: the other VRs whose value may be replaced by a Bulkdata URI.
_LARGE_VALUE_VRS = frozenset(
    {"DS", "FL", "FD", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "US", "UT", "UV"}
)
_INT_VRS = frozenset({"SL", "SS", "SV", "UL", "US", "UV", "US or SS"})
_FLOAT_VRS = frozenset({"FL", "FD"})

# the common elements' values are read from their bytes (:mod:`.rawvalues`), not through
# pydicom; off only in the test that checks both ways agree
_FROM_RAW_VALUES = True

_TAG_RE = re.compile(r"[0-9A-F]{8}")
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,8}")


@dataclass(frozen=True)
class DicomJson:
    """Result of :func:`dataset_to_json`.

    ``json`` is the DICOM JSON object (PS3.18 F.2). ``discarded`` lists the tag paths of
    elements left out (caller may warn 0xB006), ``fallbacks`` those pydicom could not
    decode and that are emitted in a fallback form (IS / DS as strings, others as ``UN``
    bytes), and ``warnings`` the messages pydicom issued.
    """

    json: dict[str, Any]
    discarded: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- pydicom guard

_guard_lock = threading.RLock()


class CapturedWarnings:
    """Live view of the warnings :func:`quiet_pydicom` has caught so far."""

    def __init__(self, records: list[warnings.WarningMessage]) -> None:
        self._records = records

    @property
    def messages(self) -> list[str]:
        """Texts of the warnings, first occurrence of each, in order."""
        return list(dict.fromkeys(str(record.message) for record in self._records))


@contextmanager
def quiet_pydicom() -> Iterator[CapturedWarnings]:
    """Run pydicom with value validation off and every warning captured, not shown.

    Reading validation is set to ``IGNORE``: we store objects as received, so checking
    every value against its VR is not our job and would only produce noise (and, under
    ``filterwarnings=error``, exceptions). Other pydicom warnings (undecodable text, an
    unknown character set, a sequence cut short) are recorded in the yielded
    :class:`CapturedWarnings`. Both :func:`warnings.catch_warnings` and
    ``pydicom.config.settings`` are process-global, so the block holds a re-entrant lock;
    pydicom work is CPU-bound under the GIL anyway.
    """
    with _guard_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        saved = config.settings.reading_validation_mode
        config.settings.reading_validation_mode = config.IGNORE
        try:
            yield CapturedWarnings(caught if caught is not None else [])
        finally:
            config.settings.reading_validation_mode = saved


# --------------------------------------------------------------------------- tag paths


def format_tag_path(tag: int, parents: Sequence[tuple[int, int]] = ()) -> str:
    """``(tag, [(sequence_tag, item_index), ...])`` -> ``"SSSSSSSS/i/TTTTTTTT"``."""
    steps = [f"{seq_tag:08X}/{index}" for seq_tag, index in parents]
    steps.append(f"{tag:08X}")
    return "/".join(steps)


def parse_tag_path(path: str) -> tuple[int, list[tuple[int, int]]]:
    """Inverse of :func:`format_tag_path`; raises :class:`ValueError` if malformed."""
    parts = path.split("/")
    if len(parts) % 2 != 1 or len(parts) > 2 * MAX_SEQUENCE_DEPTH + 1:
        raise ValueError(f"malformed tag path {path!r}")
    for i, part in enumerate(parts):
        pattern = _TAG_RE if i % 2 == 0 else _INDEX_RE
        if not pattern.fullmatch(part):
            raise ValueError(f"malformed tag path {path!r}")
    parents = [(int(parts[i], 16), int(parts[i + 1])) for i in range(0, len(parts) - 1, 2)]
    return int(parts[-1], 16), parents


def resolve_tag_path(ds: Dataset, path: str) -> DataElement:
    """Return the element of ``ds`` a tag path (as in a BulkDataURI) points to.

    Raises :class:`~tessera.shared.errors.NotFound` if the path is malformed or names no
    element. An element pydicom cannot decode (the ones :func:`dataset_to_json` emitted
    as ``UN``) comes back as a ``UN`` element holding its bytes as stored.
    """
    try:
        tag, parents = parse_tag_path(path)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    with quiet_pydicom():
        current = ds
        try:
            for seq_tag, index in parents:
                seq = current[seq_tag]
                if seq.VR != "SQ" or index >= len(seq.value):
                    raise KeyError(seq_tag)
                current = seq.value[index]
            if tag not in current:
                raise KeyError(tag)
        except (KeyError, IndexError, TypeError):
            raise NotFound(f"no element at {path}") from None
        except Exception as exc:  # a sequence on the way cannot be decoded
            raise NotFound(f"cannot decode the sequence on the way to {path}: {exc}") from None
        raw = current.get_item(tag, keep_deferred=True)
        try:
            return current[tag]
        except Exception as exc:
            if not isinstance(raw, RawDataElement):
                raise NotFound(f"cannot decode the element at {path}: {exc}") from None
            fallback = DataElement(raw.tag, "OB", _raw_bytes(current, raw))
            fallback.VR = "UN"  # DataElement(...) would swap UN for the dictionary VR
            return fallback


def _raw_bytes(ds: Dataset, raw: RawDataElement) -> bytes:
    if raw.value is not None or raw.length == 0:
        return raw.value or b""
    source = ds.buffer if getattr(ds, "buffer", None) is not None else ds.filename
    return read_deferred_data_element(ds.fileobj_type, source, None, raw).value or b""


# --------------------------------------------------------------------------- encoder


class _Discard(Exception):
    """The element cannot be represented in DICOM JSON; leave it out."""


@dataclass
class _Context:
    prefix: str
    threshold: int
    large_threshold: int | None
    discarded: list[str]
    fallbacks: list[str]


def dataset_to_json(
    ds: Dataset,
    bulk_uri_prefix: str,
    bulk_data_threshold: int = 1024,
    *,
    large_value_threshold: int | None = DEFAULT_LARGE_VALUE_THRESHOLD,
) -> DicomJson:
    """Encode ``ds`` in the DICOM JSON Model (PS3.18 F.2); never raises on a value.

    ``bulk_uri_prefix`` is joined with ``"/"`` and the tag path of each bulk data element.
    ``large_value_threshold=None`` keeps every non-binary value inline (pure pydicom
    behaviour). Elements are written in ascending tag order. File Meta Information is not
    part of a data set (PS3.10 7.1): pass the data set, not ``ds.file_meta``.
    """
    ctx = _Context(
        prefix=bulk_uri_prefix.rstrip("/"),
        threshold=bulk_data_threshold,
        large_threshold=large_value_threshold,
        discarded=[],
        fallbacks=[],
    )
    with quiet_pydicom() as captured:
        doc = _encode_dataset(ds, (), ctx)
    return DicomJson(doc, ctx.discarded, ctx.fallbacks, captured.messages)


def _encode_dataset(ds: Dataset, parents: tuple[tuple[int, int], ...], ctx: _Context) -> dict:
    out: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        path = format_tag_path(tag, parents)
        try:
            encoded = _encode_element(ds, BaseTag(tag), parents, path, ctx)
        except _Discard:
            ctx.discarded.append(path)
            continue
        out[f"{tag:08X}"] = encoded
    return out


def _encode_element(
    ds: Dataset,
    tag: BaseTag,
    parents: tuple[tuple[int, int], ...],
    path: str,
    ctx: _Context,
) -> dict[str, Any]:
    raw = ds.get_item(tag, keep_deferred=True)
    stored_length: int | None = None
    if isinstance(raw, RawDataElement):
        if raw.length != UNDEFINED_LENGTH:
            stored_length = raw.length
        if raw.value is None and raw.length:
            # deferred read (dcmread(defer_size=...)): answer bulk data without reading it
            # (an undefined length counts as longer than any threshold)
            vr = _deferred_vr(ds, raw)
            if vr is not None and _is_bulk(vr, raw.length, ctx):
                return {"vr": vr, "BulkDataURI": f"{ctx.prefix}/{path}"}
        elif raw.VR in rawvalues.VRS and raw.value is not None and _FROM_RAW_VALUES:
            vr = raw.VR
            values = rawvalues.json_values(vr, raw.value, raw.is_little_endian)
            if values is not None:
                if not values:
                    return {"vr": vr}
                if stored_length is not None and _is_bulk(vr, stored_length, ctx):
                    return {"vr": vr, "BulkDataURI": f"{ctx.prefix}/{path}"}
                return {"vr": vr, "Value": values}
    try:
        elem = ds[tag]
        return _encode_value(elem, parents, path, stored_length, ctx)
    except _Discard:
        raise
    except Exception:  # RecursionError included: pydicom cannot decode this element
        if not isinstance(raw, RawDataElement):
            raise _Discard from None
    # Fallback: IS / DS as the strings stored (CP-1861 allows JSON strings for them),
    # anything else as its bytes as stored, as UN (PS3.18 F.2.7 allows InlineBinary for UN)
    ctx.fallbacks.append(path)
    if raw.value is None and raw.length not in (0, UNDEFINED_LENGTH):
        return {"vr": "UN", "BulkDataURI": f"{ctx.prefix}/{path}"}
    vr = _deferred_vr(ds, raw)
    if vr in ("IS", "DS") and raw.value:
        return {"vr": vr, "Value": _number_strings(raw.value, vr)}
    return _binary("UN", raw.value or b"", path, ctx)


def _number_strings(value: bytes, vr: str) -> list[int | float | str | None]:
    """Each value of an IS / DS pydicom could not convert: a number if it is one."""
    out: list[int | float | str | None] = []
    for text in value.decode("ascii", errors="replace").strip(" \0").split("\\"):
        text = text.strip(" \0")
        out.append(_integer_string(text) if vr == "IS" else _decimal_string(text))
    return out


def _deferred_vr(ds: Dataset, raw: RawDataElement) -> str | None:
    """VR of a not-yet-read element, or None if only its value can tell."""
    data: dict[str, Any] = {}
    try:
        raw_element_vr(raw, data, ds=ds)
    except Exception:
        return "UN"
    vr = str(data["VR"])
    if vr in _AMBIGUOUS_BINARY_VRS:
        # a value long enough to be deferred is OW in the only encoding (implicit VR)
        # that leaves it ambiguous: PS3.5 A.1
        return "OW"
    if " or " in vr:
        return None
    return vr


def _is_bulk(vr: str, length: int, ctx: _Context) -> bool:
    if vr in _BINARY_VRS:
        return length > ctx.threshold
    if vr in _LARGE_VALUE_VRS and ctx.large_threshold is not None:
        return length > ctx.large_threshold
    return False


def _binary(vr: str, value: bytes, path: str, ctx: _Context) -> dict[str, Any]:
    if not value:
        return {"vr": vr}
    if len(value) > ctx.threshold:
        return {"vr": vr, "BulkDataURI": f"{ctx.prefix}/{path}"}
    return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}


def _values(elem: DataElement) -> list[Any]:
    if elem.VM == 0:
        return []
    value = elem.value
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _encode_value(
    elem: DataElement,
    parents: tuple[tuple[int, int], ...],
    path: str,
    stored_length: int | None,
    ctx: _Context,
) -> dict[str, Any]:
    vr = str(elem.VR)
    if vr in _BINARY_VRS or vr in _AMBIGUOUS_BINARY_VRS:
        value = elem.value
        if value is None:
            return {"vr": vr}
        if not isinstance(value, bytes | bytearray):
            raise TypeError(f"binary value of type {type(value).__name__}")
        return _binary(vr, bytes(value), path, ctx)

    if vr == "SQ":
        if not elem.value:
            return {"vr": vr}
        if len(parents) >= MAX_SEQUENCE_DEPTH:
            raise _Discard
        items = [
            _encode_dataset(item, (*parents, (int(elem.tag), index)), ctx)
            for index, item in enumerate(elem.value)
        ]
        return {"vr": vr, "Value": items}

    values = _values(elem)
    if not values:
        return {"vr": vr}
    if vr in _LARGE_VALUE_VRS and ctx.large_threshold is not None:
        size = stored_length if stored_length is not None else _approx_size(values)
        if size > ctx.large_threshold:
            return {"vr": vr, "BulkDataURI": f"{ctx.prefix}/{path}"}

    encoded: list[Any]
    if vr == "PN":
        encoded = [_person_name(v) for v in values]
    elif vr == "AT":
        encoded = [f"{int(Tag(v)):08X}" for v in values]
    elif vr == "IS":
        encoded = [_integer_string(v) for v in values]
    elif vr == "DS":
        encoded = [_decimal_string(v) for v in values]
    elif vr in _INT_VRS:
        encoded = [None if v is None or v == "" else int(v) for v in values]
    elif vr in _FLOAT_VRS:
        encoded = [None if v is None or v == "" else _finite(float(v)) for v in values]
    else:
        encoded = [_text(v) for v in values]
    return {"vr": vr, "Value": encoded}


def _approx_size(values: list[Any]) -> int:
    """Encoded size of an in-memory value, near enough for the bulk decision."""
    return sum(len(v) + 1 if isinstance(v, str) else 8 for v in values)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise _Discard  # JSON numbers cannot carry NaN / infinity
    return value


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    original = getattr(value, "original_string", None)
    return original if isinstance(original, str) else str(value)


def _person_name(value: Any) -> dict[str, str] | None:
    if value is None or value == "":
        return None
    pn = value if isinstance(value, PersonName) else PersonName(str(value))
    components = pn.components
    out = {"Alphabetic": components[0]}
    if len(components) > 1:
        out["Ideographic"] = components[1]
    if len(components) > 2:
        out["Phonetic"] = components[2]
    return out


def _stored_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    return original if isinstance(original, str) else str(value)


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer_string(value: Any) -> int | str | None:
    """IS: an integer as pydicom gives it; else (1.5, 1e99, abc) the text as stored."""
    if _is_blank(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return _stored_text(value)
    if isinstance(value, ISfloat) or not math.isfinite(number) or not number.is_integer():
        return _stored_text(value)
    return int(number)


def _decimal_string(value: Any) -> float | str | None:
    """DS: a finite number as pydicom gives it; else (NaN, 1e999, 0,5) the text as stored."""
    if _is_blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return _stored_text(value)
    return number if math.isfinite(number) else _stored_text(value)


# --------------------------------------------------------------------------- bytes


def json_dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON (RFC 8259): no ASCII escaping, no NaN/Infinity (ValueError).

    Lone surrogates (which some decoders leave in strings) become ``?`` rather than
    failing: the output is always valid UTF-8.
    """
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", errors="replace")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_loads(data: bytes | bytearray | str) -> Any:
    """Parse JSON text (UTF-8 bytes or str); ``NaN`` / ``Infinity`` are rejected."""
    return json.loads(data, parse_constant=_reject_constant)
