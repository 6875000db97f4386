"""``tessera.transcode.frame_to_transfer_syntax``: one frame in another Transfer Syntax.

WADO-RS Retrieve Frames serves a frame as stored with a ranged read (retrieve does that
itself, from the frame index). This task is for the rest: a frame asked in another
Transfer Syntax than the stored one (a JPEG 2000 frame asked as
``application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1``), or a frame whose
bytes are not a range of the object (Deflated data set, bit-packed frames that do not
start on a byte, fragments no offset table assigns to frames).

Only the asked frame is decoded (pydicom's :func:`~pydicom.pixels.pixel_array` with
``index``), and the result is stored under
:func:`~tessera.shared.storage.derived_frame_key`, made once
(:mod:`tessera.transcode.cache`); the task returns that key. The result is

* for Explicit VR Little Endian, the frame's native pixel data (Table 8.7.3-4): pydicom's
  decoding, samples interleaved (Planar Configuration 0), YCbCr JPEG as RGB (as
  :meth:`~pydicom.dataset.Dataset.decompress` leaves an instance), BitsAllocated 1
  packed from the frame's first pixel;
* for a compressed Transfer Syntax of :data:`tessera.transcode.codecs.CODECS`, the
  frame's bitstream in it (Table 8.7.3-5: what ``image/jpeg``, ``image/jls``,
  ``image/jp2``, ``image/jphc``, ``image/dicom-rle`` carry), encoded from that decoding
  by :func:`~tessera.transcode.codecs.encode_frame`; a frame already stored in the
  target syntax is its stored bitstream, not re-encoded.

Contract: a :class:`~tessera.shared.transcode.FrameRequest`, frame numbers 1-based. A target
we do not make, a frame no installed decoder reads, or pixel data the target cannot hold
as is raises :class:`~tessera.shared.errors.UnsupportedTransferSyntax` (406 at
retrieve); a frame number beyond the object's frames raises
:class:`~tessera.shared.errors.NotFound`.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from celery import shared_task
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pack_bits, pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import NotFound, UnsupportedTransferSyntax
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, derived_frame_key
from tessera.shared.transcode import FRAME_TARGETS as TARGETS
from tessera.shared.transcode import FRAME_TASK, FrameLocation, FrameRequest
from tessera.shared.transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN
from tessera.transcode.bad_data import DATA_ERRORS, refused_as
from tessera.transcode.cache import produce_once, run
from tessera.transcode.celery_app import settings_of
from tessera.transcode.codecs import CODECS, check_source, encode_frame, pixel_format
from tessera.transcode.frame_source import read_frame_dataset

log = logging.getLogger(__name__)
# A decoded frame larger than this is refused rather than allocated.
MAX_FRAME_BYTES = 1 << 30


def check_target(target_ts: str) -> None:
    if target_ts not in TARGETS:
        raise UnsupportedTransferSyntax(
            f"frames are not converted to {target_ts!r}; they are made in"
            f" {', '.join(sorted(TARGETS))}"
        )


@shared_task(name=FRAME_TASK, bind=True)
def frame_to_transfer_syntax(self: Any, request: dict[str, Any]) -> str:
    """Key of the frame a :class:`~tessera.shared.transcode.FrameRequest` asks for; its
    ``location`` lets it read only that frame and the attributes before Pixel Data."""
    settings = settings_of(self.app)
    req = FrameRequest.from_json(request)
    check_target(req.target_ts)  # refuse before any I/O
    return run(
        settings,
        frame_object(settings, req.storage_key, req.frame_number, req.target_ts, req.location),
    )


async def frame_object(
    settings: Settings,
    storage_key: str,
    frame_number: int,
    target_ts: str,
    located: FrameLocation | None = None,
) -> str:
    """Decode (or find decoded) one frame of the stored object; the key of the result."""

    async def make(store: ObjectStore) -> bytes:
        what = f"frame {frame_number} in {target_ts}"
        if located is None:  # the whole object
            data = await store.get_bytes(storage_key)
            with refused_as(what):
                frame = frame_in(data, frame_number, target_ts)
        else:  # two ranged reads: the attributes, the frame (frame_source)
            with refused_as(what):
                ds, frames = await read_frame_dataset(store, storage_key, located)
                frame = frame_in(ds, frame_number, target_ts, frames)
        log.info("%s: frame %d converted to %s", storage_key, frame_number, target_ts)
        return frame

    key = derived_frame_key(storage_key, frame_number, target_ts)
    return await produce_once(settings, key, make)


def decode_frame(data: bytes | Dataset, frame_number: int, frames: int | None = None) -> bytes:
    """Frame ``frame_number`` (1-based) of the PS3.10 file ``data``, as the bytes of native
    Explicit VR Little Endian pixel data of that one frame (PS3.5 8.1.1, 8.2). ``data`` may
    instead be a data set holding that frame alone (:mod:`.frame_source`), ``frames``
    then the object's Number of Frames."""
    return frame_in(data, frame_number, EXPLICIT_VR_LITTLE_ENDIAN, frames)


def frame_in(
    data: bytes | Dataset, frame_number: int, target_ts: str, frames: int | None = None
) -> bytes:
    """Frame ``frame_number`` of ``data`` (as :func:`decode_frame` takes it) in
    ``target_ts``: native pixel data for Explicit VR Little Endian, else the frame's
    bitstream in that compressed Transfer Syntax."""
    check_target(target_ts)
    if isinstance(data, Dataset):
        ds, index = data, 0
    else:
        with quiet_pydicom():
            ds = dcmread(io.BytesIO(data))
        index = frame_number - 1
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotFound("the instance has no pixel data, so no frames")
    frames = frames or _int(ds.get("NumberOfFrames")) or 1
    if not 1 <= frame_number <= frames:
        raise NotFound(f"frame {frame_number} does not exist: the instance has {frames}")
    size = (_int(ds.get("Rows")) or 0) * (_int(ds.get("Columns")) or 0)
    size *= (_int(ds.get("SamplesPerPixel")) or 1) * max((_int(ds.get("BitsAllocated")) or 8), 8)
    if size // 8 > MAX_FRAME_BYTES:
        raise UnsupportedTransferSyntax(f"a frame of {size // 8} bytes is too large to decode")
    if target_ts != EXPLICIT_VR_LITTLE_ENDIAN:
        return _encoded(ds, index, frame_number, target_ts)
    try:
        with quiet_pydicom():
            arr = pixel_array(ds, index=index)
    except DATA_ERRORS as e:
        ts = ds.file_meta.get("TransferSyntaxUID", "?")
        raise UnsupportedTransferSyntax(f"cannot decode frame {frame_number} ({ts}): {e}") from e
    if _int(ds.get("BitsAllocated")) == 1:
        return pack_bits(arr)
    little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def _encoded(ds: Dataset, index: int, frame_number: int, target_ts: str) -> bytes:
    """Frame ``index`` of ``ds`` as a ``target_ts`` bitstream (Table 8.7.3-5)."""
    codec = CODECS[target_ts]
    check_source(ds, codec)
    source = UID(ds.file_meta.get("TransferSyntaxUID", ""))
    if source == target_ts and "PixelData" in ds:  # as stored: its fragments joined
        count = _int(ds.get("NumberOfFrames")) or 1
        return bytes(get_frame(ds.PixelData, index, number_of_frames=count))
    try:
        with quiet_pydicom():
            # YCbCr as RGB (as_rgb, pydicom's default), as codecs.encode_frame takes it
            frame, meta = get_decoder(source).as_array(ds, index=index)
    except DATA_ERRORS as e:
        raise UnsupportedTransferSyntax(
            f"cannot decode frame {frame_number} ({source}): {e}"
        ) from e
    encoded, _ = encode_frame(frame, pixel_format(meta), codec.uid)
    return encoded


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
