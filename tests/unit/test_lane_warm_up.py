"""The transcode worker's warm-up (tessera.transcode.lane.warm_up, issue 12): a tiny image
rendered as JPEG and PNG before the worker starts."""

from __future__ import annotations

import io
import logging
import sys

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tessera.shared.rendering import JPEG, PNG, RenderParams
from tessera.transcode import lane
from tessera.transcode.render_tasks import rendition


def test_the_sample_is_a_ct_image_that_renders_as_jpeg_and_png():
    sample = lane._sample()
    ds = dcmread(io.BytesIO(sample))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.Rows, ds.Columns, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    jpeg = Image.open(io.BytesIO(rendition(sample, 1, RenderParams(JPEG))))
    assert (jpeg.format, jpeg.size) == ("JPEG", (16, 16))
    png = np.asarray(Image.open(io.BytesIO(rendition(sample, 1, RenderParams(PNG)))))
    # values 0..4080 with rescale -1024 through the window 40/400: black to white
    assert png.shape == (16, 16) and png.min() == 0 and png.max() == 255


def test_the_warm_up_loads_the_image_plugins_and_logs_nothing(caplog):
    """It runs before the worker forks its pool (transcode/__main__.py): what it loads, the
    children have, and no thread of the worker imports them while a child is forked."""
    with caplog.at_level(logging.WARNING, logger=lane.__name__):
        lane.warm_up()
    assert not caplog.records
    assert {"PIL.JpegImagePlugin", "PIL.PngImagePlugin"} <= set(sys.modules)
