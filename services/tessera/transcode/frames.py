"""``tessera.transcode.frame_to_transfer_syntax``: one frame, decoded (PS3.18 10.4.1.1.x).

WADO-RS Retrieve Frames serves a frame as stored with a ranged read (retrieve does that
itself, from the frame index). This task is for the rest: a frame asked in another
Transfer Syntax than the stored one (a JPEG 2000 frame asked as
``application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1``), or a frame whose
bytes are not a range of the object (Deflated data set, bit-packed frames that do not
start on a byte, fragments no offset table assigns to frames).

Only the asked frame is decoded (pydicom's :func:`~pydicom.pixels.pixel_array` with
``index``), and the result — the frame's native pixel data, Explicit VR Little Endian —
is stored under :func:`~tessera.shared.storage.derived_frame_key`, made once
(:mod:`tessera.transcode.cache`); the task returns that key. The bytes are pydicom's
decoding: samples interleaved (Planar Configuration 0), YCbCr JPEG as RGB (as
:meth:`~pydicom.dataset.Dataset.decompress` leaves an instance), BitsAllocated 1 packed
from the frame's first pixel.

Contract: args ``(storage_key, frame_number, target_ts)``, frame numbers 1-based. A target
other than Explicit VR Little Endian, or a frame no installed decoder reads, raises
:class:`~tessera.shared.errors.UnsupportedTransferSyntax` (406 at retrieve); a frame
number beyond the object's frames raises :class:`~tessera.shared.errors.NotFound`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import numpy as np
from celery import shared_task
from pydicom import dcmread
from pydicom.pixels import pack_bits, pixel_array

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import NotFound, UnsupportedTransferSyntax
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, derived_frame_key
from tessera.transcode.cache import produce_once
from tessera.transcode.celery_app import settings_of

log = logging.getLogger(__name__)

TASK_NAME = "tessera.transcode.frame_to_transfer_syntax"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
TARGETS = frozenset({EXPLICIT_VR_LITTLE_ENDIAN})
# A decoded frame larger than this is refused rather than allocated.
MAX_FRAME_BYTES = 1 << 30


def check_target(target_ts: str) -> None:
    if target_ts not in TARGETS:
        raise UnsupportedTransferSyntax(
            f"frames are converted to {EXPLICIT_VR_LITTLE_ENDIAN} only, not {target_ts!r}"
        )


@shared_task(name=TASK_NAME, bind=True)
def frame_to_transfer_syntax(self: Any, storage_key: str, frame_number: int, target_ts: str) -> str:
    """Key of frame ``frame_number`` of the object under ``storage_key``, in ``target_ts``."""
    settings = settings_of(self.app)
    check_target(target_ts)  # refuse before any I/O
    return asyncio.run(frame_object(settings, storage_key, int(frame_number), target_ts))


async def frame_object(
    settings: Settings, storage_key: str, frame_number: int, target_ts: str
) -> str:
    """Decode (or find decoded) one frame of the stored object; the key of the result."""

    async def make(store: ObjectStore) -> bytes:
        frame = decode_frame(await store.get_bytes(storage_key), frame_number)
        log.info("%s: frame %d decoded to %s", storage_key, frame_number, target_ts)
        return frame

    key = derived_frame_key(storage_key, frame_number, target_ts)
    return await produce_once(settings, key, make)


def decode_frame(data: bytes, frame_number: int) -> bytes:
    """Frame ``frame_number`` (1-based) of the PS3.10 file ``data``, as the bytes of native
    Explicit VR Little Endian pixel data of that one frame (PS3.5 8.1.1, 8.2)."""
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotFound("the instance has no pixel data, so no frames")
    frames = _int(ds.get("NumberOfFrames")) or 1
    if not 1 <= frame_number <= frames:
        raise NotFound(f"frame {frame_number} does not exist: the instance has {frames}")
    size = (_int(ds.get("Rows")) or 0) * (_int(ds.get("Columns")) or 0)
    size *= (_int(ds.get("SamplesPerPixel")) or 1) * max((_int(ds.get("BitsAllocated")) or 8), 8)
    if size // 8 > MAX_FRAME_BYTES:
        raise UnsupportedTransferSyntax(f"a frame of {size // 8} bytes is too large to decode")
    try:
        with quiet_pydicom():
            arr = pixel_array(ds, index=frame_number - 1)
    except (RuntimeError, NotImplementedError, ValueError, AttributeError, KeyError) as e:
        ts = ds.file_meta.get("TransferSyntaxUID", "?")
        raise UnsupportedTransferSyntax(f"cannot decode frame {frame_number} ({ts}): {e}") from e
    if _int(ds.get("BitsAllocated")) == 1:
        return pack_bits(arr)
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
