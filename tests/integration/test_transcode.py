"""The transcode task through a real Celery worker, a real Redis and real storage.

The worker runs in a thread of this process (``celery.contrib.testing.worker``) with the
Redis broker of the session; tasks are sent by name, as retrieve sends them. Storage is
a local folder and an S3 bucket (the worker opens the store inside ``asyncio.run``, so
both backends go through that path). Decodes are counted by wrapping
``convert.encode`` in this process, which the in-thread worker shares.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from tessera.shared.errors import NotAcceptable, ObjectNotFound, UnsupportedTransferSyntax
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, derived_key, instance_key, open_store
from tessera.shared.transcode import TRANSCODE_TASK as TASK_NAME
from tessera.shared.transcode import TranscodeRequest
from tessera.transcode import convert
from tessera.transcode.celery_app import TranscodeCelery
from tests.support.buckets import new_bucket
from tests.support.rendering import worker_app
from tests.support.servers import RedisDatabases

CORPUS = Path(__file__).parents[1] / "data" / "corpus" / "TransferSyntaxes"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
WAIT = 60.0  # seconds a task result may take

# Celery 5.7's Redis result backend stores results with redis-py's deprecated setex; in
# the worker thread that warning, made an error, would lose every result.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Call to deprecated setex:DeprecationWarning:celery.backends.redis"
)


@dataclass
class Worker:
    app: TranscodeCelery
    settings: Settings

    def run(self, storage_key: str, target_ts: str) -> str:
        """Send the task by name and wait for its result (blocking)."""
        result = self.app.send_task(
            TASK_NAME, args=(TranscodeRequest(storage_key, target_ts).to_json(),)
        )
        try:
            value = result.get(timeout=WAIT)
        finally:
            result.forget()
        assert isinstance(value, str)
        return value

    async def arun(self, storage_key: str, target_ts: str) -> str:
        return await asyncio.to_thread(self.run, storage_key, target_ts)


@pytest.fixture(scope="module", params=["file", "s3"])
def worker(
    request: pytest.FixtureRequest,
    redis_databases: RedisDatabases,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    storage: dict[str, str] = {}
    if request.param == "file":
        storage["storage_url"] = tmp_path_factory.mktemp("objects").as_uri()
    else:
        s3: dict[str, str] = request.getfixturevalue("s3_settings")
        bucket = new_bucket(s3, "transcode")
        storage = {**s3, "storage_url": f"s3://{bucket}/objects"}
    with redis_databases.lease() as url:  # of our own: Celery's keys are flushed after
        settings = Settings.from_env({}, redis_url=url, **storage)
        with worker_app(settings) as app:
            yield Worker(app, settings)


@pytest.fixture
async def store(worker: Worker) -> AsyncIterator[ObjectStore]:
    s = open_store(worker.settings)
    yield s
    await s.close()


async def put(store: ObjectStore, data: bytes) -> str:
    """Store ``data`` as ingest does (content-addressed) and return its key."""
    key = instance_key(hashlib.sha256(data).hexdigest())
    await store.put_bytes(key, data)
    return key


@pytest.fixture
def fresh() -> Callable[[str], bytes]:
    """A corpus file made unique (new SOPInstanceUID), so no earlier test cached it."""

    def make(name: str) -> bytes:
        ds = pydicom.dcmread(CORPUS / name)
        uid = pydicom.uid.generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        out = io.BytesIO()
        ds.save_as(out)
        return out.getvalue()

    return make


@dataclass
class Encodes:
    """Calls of ``convert.encode`` (from any thread), optionally made slow."""

    count: int = 0
    delay: float = 0.0


@pytest.fixture
def encodes(monkeypatch: pytest.MonkeyPatch) -> Encodes:
    seen = Encodes()
    real = convert.encode
    lock = threading.Lock()

    def counting(ds: Any, target_ts: str) -> bytes:
        with lock:
            seen.count += 1
        time.sleep(seen.delay)
        return real(ds, target_ts)

    monkeypatch.setattr(convert, "encode", counting)
    return seen


SOURCES = [
    "1.2.840.10008.1.2.4.70.dcm",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90.dcm",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5.dcm",  # RLE Lossless
    "1.2.840.10008.1.2.4.80.dcm",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.50.dcm",  # JPEG Baseline (YBR_FULL_422 -> RGB)
]


@pytest.mark.parametrize("name", SOURCES)
async def test_compressed_to_explicit_vr_little_endian_keeps_the_pixels(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes], name: str
) -> None:
    source = fresh(name)
    key = await put(store, source)
    got = await worker.arun(key, EXPLICIT_LE)
    assert got == derived_key(key, EXPLICIT_LE)
    out = pydicom.dcmread(io.BytesIO(await store.get_bytes(got)))
    original = pydicom.dcmread(io.BytesIO(source))
    assert out.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert out.SOPInstanceUID == original.SOPInstanceUID
    assert not out["PixelData"].is_undefined_length
    assert np.array_equal(out.pixel_array, original.pixel_array)


@pytest.mark.parametrize("target", [IMPLICIT_LE, RLE])
async def test_other_targets(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes], target: str
) -> None:
    source = fresh("1.2.840.10008.1.2.4.90.dcm")
    key = await put(store, source)
    got = await worker.arun(key, target)
    out = pydicom.dcmread(io.BytesIO(await store.get_bytes(got)))
    assert out.file_meta.TransferSyntaxUID == target
    assert np.array_equal(out.pixel_array, pydicom.dcmread(io.BytesIO(source)).pixel_array)


async def test_the_second_call_is_served_from_the_cache(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes], encodes: Encodes
) -> None:
    key = await put(store, fresh("1.2.840.10008.1.2.5.dcm"))
    first = await worker.arun(key, EXPLICIT_LE)
    made = await store.get_bytes(first)
    assert encodes.count == 1
    second = await worker.arun(key, EXPLICIT_LE)
    assert second == first
    assert encodes.count == 1  # nothing decoded the second time
    assert await store.get_bytes(second) == made


async def test_identical_tasks_arriving_together_decode_once(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes], encodes: Encodes
) -> None:
    key = await put(store, fresh("1.2.840.10008.1.2.4.70.dcm"))
    encodes.delay = 1.0  # long enough that the second task arrives during the first
    keys = await asyncio.gather(worker.arun(key, EXPLICIT_LE), worker.arun(key, EXPLICIT_LE))
    assert keys == [derived_key(key, EXPLICIT_LE)] * 2
    assert encodes.count == 1


async def test_a_source_already_in_the_target_syntax_is_its_own_answer(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes], encodes: Encodes
) -> None:
    key = await put(store, fresh("1.2.840.10008.1.2.1.dcm"))
    assert await worker.arun(key, EXPLICIT_LE) == key
    assert encodes.count == 0
    assert not await store.exists(derived_key(key, EXPLICIT_LE))


async def test_an_unsupported_target_raises_unsupported_transfer_syntax(
    worker: Worker, store: ObjectStore, fresh: Callable[[str], bytes]
) -> None:
    key = await put(store, fresh("1.2.840.10008.1.2.5.dcm"))
    with pytest.raises(UnsupportedTransferSyntax) as raised:
        await worker.arun(key, JPEG_BASELINE)
    assert isinstance(raised.value, NotAcceptable)  # retrieve's 406
    assert JPEG_BASELINE in str(raised.value)
    assert not await store.exists(derived_key(key, JPEG_BASELINE))


async def test_a_source_no_decoder_reads_raises_unsupported_transfer_syntax(
    worker: Worker, store: ObjectStore
) -> None:
    # 12-bit JPEG Extended: neither pylibjpeg nor Pillow decodes this one
    key = await put(store, (CORPUS / "1.2.840.10008.1.2.4.51.dcm").read_bytes())
    with pytest.raises(UnsupportedTransferSyntax):
        await worker.arun(key, EXPLICIT_LE)


async def test_a_missing_source_raises_object_not_found(worker: Worker) -> None:
    with pytest.raises(ObjectNotFound):
        await worker.arun(instance_key("0" * 64), EXPLICIT_LE)


def test_a_running_worker_beats_and_a_stopped_one_stops_beating(
    redis_databases: RedisDatabases, tmp_path: Path
) -> None:
    """The heartbeat senders check (issue 15): the worker's bootstep keeps the key alive
    (with a TTL of ALIVE_TTL) while it runs, and lets it expire once stopped. The step
    on its own: a second Celery worker in this process would share the first one's
    global shutdown flag."""
    from types import SimpleNamespace

    import redis

    from tessera.shared.transcode.contract import ALIVE_TTL, HEARTBEAT, alive_key
    from tessera.transcode.heartbeat import Heartbeat

    with redis_databases.lease() as url:
        settings = Settings.from_env({}, redis_url=url, storage_url=tmp_path.as_uri())
        worker = SimpleNamespace(app=SimpleNamespace(tessera_settings=settings))
        client = redis.Redis.from_url(url)
        key = alive_key(settings.shard)
        step = Heartbeat(worker)
        try:
            step.start(worker)
            deadline = time.monotonic() + HEARTBEAT * 2
            while not client.exists(key):
                assert time.monotonic() < deadline, "no heartbeat"
                time.sleep(0.05)
            assert 0 < client.ttl(key) <= ALIVE_TTL
            time.sleep(ALIVE_TTL + 0.5)  # renewed meanwhile
            assert client.exists(key)
            step.stop(worker)
            deadline = time.monotonic() + ALIVE_TTL + 2
            while client.exists(key):
                assert time.monotonic() < deadline, "the heartbeat outlived its worker"
                time.sleep(0.2)
        finally:
            step.stop(worker)
            client.close()


def test_the_worker_runs_the_heartbeat_step(worker: Worker) -> None:
    import redis

    from tessera.shared.transcode.contract import alive_key

    client = redis.Redis.from_url(worker.settings.redis_url)
    try:
        assert client.exists(alive_key(worker.settings.shard))
    finally:
        client.close()
