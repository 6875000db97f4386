"""The header of a common PS3.10 file read straight from its bytes (issue 12: ingest CPU).

:func:`tessera.shared.dicomfile.parse_instance` reads every stored instance with pydicom
(``dcmread``: a DataElement per element, a Dataset per item, the File Meta read twice,
the warnings machinery around it all), about 1.2-1.8 ms for a CT header of 55 elements.
Most files are plain: an explicit VR little endian transfer syntax, ASCII text, elements
in ascending order, the Pixel Data last. For those this module walks the element headers
of the first :data:`HEAD` bytes itself and builds the DICOM JSON with
:mod:`tessera.shared.rawvalues`, the rules pydicom's converters follow, in about a sixth
of the time.

It answers only what it is sure of. Anything else raises :class:`Decline` and the file
goes the pydicom way, which knows every corner and gives every error its message: an
implicit VR, big endian or deflated transfer syntax, a VR it does not know, UN, a value
``rawvalues`` does not decide, group 0000, text with escapes or outside ASCII (but Latin-1 and UTF-8
text under that Specific Character Set alone), a character set pydicom would warn
about, elements out of order or repeated, group 0002 in the data set, an undefined
length anywhere but a sequence or its items, a header longer than ``HEAD``, anything
running past its container or the file. What it answers is what the pydicom way
gives for the same bytes (tests/unit/test_fastheader.py: every file of the test corpus and
damaged copies of some).
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from pydicom.charset import python_encoding
from pydicom.uid import UID

from tessera.shared.dicomjson import _BINARY_VRS
from tessera.shared.dicomjson import _LARGE_VALUE_VRS as _LARGE
from tessera.shared.rawvalues import ENCODINGS, VRS, json_values
from tessera.shared.uids import is_valid_uid

HEAD = 128 * 1024  # bytes read; a header that does not end within them is declined

ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
CHARSET = 0x00080005
EXTENDED_OFFSET_TABLE = 0x7FE00001

# PS3.5 7.1.2: explicit VRs with a 2-byte length, and those with 2 reserved bytes and a
# 4-byte length; UN is left out (pydicom may give it the dictionary's VR)
_SHORT = frozenset(b"AE AS AT CS DA DS DT FL FD IS LO LT PN SH SL SS ST TM UI UL US".split())
_LONG = frozenset(b"OB OD OF OL OV OW SQ SV UC UR UT UV".split())
_BINARY = _BINARY_VRS - {"UN"}
# the command group (pydicom reads a data set starting with it as a DIMSE command set),
# File Meta Information, and item tags out of place
_DECLINED_GROUPS = frozenset({0x0000, 0x0002, 0xFFFE})
_UNPACK_TAG = struct.Struct("<HH").unpack_from
_UNPACK_SHORT = struct.Struct("<H").unpack_from
_UNPACK_LONG = struct.Struct("<L").unpack_from


class Decline(Exception):
    """Not a file for this reader: read it with pydicom."""


@dataclass
class Header:
    """What :func:`read_header` found: the File Meta UIDs, the data set's DICOM JSON up
    to the pixel data, and where the pixel data element starts (None: the data set ends
    at the end of the file without one). The BulkDataURIs are tag paths until
    :meth:`resolve` puts the instance's prefix before them (it needs the UIDs)."""

    media_storage_sop_class_uid: str | None
    media_storage_sop_instance_uid: str | None
    transfer_syntax_uid: str
    metadata: dict[str, Any]
    pixel_start: int | None
    bulk: list[dict[str, Any]]

    def resolve(self, prefix: str) -> None:
        for entry in self.bulk:
            entry["BulkDataURI"] = f"{prefix}/{entry['BulkDataURI']}"
        self.bulk = []


def read_header(
    fp: IO[bytes],
    size: int,
    bulk_data_threshold: int,
    large_value_threshold: int | None,
    max_depth: int,
) -> Header:
    """Read ``fp`` (a PS3.10 file of ``size`` bytes) from offset 0; raises
    :class:`Decline`."""
    fp.seek(0)
    buf = fp.read(min(size, HEAD))
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise Decline
    meta, pos = _file_meta(buf)
    ts = _single_uid(meta.get(0x00020010))
    if ts is None or not _explicit_little(ts):
        raise Decline
    walker = _Walker(buf, size, bulk_data_threshold, large_value_threshold, max_depth)
    metadata, pixel_start = walker.data_set(pos)
    if pixel_start is None and walker.end != size:
        raise Decline  # bytes after the last element: the pydicom way says what they are
    return Header(
        media_storage_sop_class_uid=_single_uid(meta.get(0x00020002)),
        media_storage_sop_instance_uid=_single_uid(meta.get(0x00020003)),
        transfer_syntax_uid=ts,
        metadata=metadata,
        pixel_start=pixel_start,
        bulk=walker.bulk,
    )


@lru_cache(maxsize=64)
def _explicit_little(ts: str) -> bool:
    if not is_valid_uid(ts):
        return False  # and pydicom is not asked: it would warn, on stderr, for each value
    try:
        uid = UID(ts)
        return bool(
            uid.is_valid
            and uid.is_transfer_syntax
            and not uid.is_implicit_VR
            and uid.is_little_endian
            and not uid.is_deflated
        )
    except Exception:
        return False


def _file_meta(buf: bytes) -> tuple[dict[int, bytes], int]:
    """The group 0002 values (explicit VR little endian, PS3.10 7.1) and where they end."""
    values: dict[int, bytes] = {}
    pos, last = 132, -1
    while pos + 8 <= len(buf):
        group, element = _UNPACK_TAG(buf, pos)
        if group != 0x0002:
            break
        tag = group << 16 | element
        vr = buf[pos + 4 : pos + 6]
        if vr in _SHORT:
            (length,) = _UNPACK_SHORT(buf, pos + 6)
            start = pos + 8
        elif vr in _LONG and vr != b"SQ" and pos + 12 <= len(buf):
            (length,) = _UNPACK_LONG(buf, pos + 8)
            start = pos + 12
        else:
            raise Decline
        if tag <= last or length == UNDEFINED or start + length > len(buf):
            raise Decline
        values[tag] = buf[start : start + length]
        pos, last = start + length, tag
    if not values:
        raise Decline
    return values, pos


def _single_uid(value: bytes | None) -> str | None:
    if value is None:
        return None
    if not value.isascii() or b"\\" in value:
        raise Decline
    return value.decode("ascii").rstrip(" \0")


class _Walker:
    """Walks the explicit VR little endian elements of ``buf``; each BulkDataURI is
    written as its tag path and kept in ``bulk``."""

    def __init__(
        self, buf: bytes, size: int, threshold: int, large_threshold: int | None, max_depth: int
    ) -> None:
        self.buf = buf
        self.size = size
        self.threshold = threshold
        self.large_threshold = large_threshold
        self.max_depth = max_depth
        self.end = 0
        self.bulk: list[dict[str, Any]] = []

    def data_set(self, pos: int) -> tuple[dict[str, Any], int | None]:
        """The top-level data set from ``pos``: its JSON and where the pixel data starts."""
        out, pos, pixel = self._elements(pos, self.size, (), _TOP, None)
        self.end = pos
        return out, pixel

    def _elements(
        self,
        pos: int,
        end: int,
        parents: tuple[tuple[int, int], ...],
        mode: int,
        encoding: str | None,
    ) -> tuple[dict[str, Any], int, int | None]:
        """Elements from ``pos``: the top-level data set (up to ``end``, the end of the
        file, or a pixel data element), a defined-length item (exactly up to ``end``) or
        an undefined-length one (up to its Item Delimitation Item, before ``end``).
        Returns the JSON, where it stopped and, at the top level, where the pixel data
        element starts. ``encoding``: the text codec inherited from the enclosing data
        set (:func:`_codec`), replaced by this one's Specific Character Set."""
        buf = self.buf
        out: dict[str, Any] = {}
        last = -1
        while True:
            if pos == end:
                if mode == _OPEN_ITEM:
                    raise Decline  # no delimiter
                return out, pos, None
            if pos + 8 > min(end, len(buf)):
                raise Decline
            group, element = _UNPACK_TAG(buf, pos)
            tag = group << 16 | element
            if tag == ITEM_END:
                if mode != _OPEN_ITEM or _UNPACK_LONG(buf, pos + 4)[0] != 0:
                    raise Decline
                return out, pos + 8, None
            if mode == _TOP and tag in PIXEL_TAGS:
                return out, pos, pos
            if tag <= last or group in _DECLINED_GROUPS or tag == EXTENDED_OFFSET_TABLE:
                raise Decline
            last = tag
            vr_bytes = buf[pos + 4 : pos + 6]
            if vr_bytes in _SHORT:
                (length,) = _UNPACK_SHORT(buf, pos + 6)
                start = pos + 8
            elif vr_bytes in _LONG:
                if pos + 12 > len(buf):
                    raise Decline
                (length,) = _UNPACK_LONG(buf, pos + 8)
                start = pos + 12
            else:
                raise Decline
            vr = vr_bytes.decode("ascii")
            if vr == "SQ":
                out[f"{tag:08X}"], pos = self._sequence(start, length, end, parents, tag, encoding)
                continue
            if length == UNDEFINED:
                raise Decline
            pos = start + length
            if pos > end:
                raise Decline  # past the item, the sequence or the file
            value = self._value(tag, vr, start, length, parents, encoding)
            out[f"{tag:08X}"] = value
            if tag == CHARSET:
                encoding = _codec(value.get("Value", []))

    def _value(
        self,
        tag: int,
        vr: str,
        start: int,
        length: int,
        parents: tuple[tuple[int, int], ...],
        encoding: str | None,
    ) -> dict[str, Any]:
        if length == 0:
            return {"vr": vr}
        if vr in _BINARY:
            if length > self.threshold:
                return self._bulk(vr, tag, parents)
            value = self._bytes(start, length)
            return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
        value = self._bytes(start, length)
        if vr == "AT":
            return {"vr": vr, "Value": _tags(value)}
        if vr not in VRS:
            raise Decline  # UR: the pydicom way
        values = json_values(vr, value, True, encoding)
        if values is None:
            raise Decline
        if not values:
            return {"vr": vr}
        if vr in _LARGE and self.large_threshold is not None and length > self.large_threshold:
            return self._bulk(vr, tag, parents)
        return {"vr": vr, "Value": values}

    def _bytes(self, start: int, length: int) -> bytes:
        if start + length > len(self.buf):
            raise Decline  # beyond what was read
        return self.buf[start : start + length]

    def _bulk(self, vr: str, tag: int, parents: tuple[tuple[int, int], ...]) -> dict[str, Any]:
        path = "/".join([*(f"{t:08X}/{i}" for t, i in parents), f"{tag:08X}"])
        entry = {"vr": vr, "BulkDataURI": path}
        self.bulk.append(entry)
        return entry

    def _sequence(
        self,
        start: int,
        length: int,
        end: int,
        parents: tuple[tuple[int, int], ...],
        tag: int,
        encoding: str | None,
    ) -> tuple[dict[str, Any], int]:
        """A sequence's JSON and where it ends."""
        if len(parents) >= self.max_depth:
            raise Decline
        seq_end = end if length == UNDEFINED else start + length
        if seq_end > end:
            raise Decline
        buf = self.buf
        items: list[dict[str, Any]] = []
        pos = start
        while length == UNDEFINED or pos < seq_end:
            if pos + 8 > min(seq_end, len(buf)):
                raise Decline
            item_tag = _UNPACK_TAG(buf, pos)
            (item_length,) = _UNPACK_LONG(buf, pos + 4)
            if item_tag == (0xFFFE, 0xE0DD) and length == UNDEFINED:
                if item_length != 0:
                    raise Decline
                pos += 8
                break
            if item_tag != (0xFFFE, 0xE000):
                raise Decline
            inner = (*parents, (tag, len(items)))
            body = pos + 8
            if item_length == UNDEFINED:
                item, pos, _ = self._elements(body, seq_end, inner, _OPEN_ITEM, encoding)
            else:
                if body + item_length > seq_end:
                    raise Decline
                item, pos, _ = self._elements(body, body + item_length, inner, _ITEM, encoding)
            items.append(item)
        if pos != seq_end and length != UNDEFINED:
            raise Decline
        if not items:
            return {"vr": "SQ"}, pos
        return {"vr": "SQ", "Value": items}, pos


_TOP, _ITEM, _OPEN_ITEM = 0, 1, 2


def _codec(values: list[Any]) -> str | None:
    """The text codec of a Specific Character Set (0008,0005) value: one of
    :data:`~tessera.shared.rawvalues.ENCODINGS` alone, else None (ASCII text only); one
    pydicom does not know is declined (it warns about it)."""
    if not all(v in python_encoding for v in values if v):
        raise Decline
    if len(values) == 1:
        return ENCODINGS.get(values[0])
    return None


def _tags(value: bytes) -> list[str]:
    if len(value) % 4:
        raise Decline
    words = struct.unpack(f"<{len(value) // 2}H", value)
    return [f"{words[i]:04X}{words[i + 1]:04X}" for i in range(0, len(words), 2)]
