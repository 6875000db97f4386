"""The frame index: each frame's byte range in the stored object, built once at ingest.

WADO-RS Retrieve Frames (PS3.18 10.4.1.1.x, 8.7.3.3) serves a frame as stored with one
ranged read of the object, so ingest records where each frame is, and retrieve reads
the record. Both sides use this module: it is the one definition of the format, kept
in ``instance.pixel_data`` (jsonb) next to the Pixel Data ``offset``/``length``:

``"frame_length": L``
    Native pixel data (PS3.5 8.1.1, 8.2): frame *k* (1-based) is the ``L`` bytes at
    ``offset + (k - 1) * L``. ``L`` = Rows × Columns × SamplesPerPixel × BitsAllocated / 8
    (× 2/3 for YBR_FULL_422, PS3.3 C.7.6.3.1.2). With BitsAllocated 1 frames are packed
    without padding, so this holds only when a frame is a whole number of bytes.
``"frames": [[o, n], [o, n, c], ...]``
    Encapsulated pixel data (PS3.5 A.4): frame *k* is the value of one fragment, the
    ``n`` bytes at ``o`` (two numbers), or the values of ``c`` consecutive items spanning
    ``[o, o + n)`` with their 8-byte item headers (three numbers; retrieve reads the span
    at once and drops the headers). Which fragments make a frame comes from, in order:
    the Basic Offset Table if it is valid, the Extended Offset Table (7FE0,0001), one
    fragment per frame when there are as many fragments as frames, all fragments for a
    single frame, and for JPEG-family codestreams the EOI/EOC marker (FFD9) ending each
    frame's last fragment.
``"frames_decode": "reason"``
    No ranges (Deflated data set, a bit-packed frame that does not start on a byte,
    pixel data shorter than its frames, fragments that cannot be assigned): the frames
    are decoded by transcode. A row without any of the three keys (indexed before the
    frame index existed) is served the same way.

The index is bounded: at most :data:`MAX_INDEXED_FRAMES` frames are listed (about 30
bytes of JSON each), beyond that the frames are decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from tessera.shared.pixeldata import Item, PixelDataInfo

MAX_INDEXED_FRAMES = 100_000
_EOI = b"\xff\xd9"  # JPEG EOI, and JPEG 2000 / HTJ2K EOC
# codestreams whose frame ends with FFD9 (PS3.5 A.4.1, A.4.3, A.4.4; 8.2.1, 8.2.3, 8.2.4)
_MARKER_ENDED_PREFIXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.5",  # JPEG baseline, extended, lossless (.50, .51, .57)
    "1.2.840.10008.1.2.4.7",  # JPEG lossless SV1 (.70)
    "1.2.840.10008.1.2.4.8",  # JPEG-LS (.80, .81)
    "1.2.840.10008.1.2.4.9",  # JPEG 2000 (.90 - .93)
    "1.2.840.10008.1.2.4.20",  # HTJ2K (.201 - .203)
)

Read = Callable[[int, int], bytes]  # (offset, length) -> bytes of the object


@dataclass(frozen=True)
class Geometry:
    """The Image Pixel attributes a native frame's size follows from (PS3.3 C.7.6.3)."""

    rows: int | None
    columns: int | None
    samples_per_pixel: int | None
    bits_allocated: int | None
    photometric_interpretation: str | None = None

    def frame_bits(self) -> int | None:
        if not (self.rows and self.columns and self.bits_allocated):
            return None
        samples = self.samples_per_pixel or 1
        bits = self.rows * self.columns * samples * self.bits_allocated
        if self.photometric_interpretation == "YBR_FULL_422" and samples == 3:
            bits = bits * 2 // 3  # two luminance samples share one Cb and one Cr
        return bits


@dataclass(frozen=True)
class FrameIndex:
    """One of: ``frame_length`` (native), ``frames`` (encapsulated), ``decode`` (a reason)."""

    frame_length: int | None = None
    frames: tuple[tuple[int, ...], ...] | None = None
    decode: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.frame_length is not None:
            return {"frame_length": self.frame_length}
        if self.frames is not None:
            return {"frames": [list(f) for f in self.frames]}
        return {"frames_decode": self.decode or "unknown layout"}


def build_frame_index(
    info: PixelDataInfo,
    items: Sequence[Item] | None,
    *,
    transfer_syntax: str,
    number_of_frames: int,
    geometry: Geometry,
    extended_offsets: bytes | None,
    read: Read,
) -> FrameIndex:
    """The frame index of the pixel data ``info`` describes (see the module docstring)."""
    if info.deflated:
        return FrameIndex(decode="Deflated data set: offsets are in the inflated stream")
    if number_of_frames < 1:
        return FrameIndex(decode=f"NumberOfFrames {number_of_frames}")
    if number_of_frames > MAX_INDEXED_FRAMES:
        return FrameIndex(decode=f"more than {MAX_INDEXED_FRAMES} frames")
    if not info.encapsulated:
        return native_index(info.length or 0, number_of_frames, geometry)
    if items is None:
        return FrameIndex(decode="too many fragments to index")
    return encapsulated_index(items, number_of_frames, transfer_syntax, extended_offsets, read)


def native_index(length: int, number_of_frames: int, geometry: Geometry) -> FrameIndex:
    """Native frames follow each other without padding (PS3.5 8.1.1)."""
    bits = geometry.frame_bits()
    if bits is None:
        return FrameIndex(decode="Rows, Columns or BitsAllocated missing")
    if bits % 8:
        return FrameIndex(decode=f"a frame is {bits} bits: frames do not start on a byte")
    frame_length = bits // 8
    if frame_length * number_of_frames > length:
        return FrameIndex(
            decode=f"Pixel Data has {length} bytes, {number_of_frames} frames need"
            f" {frame_length * number_of_frames}"
        )
    return FrameIndex(frame_length=frame_length)


def encapsulated_index(
    items: Sequence[Item],
    number_of_frames: int,
    transfer_syntax: str,
    extended_offsets: bytes | None,
    read: Read,
) -> FrameIndex:
    """Group the fragments (``items[1:]``; ``items[0]`` is the Basic Offset Table) into
    frames (PS3.5 A.4, Table A.4-1/A.4-2)."""
    if len(items) < 2:
        return FrameIndex(decode="encapsulated Pixel Data without fragments")
    fragments = items[1:]
    starts = _starts_from_offsets(items[0], fragments, number_of_frames, extended_offsets, read)
    if starts is None:
        if len(fragments) == number_of_frames:
            starts = list(range(number_of_frames))
        elif number_of_frames == 1:
            starts = [0]
        elif len(fragments) > number_of_frames and transfer_syntax.startswith(
            _MARKER_ENDED_PREFIXES
        ):
            starts = _starts_from_markers(fragments, number_of_frames, read)
    if starts is None:
        return FrameIndex(
            decode=f"{len(fragments)} fragments for {number_of_frames} frames and no valid"
            " offset table"
        )
    bounds = [*starts, len(fragments)]
    return FrameIndex(frames=tuple(_span(fragments[a:b]) for a, b in pairwise(bounds)))


def _span(fragments: Sequence[Item]) -> tuple[int, ...]:
    first_offset, first_length = fragments[0]
    if len(fragments) == 1:
        return (first_offset, first_length)
    last_offset, last_length = fragments[-1]
    start = first_offset - 8  # the first item's header
    return (start, last_offset + last_length - start, len(fragments))


def _starts_from_offsets(
    bot: Item,
    fragments: Sequence[Item],
    number_of_frames: int,
    extended_offsets: bytes | None,
    read: Read,
) -> list[int] | None:
    """Index of each frame's first fragment, from the Basic Offset Table (32-bit) or the
    Extended Offset Table (64-bit); both count from the first fragment's item tag."""
    bot_offset, bot_length = bot
    tables: list[tuple[str, bytes]] = []
    if bot_length:
        tables.append(("<L", read(bot_offset, bot_length)))
    if extended_offsets:
        tables.append(("<Q", extended_offsets))
    origin = fragments[0][0] - 8
    index_at = {offset - 8 - origin: i for i, (offset, _) in enumerate(fragments)}
    for fmt, table in tables:
        size = struct.calcsize(fmt)
        if len(table) != size * number_of_frames:
            continue
        found = [index_at.get(v) for (v,) in struct.iter_unpack(fmt, table)]
        starts = [s for s in found if s is not None]
        if len(starts) == len(found) and starts[0] == 0 and all(a < b for a, b in pairwise(starts)):
            return starts
    return None


def _starts_from_markers(
    fragments: Sequence[Item], number_of_frames: int, read: Read
) -> list[int] | None:
    """Frames end with a fragment ending in FFD9 (one padding byte allowed, PS3.5 A.4)."""
    ends = []
    for i, (offset, length) in enumerate(fragments):
        tail = read(offset + max(length - 3, 0), min(length, 3))
        if tail.endswith(_EOI) or tail.endswith(_EOI + b"\x00"):
            ends.append(i)
    if len(ends) != number_of_frames or ends[-1] != len(fragments) - 1:
        return None
    return [0, *(e + 1 for e in ends[:-1])]


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FrameRange:
    """Where one frame is: ``length`` bytes at ``offset``; ``items`` > 0 when the range
    holds that many items (headers included) whose values, concatenated, are the frame."""

    offset: int
    length: int
    items: int = 0


def frame_range(pixel_data: Mapping[str, Any], frame_number: int) -> FrameRange | None:
    """The range of frame ``frame_number`` (1-based, checked by the caller), or None when
    the frame must be decoded (see the module docstring)."""
    frame_length = pixel_data.get("frame_length")
    if isinstance(frame_length, int) and not pixel_data.get("encapsulated"):
        offset = int(pixel_data["offset"]) + (frame_number - 1) * frame_length
        return FrameRange(offset, frame_length)
    frames = pixel_data.get("frames")
    if isinstance(frames, list) and 0 < frame_number <= len(frames):
        entry = frames[frame_number - 1]
        return FrameRange(int(entry[0]), int(entry[1]), int(entry[2]) if len(entry) > 2 else 0)
    return None
