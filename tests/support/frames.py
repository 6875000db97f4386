"""A real transcode worker and retrieve app for the Retrieve Frames tests, and what a
frame should be according to pydicom.

The transcode service's Celery app runs as a worker in threads of this process on the
session's Redis (database 13, its own), sharing a local object folder with retrieve; the
index is a fresh PostgreSQL database per test.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import pack_bits, pixel_array
from pydicom.uid import UID

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.mediatypes import parse_media_type

# Celery 5.7's Redis result backend stores results with redis-py's deprecated setex; in
# the worker thread that warning, made an error, would lose every result.
IGNORE_SETEX = pytest.mark.filterwarnings(
    "ignore:Call to deprecated setex:DeprecationWarning:celery.backends.redis"
)


def read(path: Path) -> FileDataset:
    with quiet_pydicom():
        return dcmread(path)


def frame_count(ds: FileDataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def transfer_syntax_of(content_type: str) -> str:
    return parse_media_type(content_type).params["transfer-syntax"]


def decoded(ds: FileDataset, frame: int) -> bytes:
    """pydicom's decoding of ``frame`` (1-based) as native little endian bytes."""
    with quiet_pydicom():
        arr = pixel_array(ds, index=frame - 1)
    if ds.BitsAllocated == 1:
        return pack_bits(arr)
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def stored_slice(ds: FileDataset, frame: int) -> bytes:
    """The native frame's bytes in the stored Pixel Data."""
    bits = ds.Rows * ds.Columns * ds.get("SamplesPerPixel", 1) * ds.BitsAllocated
    length = bits // 8
    return bytes(ds.PixelData[(frame - 1) * length : frame * length])


def decode_part(ds: FileDataset, ts: str, body: bytes) -> np.ndarray:
    """The pixels of one frame as a client decodes a part: the instance's attributes
    with this frame alone as its pixel data, in the part's Transfer Syntax."""
    with quiet_pydicom():
        one = dcmread(io.BytesIO(_bytes_of(ds)))
    one.file_meta.TransferSyntaxUID = UID(ts)
    if "NumberOfFrames" in one:
        one.NumberOfFrames = 1
    if UID(ts).is_encapsulated:
        one.PixelData = encapsulate([body])
        one["PixelData"].VR = "OB"
    else:
        one.PixelData = body
    with quiet_pydicom():
        return pixel_array(one)


def frame_pixels(ds: FileDataset, frame: int) -> np.ndarray:
    with quiet_pydicom():
        return pixel_array(ds, index=frame - 1)


def _bytes_of(ds: FileDataset) -> bytes:
    assert isinstance(ds.filename, str)
    return Path(ds.filename).read_bytes()
