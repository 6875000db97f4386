"""Warming the transcode worker up before it starts (issue 12).

:func:`warm_up` reads and renders a tiny image as JPEG and PNG, so that the first
renderings after a start do not pay for the modules and codecs they load: a render lane's
first three renderings of a 512 x 512 CT took 15, 14 and 10 ms to make, against 2-3 ms
once warm; 7, 3 and 3 after the warm-up. ``python -m tessera.transcode`` calls it in the
main thread before the Celery worker starts, so the pool's children inherit what it
loaded, and no other thread imports anything meanwhile: a module being imported by
another thread while the process forks stays locked for good in the child (a first
version that warmed up in each lane thread as it started left, 1 start in 10, a child
whose renderings waited forever).
"""

from __future__ import annotations

import io
import logging

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tessera.shared.rendering import JPEG, PNG, RenderParams
from tessera.transcode.render_tasks import rendition

log = logging.getLogger(__name__)


def _sample() -> bytes:
    """A 16 x 16 MONOCHROME2 CT image of 16-bit values as a PS3.10 file (Explicit VR
    Little Endian): what :func:`warm_up` renders."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.PixelData = (np.arange(256, dtype="<u2") * 16).tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def warm_up() -> None:
    """Render :func:`_sample` once per image type, loading what renderings use; a failure
    is logged and leaves the first rendering to load it, as it would have. Call it in the
    main thread, before the worker's pool and threads start (see the module docstring)."""
    try:
        sample = _sample()
        for media_type in (JPEG, PNG):
            rendition(sample, 1, RenderParams(media_type))
    except Exception as e:
        log.warning("render warm-up: %s: %s", type(e).__name__, e)
