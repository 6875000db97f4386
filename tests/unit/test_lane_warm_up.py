"""The transcode worker's warm-up (tessera.transcode.warm, issue 12): a tiny image
rendered as JPEG and PNG before the worker starts."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tessera.shared.rendering import JPEG, PNG, RenderParams
from tessera.transcode import warm
from tessera.transcode.render_tasks import rendition

# in a fresh interpreter: which of the image encoders a rendering needs are loaded before
# and after the warm-up, and what it logged
_LOADED = """
import json, logging, sys
from tessera.transcode import warm
plugins = ("PIL.JpegImagePlugin", "PIL.PngImagePlugin")
before = [p for p in plugins if p in sys.modules]
records = []
logging.getLogger(warm.__name__).addHandler(logging.Handler())
logging.getLogger(warm.__name__).handlers[-1].emit = records.append
warm.warm_up()
print(json.dumps([before, [p for p in plugins if p in sys.modules], len(records)]))
"""


def test_the_sample_is_a_ct_image_that_renders_as_jpeg_and_png():
    sample = warm._sample()
    ds = dcmread(io.BytesIO(sample))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (ds.Rows, ds.Columns, ds.PhotometricInterpretation) == (16, 16, "MONOCHROME2")
    jpeg = Image.open(io.BytesIO(rendition(sample, 1, RenderParams(JPEG))))
    assert (jpeg.format, jpeg.size) == ("JPEG", (16, 16))
    png = np.asarray(Image.open(io.BytesIO(rendition(sample, 1, RenderParams(PNG)))))
    # values 0..4080 with rescale -1024 through the window 40/400: black to white
    assert png.shape == (16, 16) and png.min() == 0 and png.max() == 255


def test_the_warm_up_loads_the_image_encoders_and_logs_nothing():
    """What it loads before the worker forks its pool (transcode/__main__.py) the children
    have, and no thread of the worker imports it while a child is forked."""
    out = subprocess.run(
        [sys.executable, "-c", _LOADED], capture_output=True, text=True, check=True
    ).stdout
    before, after, logged = json.loads(out)
    assert before == [] and after == ["PIL.JpegImagePlugin", "PIL.PngImagePlugin"]
    assert logged == 0
