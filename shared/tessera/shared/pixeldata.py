"""Where the pixel data of a PS3.10 file is, found by reading element and item headers only.

:func:`locate_pixel_data` reads the header of the Pixel Data element (7FE0,0010) — or
Float / Double Float Pixel Data (7FE0,0008/0009) — at the reader's position, and finds
where its value ends. For encapsulated pixel data (PS3.5 A.4: undefined length, a
sequence of items, the first the Basic Offset Table, then the fragments, then a
Sequence Delimitation Item) it walks the item headers and records where every item's
value is, which :mod:`tessera.shared.frameindex` turns into per-frame byte ranges.
No fragment byte is read here.

Every failure is a :class:`PixelDataError` whose message says what is wrong;
:mod:`tessera.shared.dicomfile` turns it into an 0xC000 failure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol

PIXEL_DATA = 0x7FE00010
FLOAT_PIXEL_DATA = 0x7FE00008
DOUBLE_FLOAT_PIXEL_DATA = 0x7FE00009
PIXEL_TAGS = frozenset({PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_FLOAT_PIXEL_DATA})
_IMPLICIT_PIXEL_VR = {PIXEL_DATA: "OW", FLOAT_PIXEL_DATA: "OF", DOUBLE_FLOAT_PIXEL_DATA: "OD"}

ITEM = 0xFFFEE000
SEQUENCE_DELIMITER = 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# PS3.5 7.1.2: explicit VRs with a 2-byte reserved field and a 4-byte length
LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Item positions kept per object: past this many the frame index is not built (the
# frames are then served by decoding), so a hostile file cannot make a huge index.
MAX_RECORDED_ITEMS = 1_000_000


class PixelDataError(Exception):
    """The pixel data element is malformed or truncated."""


class Reader(Protocol):
    """The seekable binary reader the parser reads through."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...


@dataclass(frozen=True)
class PixelDataInfo:
    """Where the Pixel Data value is, for ranged reads.

    ``offset`` is the byte offset of the *value* (after tag, VR and length) and ``length``
    its defined length, ``None`` when undefined (encapsulated, PS3.5 A.4: ``offset`` is then
    the first item tag, the Basic Offset Table). ``vr`` is as stored, or for implicit VR
    what pydicom infers (OW; OF / OD for Float / Double Float Pixel Data). ``tag`` is
    (7FE0,0010) or, for parametric maps, (7FE0,0008) / (7FE0,0009). With the Deflated
    transfer syntax ``deflated`` is true and ``offset`` counts bytes of the *inflated* data
    set stream that starts right after the File Meta Information.
    """

    offset: int
    length: int | None
    vr: str
    encapsulated: bool
    tag: int = PIXEL_DATA
    deflated: bool = False


# (value offset, value length) of one item of encapsulated pixel data
Item = tuple[int, int]


@dataclass(frozen=True)
class LocatedPixelData:
    """The pixel data element found: its description, where it ends, and for encapsulated
    data the items (Basic Offset Table first), or None if there were too many to keep."""

    info: PixelDataInfo
    end: int
    items: list[Item] | None


def locate_pixel_data(
    fp: Reader, size: int, is_implicit: bool, is_little: bool, deflated: bool
) -> LocatedPixelData | None:
    """Read the header of the pixel data element at ``fp`` and find where its value ends.

    None if ``fp`` is at the end; :class:`PixelDataError` if what is there is not a pixel
    data element or runs past ``size``.
    """
    start = fp.tell()
    header = fp.read(8)
    if not header:
        return None
    endian = "<" if is_little else ">"
    if len(header) < 8:
        raise PixelDataError("the file is truncated")
    group, element = struct.unpack(endian + "HH", header[:4])
    tag = group << 16 | element
    if tag not in PIXEL_TAGS:
        raise PixelDataError(f"cannot parse the data set beyond offset {start}")
    if is_implicit:
        (length,) = struct.unpack(endian + "L", header[4:8])
        vr = "OB" if length == UNDEFINED else _IMPLICIT_PIXEL_VR[tag]
        value_offset = start + 8
    elif header[4:6] in LONG_LENGTH_VRS:
        extra = fp.read(4)
        if len(extra) < 4:
            raise PixelDataError("the file is truncated")
        (length,) = struct.unpack(endian + "L", extra)
        vr = header[4:6].decode("ascii")
        value_offset = start + 12
    else:
        (length,) = struct.unpack(endian + "H", header[6:8])
        vr = header[4:6].decode("latin-1")
        value_offset = start + 8
    if not vr.isalpha() or not vr.isupper():
        vr = _IMPLICIT_PIXEL_VR[tag]

    items: list[Item] | None = None
    if length == UNDEFINED:
        end, items = _walk_items(fp, value_offset, size, endian)
    else:
        end = value_offset + length
        if end > size:
            raise PixelDataError(
                f"the file is truncated: Pixel Data declares {length} bytes, "
                f"{max(size - value_offset, 0)} remain"
            )
    info = PixelDataInfo(
        offset=value_offset,
        length=None if length == UNDEFINED else length,
        vr=vr,
        encapsulated=length == UNDEFINED,
        tag=tag,
        deflated=deflated,
    )
    return LocatedPixelData(info, end, items)


def _walk_items(fp: Reader, offset: int, size: int, endian: str) -> tuple[int, list[Item] | None]:
    """Walk the items of encapsulated pixel data (PS3.5 A.4); return the end offset and
    each item's (value offset, length)."""
    position = offset
    items: list[Item] | None = []
    while True:
        fp.seek(position)
        header = fp.read(8)
        if len(header) < 8:
            raise PixelDataError(
                "the file is truncated: encapsulated Pixel Data has no Sequence Delimiter"
            )
        group, element, length = struct.unpack(endian + "HHL", header)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_DELIMITER:
            return position, items
        if tag != ITEM or length == UNDEFINED:
            raise PixelDataError(
                f"malformed encapsulated Pixel Data at offset {position - 8} (PS3.5 A.4)"
            )
        if items is not None:
            items.append((position, length))
            if len(items) > MAX_RECORDED_ITEMS:
                items = None
        position += length
        if position > size:
            raise PixelDataError("the file is truncated: a Pixel Data fragment runs past the end")
