"""One frame of a stored object, read without reading the object (the frame task's input).

Decoding frame *k* of a multi-frame JPEG 2000 object needs the data set's attributes
(the Image Pixel module, the Transfer Syntax) and that frame's fragments, not the other
frames. Retrieve knows where both are from the index — the Pixel Data value's offset and
the frame index (:mod:`tessera.shared.frameindex`) — and passes them to the frame task
as a :class:`FrameLocation`. The task then makes two ranged reads, in parallel:

* ``[0, header)``: the File Meta Information and every element before the Pixel Data
  value (the Pixel Data element's own tag and length included; pydicom stops there);
* the frame's range: one fragment's value, or ``items`` consecutive items whose values,
  concatenated, are the frame (PS3.5 A.4).

and decodes a one-frame data set made of them: the attributes, Number of Frames 1, no
Extended Offset Table, Pixel Data the frame's bytes encapsulated anew as one fragment
with an empty-entry Basic Offset Table (PS3.5 A.4). pydicom joins a frame's fragments
before handing them to the decoder, so the decoder sees the same codestream and the
pixels are those of :func:`pydicom.pixels.pixel_array` on the whole object.

Only encapsulated frames are located this way; a task without a location (native frames
in Explicit VR Big Endian, Deflated objects, frames the index has no range for) reads the
whole object as before.
"""

from __future__ import annotations

import asyncio
import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.storage import ObjectStore

# A header (everything before Pixel Data) larger than this is refused: no sane object has
# one, and the task would otherwise allocate whatever a bad location names.
MAX_HEADER_BYTES = 64 * 1024 * 1024
_ITEM = (0xFFFE, 0xE000)


@dataclass(frozen=True)
class FrameLocation:
    """Where one encapsulated frame is in the stored object (byte offsets).

    ``header``: the Pixel Data value's offset (its first item tag), so ``[0, header)`` is
    everything before it; ``offset``/``length``/``items`` as in
    :class:`tessera.shared.frameindex.FrameRange`.
    """

    header: int
    offset: int
    length: int
    items: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "header": self.header,
            "offset": self.offset,
            "length": self.length,
            "items": self.items,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> FrameLocation | None:
        """The location a task was given, or None when absent or not four sane numbers
        (the task then reads the whole object)."""
        if not isinstance(doc, Mapping):
            return None
        try:
            values = [doc[k] for k in ("header", "offset", "length", "items")]
        except KeyError:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            return None
        header, offset, length, items = values
        if not 0 < header <= MAX_HEADER_BYTES or offset < header or length == 0:
            return None
        return cls(header, offset, length, items)


async def read_frame_dataset(
    store: ObjectStore, storage_key: str, location: FrameLocation
) -> tuple[Dataset, int]:
    """The one-frame data set of the frame at ``location`` (see the module docstring), and
    the object's Number of Frames (to check the asked frame number against)."""
    head, frame = await asyncio.gather(
        store.get_bytes(storage_key, 0, location.header),
        store.get_bytes(storage_key, location.offset, location.length),
    )
    if len(frame) != location.length:
        raise ValueError(
            f"{storage_key}: the frame's {location.length} bytes at {location.offset} run past"
            " the end of the object"
        )
    fragments = item_values(frame, location.items) if location.items else [frame]
    return await asyncio.to_thread(one_frame_dataset, head, b"".join(fragments))


def item_values(data: bytes, count: int) -> list[bytes]:
    """The values of the ``count`` items (PS3.5 A.4, little endian) that fill ``data``."""
    values, pos = [], 0
    for _ in range(count):
        if pos + 8 > len(data):
            raise ValueError(f"a frame's item header is cut short at byte {pos}")
        group, element, length = struct.unpack_from("<HHL", data, pos)
        if (group, element) != _ITEM or pos + 8 + length > len(data):
            raise ValueError(
                f"malformed frame range: ({group:04X},{element:04X}) of {length} bytes at"
                f" byte {pos} where an item was expected"
            )
        values.append(data[pos + 8 : pos + 8 + length])
        pos += 8 + length
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the frame's {count} items")
    return values


def one_frame_dataset(head: bytes, frame: bytes) -> tuple[Dataset, int]:
    """The attributes read from ``head`` with ``frame`` as their only frame; and the
    original Number of Frames."""
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(head), force=True, stop_before_pixels=True)
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    if "NumberOfFrames" in ds:
        ds.NumberOfFrames = 1
    for keyword in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if keyword in ds:
            del ds[keyword]
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds, frames
