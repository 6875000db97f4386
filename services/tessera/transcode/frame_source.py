"""One frame of a stored object, read without reading the object (the frame task's input).

Decoding frame *k* of a multi-frame JPEG 2000 object needs the data set's attributes
(the Image Pixel module, the Transfer Syntax) and that frame's fragments, not the other
frames. Retrieve knows where both are from the index — the Pixel Data value's offset and
the frame index (:mod:`tessera.shared.frameindex`) — and passes them to the frame task
as a :class:`~tessera.shared.transcode.FrameLocation`. The task then makes two ranged
reads, in parallel:

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

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.storage import ObjectStore
from tessera.shared.transcode import FrameLocation

_ITEM = (0xFFFE, 0xE000)


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
