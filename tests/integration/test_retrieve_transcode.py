"""WADO-RS retrieve asking transcode for another Transfer Syntax (PS3.18 8.7.3.5).

Real pieces only: the transcode service's Celery app runs as a worker in a thread of
this process (``celery.contrib.testing.worker``) on the session's Redis, retrieve sends
it the task by name, both share a local object folder, the index is PostgreSQL.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from starlette.applications import Starlette

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.settings import Settings
from tessera.shared.storage import derived_key
from tests.integration.rendering_setup import started, transcode_worker
from tests.integration.retrieve_corpus import EVRLE, FLAIR, IMPLICIT, JPEG, parts, store_files

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
def transcode(redis_url: str, objects: Path) -> Iterator[Settings]:
    """A transcode worker on Redis database 4; its settings."""
    with transcode_worker(redis_url, objects, 4) as settings:
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
