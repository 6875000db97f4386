"""WADO-RS retrieve asking transcode for another Transfer Syntax (PS3.18 8.7.3.5).

Real pieces only: the transcode service's Celery app runs as a worker in a thread of
this process (``celery.contrib.testing.worker``) on the session's Redis, retrieve sends
it the task by name, both share a local object folder, the index is PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from starlette.applications import Starlette

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.settings import Settings
from tessera.shared.storage import derived_key
from tests.support.corpus import (
    EVRLE,
    FLAIR,
    FRAGMENTS,
    IMPLICIT,
    JPEG,
    parts,
    store_files,
)
from tests.support.rendering import started, transcode_worker
from tests.support.servers import RedisDatabases

RLE = "1.2.840.10008.1.2.5"
DICOM = 'multipart/related; type="application/dicom"'

# Celery 5.7's Redis result backend stores results with redis-py's deprecated setex; in
# the worker thread that warning, made an error, would lose every result.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated setex:DeprecationWarning:celery.backends.redis"
)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("objects")


@pytest.fixture(scope="module")
def transcode(redis_databases: RedisDatabases, objects: Path) -> Iterator[Settings]:
    """A transcode worker on a Redis database of its own; its settings."""
    with transcode_worker(redis_databases, objects) as settings:
        yield settings


@pytest.fixture
async def retrieve(
    database: str, transcode: Settings
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    settings = Settings(
        database_url=database,
        storage_url=transcode.storage_url,
        redis_url=transcode.redis_url,
        transcode_timeout=60.0,
    )
    async for pair in started(settings):
        yield pair


def pixels(data: bytes) -> np.ndarray:
    with quiet_pydicom():
        return dcmread(io.BytesIO(data)).pixel_array


async def test_absent_transfer_syntax_gets_explicit_vr_little_endian(retrieve, database, objects):
    app, client = retrieve
    (jpeg,) = await store_files(app, [JPEG])
    r = await client.get(jpeg.url, headers={"Accept": DICOM})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={EVRLE}"
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == EVRLE
    assert ds.SOPInstanceUID == jpeg.sop
    assert np.array_equal(ds.pixel_array, pixels(jpeg.data))

    # the conversion is cached under its derived key: a retrieve that cannot reach any
    # transcode worker still answers, from storage alone
    stored_key = await app.state.retrieve.pool.fetchval(
        "SELECT storage_key FROM instance WHERE sop_instance_uid = $1", jpeg.sop
    )
    assert (objects / derived_key(stored_key, EVRLE)).read_bytes() == data
    offline = Settings(
        database_url=database,
        storage_url=objects.as_uri(),
        redis_url="redis://127.0.0.1:9/0",
        transcode_timeout=1.0,
    )
    async for _, other in started(offline):
        again = await other.get(jpeg.url, headers={"Accept": DICOM})
        assert again.status_code == 200
        assert (await parts(again))[0][1] == data


async def test_series_mixes_as_stored_and_converted_parts(retrieve):
    app, client = retrieve
    stored = await store_files(app, [IMPLICIT, FLAIR[0]])
    implicit = stored[0]
    r = await client.get(implicit.url, headers={"Accept": f"{DICOM}; transfer-syntax={EVRLE}"})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={EVRLE}"
    assert np.array_equal(pixels(data), pixels(implicit.data))
    flair = stored[1]
    r = await client.get(flair.url, headers={"Accept": DICOM})
    assert (await parts(r))[0][1] == flair.data  # already Explicit VR LE: as stored


async def test_rle_lossless_on_request(retrieve):
    app, client = retrieve
    (jpeg,) = await store_files(app, [JPEG])
    r = await client.get(jpeg.url, headers={"Accept": f"{DICOM}; transfer-syntax={RLE}"})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={RLE}"
    assert np.array_equal(pixels(data), pixels(jpeg.data))


async def test_transcode_unreachable_is_503(database, tmp_path):
    settings = Settings(
        database_url=database,
        storage_url=tmp_path.as_uri(),  # nothing converted in here yet
        redis_url="redis://127.0.0.1:9/0",
        transcode_timeout=2.0,
    )
    async for app, client in started(settings):
        (implicit,) = await store_files(app, [IMPLICIT])
        r = await client.get(implicit.url, headers={"Accept": DICOM})
        assert r.status_code == 503
        assert "transcode" in r.text


def without_worker(database: str, redis_url: str, objects: Path, shard: str) -> Settings:
    """Retrieve settings for a shard no transcode worker serves, with a timeout long
    enough that only the missing heartbeat can explain a prompt 503."""
    return Settings(
        database_url=database,
        storage_url=objects.as_uri(),
        redis_url=redis_url,
        shard=shard,
        transcode_timeout=60.0,
    )


async def test_no_transcode_worker_running_is_503_at_once(database, redis_db, tmp_path):
    """Redis up, but no worker consuming (killed, stopped): no heartbeat, so 503 with
    Retry-After at once, not after transcode_timeout (issue 15: ~20 s before)."""
    async for app, client in started(without_worker(database, redis_db, tmp_path, "no-worker")):
        (implicit,) = await store_files(app, [IMPLICIT])
        began = asyncio.get_running_loop().time()
        r = await client.get(implicit.url, headers={"Accept": DICOM})
        assert r.status_code == 503, r.text
        assert asyncio.get_running_loop().time() - began < 5
        assert r.headers["Retry-After"] == "5"
        assert "no transcode worker of shard no-worker is running" in r.text


async def test_a_worker_that_stops_beating_while_a_task_waits_is_503(database, redis_db, tmp_path):
    """The heartbeat is there when the task is sent, then stops (the worker was killed
    with the task queued): the wait ends within a few heartbeats, not at the timeout."""
    import redis as sync_redis

    from tessera.shared.transcode.contract import alive_key

    settings = without_worker(database, redis_db, tmp_path, "dying-worker")
    beat = sync_redis.Redis.from_url(redis_db)
    beat.set(alive_key("dying-worker"), "gone soon", ex=3)
    try:
        async for app, client in started(settings):
            (implicit,) = await store_files(app, [IMPLICIT])
            began = asyncio.get_running_loop().time()
            r = await client.get(implicit.url, headers={"Accept": DICOM})
            assert r.status_code == 503, r.text
            assert asyncio.get_running_loop().time() - began < 10
            assert "no transcode worker" in r.text
    finally:
        beat.close()


# ---------------------------------------------------------------- compressed targets
# Issue 4: instances and frames in JPEG 2000, JPEG-LS, HTJ2K, JPEG... made by the worker
# (tessera.transcode.codecs), cached under their derived keys, decoded once.

J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"
JLS = "1.2.840.10008.1.2.4.80"
HTJ2K = "1.2.840.10008.1.2.4.201"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def frame_pixels(original: bytes, frame: bytes, ts: str, photometric: str) -> np.ndarray:
    """pydicom's decoding of a frame's bitstream in ``ts``, described as ``original``."""
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(original))
    ds.file_meta.TransferSyntaxUID = ts
    ds.PhotometricInterpretation = photometric
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    with quiet_pydicom():
        return ds.pixel_array


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Against the reference's value range (as in tests/unit/test_transcode_codecs.py)."""
    ref = reference.astype(np.float64)
    mse = float(np.mean((ref - decoded.astype(np.float64)) ** 2))
    peak = max(float(ref.max() - ref.min()), 1.0)
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


async def test_instance_in_jpeg_2000_lossless(retrieve, objects):
    app, client = retrieve
    (mr,) = await store_files(app, [FLAIR[0]])  # 16-bit (12 stored) MR, Explicit VR LE
    r = await client.get(mr.url, headers={"Accept": f"{DICOM}; transfer-syntax={J2K_LOSSLESS}"})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={J2K_LOSSLESS}"
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == J2K_LOSSLESS
    assert ds.SOPInstanceUID == mr.sop and ds.get("LossyImageCompression") in (None, "00")
    assert np.array_equal(ds.pixel_array, pixels(mr.data))
    stored_key = await app.state.retrieve.pool.fetchval(
        "SELECT storage_key FROM instance WHERE sop_instance_uid = $1", mr.sop
    )
    assert (objects / derived_key(stored_key, J2K_LOSSLESS)).read_bytes() == data


async def test_lossy_instance_keeps_its_psnr_and_says_it_is_lossy(retrieve):
    app, client = retrieve
    (us,) = await store_files(app, [JPEG])  # 8-bit colour, JPEG Baseline YBR_FULL_422
    r = await client.get(us.url, headers={"Accept": f"{DICOM}; transfer-syntax={J2K_LOSSY}"})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={J2K_LOSSY}"
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    assert ds.PhotometricInterpretation == "YBR_ICT"  # PS3.5 8.2.4, irreversible colour
    assert ds.LossyImageCompression == "01"
    assert list(ds.LossyImageCompressionMethod)[-1] == "ISO_15444_1"
    assert psnr(pixels(us.data), ds.pixel_array) >= 40


async def test_frame_as_image_jls_and_image_jp2(retrieve):
    app, client = retrieve
    (lena,) = await store_files(app, [FRAGMENTS])  # 2 colour JPEG frames
    accept = f'multipart/related; type="image/jls"; transfer-syntax={JLS}'
    r = await client.get(f"{lena.url}/frames/2", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    ((h, frame),) = await parts(r)
    assert h["content-type"] == f"image/jls; transfer-syntax={JLS}"
    expected = pixels(lena.data)[1]
    assert np.array_equal(frame_pixels(lena.data, frame, JLS, "RGB"), expected)

    (mr,) = await store_files(app, [FLAIR[1]])
    # image/jp2 without transfer-syntax: its default, JPEG 2000 lossless (Table 8.7.3-5)
    r = await client.get(
        f"{mr.url}/frames/1", headers={"Accept": 'multipart/related; type="image/jp2"'}
    )
    assert r.status_code == 200, r.text
    ((h, frame),) = await parts(r)
    assert h["content-type"] == f"image/jp2; transfer-syntax={J2K_LOSSLESS}"
    assert frame[:2] == b"\xff\x4f"  # a JPEG 2000 codestream (SOC)
    assert np.array_equal(
        frame_pixels(mr.data, frame, J2K_LOSSLESS, "MONOCHROME2"), pixels(mr.data)
    )


async def test_identical_requests_together_are_encoded_once(retrieve, monkeypatch):
    from tessera.transcode import convert

    encodes = []
    real = convert.encode

    def counting(ds, target_ts):
        encodes.append(target_ts)
        return real(ds, target_ts)

    monkeypatch.setattr(convert, "encode", counting)
    app, client = retrieve
    (mr,) = await store_files(app, [FLAIR[2]])
    headers = {"Accept": f"{DICOM}; transfer-syntax={HTJ2K}"}
    answers = await asyncio.gather(*(client.get(mr.url, headers=headers) for _ in range(3)))
    assert [a.status_code for a in answers] == [200, 200, 200]
    bodies = [(await parts(a))[0][1] for a in answers]
    assert bodies[0] == bodies[1] == bodies[2]
    assert encodes == [HTJ2K]
    with quiet_pydicom():
        assert np.array_equal(dcmread(io.BytesIO(bodies[0])).pixel_array, pixels(mr.data))


async def test_a_target_that_cannot_hold_the_pixels_is_406(retrieve):
    app, client = retrieve
    (mr,) = await store_files(app, [FLAIR[0]])  # 12 bits stored: not JPEG Baseline
    r = await client.get(mr.url, headers={"Accept": f"{DICOM}; transfer-syntax={JPEG_BASELINE}"})
    assert r.status_code == 406
    assert "BitsStored 12" in r.text and "rescale" in r.text
    accept = f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}'
    r = await client.get(f"{mr.url}/frames/1", headers={"Accept": accept})
    assert r.status_code == 406
    assert "BitsStored 12" in r.text


async def test_a_refused_conversion_falls_back_to_the_next_acceptable(retrieve):
    """JPEG Baseline preferred for a 12-bit MR: the worker refuses it (only it knows the
    pixels), and the next range the client accepts, as stored, is sent (PS3.18 8.7.5)."""
    app, client = retrieve
    (mr,) = await store_files(app, [FLAIR[0]])
    accept = f"{DICOM}; transfer-syntax={JPEG_BASELINE}, {DICOM}; transfer-syntax=*; q=0.9"
    r = await client.get(mr.url, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert h["content-type"] == f"application/dicom; transfer-syntax={EVRLE}"
    assert data == mr.data
