"""The render lane's warm-up (tessera.transcode.lane.warm_up, issue 12): each lane thread
renders a tiny image and opens its clients before its first job, and a Redis that is not
there yet neither fails nor holds the thread."""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from tessera.shared.rendering import JPEG, PNG, RenderParams
from tessera.shared.settings import Settings
from tessera.shared.transcode.contract import HEARTBEAT
from tessera.transcode import lane
from tessera.transcode.cache import close_own_loop
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


def test_a_redis_that_is_not_there_is_a_warning_and_the_thread_goes_on(
    tmp_path: Path, caplog
) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:9/0", storage_url=f"file://{tmp_path}")
    ended: list[float] = []

    def thread() -> None:
        started = time.monotonic()
        try:
            lane.warm_up(settings)
        finally:
            close_own_loop()
            ended.append(time.monotonic() - started)

    with caplog.at_level(logging.WARNING, logger=lane.__name__):
        t = threading.Thread(target=thread)
        t.start()
        t.join(HEARTBEAT + 10)
    assert ended and ended[0] < HEARTBEAT + 10
    assert any("render lane warm-up" in r.getMessage() for r in caplog.records)
