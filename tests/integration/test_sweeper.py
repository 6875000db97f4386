"""The sweeper (issue 15) on real PostgreSQL, Redis and storage (a local folder, whose
modification times a test can set, and the S3 API server): orphans, caches of no
instance and temporaries are removed once older than the grace period; referenced
objects, young ones and pinned ones are not; a stopped pass resumes; and a STOW racing
the sweeper for an orphan with the same bytes never loses its object."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tessera.index.sweeper import Sweeper
from tessera.index.worker import IndexWorker
from tessera.index.writer import index_instances
from tessera.ingest.app import create_app
from tessera.shared.db.pool import create_pool
from tessera.shared.settings import Settings
from tessera.shared.storage import (
    ObjectStore,
    derived_key,
    instance_key,
    instance_keys,
    open_store,
    rendered_key,
)
from tessera.shared.storage.guard import ObjectGuard
from tests.support.corpus import FLAIR, describe
from tests.support.dicomgen import make_instance, multipart
from tests.support.retrieve import asgi_client, running

EVRLE = "1.2.840.10008.1.2.1"
OLD = time.time() - 2 * 86400


class Shard:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, store: ObjectStore) -> None:
        self.settings = settings
        self.pool = pool
        self.store = store
        self.redis = aioredis.from_url(settings.redis_url)
        self.guard = ObjectGuard(self.redis, settings.shard, pin_ttl=60)

    def sweeper(self, grace: float = 3600, dry_run: bool = False) -> Sweeper:
        return Sweeper(self.pool, self.store, self.guard, grace, dry_run)

    def age(self, key: str) -> None:
        """Make a local object two days old (what S3 cannot be told)."""
        os.utime(Path(self.settings.storage_url.removeprefix("file://")) / key, (OLD, OLD))


@pytest.fixture(params=["file", "s3"])
async def shard(
    request: pytest.FixtureRequest,
    database: str,
    redis_db: str,
    tmp_path: Path,
    s3_settings: dict[str, str],
    s3_bucket: str,
) -> AsyncIterator[Shard]:
    storage = (tmp_path / "objects").as_uri() if request.param == "file" else f"s3://{s3_bucket}"
    settings = Settings(
        database_url=database,
        redis_url=redis_db,
        storage_url=storage,
        shard=f"sweep-{uuid.uuid4().hex[:8]}",
        index_timeout=20,
        **(s3_settings if request.param == "s3" else {}),  # type: ignore[arg-type]
    )
    pool = await create_pool(database, max_size=4)
    store = open_store(settings)
    s = Shard(settings, pool, store)
    yield s
    await s.redis.aclose()
    await store.close()
    await pool.close()


async def _orphans_and_rows(shard: Shard) -> tuple[list[str], list[str], list[str]]:
    """Two indexed instances with caches, two orphan instance objects (one with caches),
    and a cache whose instance is gone altogether: (referenced, orphans, orphan caches)."""
    described = [describe(p) for p in FLAIR[:2]]
    referenced, caches = [], []
    for data, inst in described:
        await shard.store.put_bytes(inst.storage_key, data.data)
        await shard.store.put_bytes(derived_key(inst.storage_key, EVRLE), b"cache")
        referenced += [inst.storage_key, derived_key(inst.storage_key, EVRLE)]
    async with shard.pool.acquire() as conn:
        await index_instances(conn, [inst for _, inst in described])
    orphans = [instance_key("e" * 64), instance_key("f" * 64)]
    for key in orphans:
        await shard.store.put_bytes(key, b"orphan")
    caches = [
        derived_key(orphans[0], EVRLE),
        rendered_key(instance_key("d" * 64), 1, "0" * 16, "jpg"),
    ]
    for key in caches:
        await shard.store.put_bytes(key, b"cache")
    return referenced, orphans, caches


async def _keys(store: ObjectStore) -> set[str]:
    return {o.key async for o in store.list_objects("")}


async def test_orphans_caches_and_temporaries_go_referenced_objects_stay(shard: Shard) -> None:
    referenced, orphans, caches = await _orphans_and_rows(shard)
    assert not set(orphans + caches) & set(referenced)
    if shard.settings.storage_url.startswith("s3"):
        s3 = await shard.store._s3()  # type: ignore[attr-defined]
        await s3.create_multipart_upload(Bucket=shard.store.bucket, Key=instance_key("c" * 64))  # type: ignore[attr-defined]
    else:
        folder = Path(shard.settings.storage_url.removeprefix("file://")) / "instances"
        (folder / ".put-killed").write_bytes(b"half written")
    before = await _keys(shard.store)

    young = await shard.sweeper(grace=3600).sweep()  # all young: nothing to remove...
    if shard.settings.storage_url.startswith("s3"):
        # ...but moto lists every multipart upload as initiated on 2010-11-10 (a constant
        # in moto/s3/responses.py), so its temporary is old whatever the test does
        assert young == {"temporary": 1}
        await s3.create_multipart_upload(Bucket=shard.store.bucket, Key=instance_key("c" * 64))  # type: ignore[attr-defined]
    else:
        assert young == {}
    dry = await shard.sweeper(grace=0, dry_run=True).sweep()
    assert dry == {"orphan": 2, "derived": 2, "temporary": 1}
    assert await _keys(shard.store) == before  # a dry run removes nothing

    found = await shard.sweeper(grace=0).sweep()
    # the orphan's own cache went with it: one cache left for the derived phase
    assert found == {"orphan": 2, "derived": 1, "temporary": 1}
    assert await _keys(shard.store) == set(referenced)
    assert [t async for t in shard.store.temporaries()] == []
    progress = await shard.pool.fetchrow("SELECT phase, finished_at FROM sweep_progress")
    assert progress["phase"] == "done" and progress["finished_at"] is not None
    assert await shard.sweeper(grace=0).sweep() == {}  # the next pass finds nothing


async def test_objects_under_the_earlier_two_level_layout_are_swept_as_referenced(
    shard: Shard,
) -> None:
    """Rows stored before the one-level layout (instance_key) keep their two-level keys:
    such an object and its caches stay while its row does, and go with the row."""
    data, inst = describe(FLAIR[0])
    legacy = instance_keys(inst.sha256)[1]
    assert legacy == f"instances/{inst.sha256[:2]}/{inst.sha256[2:4]}/{inst.sha256}.dcm"
    assert instance_key(inst.sha256) == f"instances/{inst.sha256[:2]}/{inst.sha256}.dcm"
    inst = dataclasses.replace(inst, storage_key=legacy)
    kept = [legacy, derived_key(legacy, EVRLE), rendered_key(legacy, 1, "0" * 16, "jpg")]
    for key in kept:
        await shard.store.put_bytes(key, data.data if key == legacy else b"cache")
    async with shard.pool.acquire() as conn:
        await index_instances(conn, [inst])
    assert await shard.sweeper(grace=0).sweep() == {}
    assert await _keys(shard.store) == set(kept)

    await shard.pool.execute("DELETE FROM instance WHERE storage_key = $1", legacy)
    # the object goes in the orphan phase, its caches with it
    assert await shard.sweeper(grace=0).sweep() == {"orphan": 1}
    assert await _keys(shard.store) == set()


async def test_a_pinned_orphan_is_kept_until_unpinned(shard: Shard) -> None:
    key = instance_key("a" * 64)
    await shard.store.put_bytes(key, b"a STOW is about to reference this")
    await shard.guard.pin(key)
    assert await shard.sweeper(grace=0).sweep() == {}
    assert await shard.store.exists(key)
    await shard.guard.unpin(key)
    assert await shard.sweeper(grace=0).sweep() == {"orphan": 1}
    assert not await shard.store.exists(key)


async def test_a_stopped_pass_resumes_after_the_last_batch_swept(shard: Shard) -> None:
    keys = [instance_key(c * 64) for c in "abcd"]
    for key in keys:
        await shard.store.put_bytes(key, b"orphan")
    # a pass stopped after sweeping the first two (their objects came back meanwhile)
    await shard.pool.execute(
        "INSERT INTO sweep_progress (phase, after_key) VALUES ('instances', $1)", keys[1]
    )
    assert await shard.sweeper(grace=0).sweep() == {"orphan": 2}
    assert [await shard.store.exists(k) for k in keys] == [True, True, False, False]
    assert await shard.sweeper(grace=0).sweep() == {"orphan": 2}  # a new pass: all


class _Paused:
    """The sweeper's store, stopping after listing until the test lets it go on."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.listed = asyncio.Event()
        self.go_on = asyncio.Event()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._store, name)

    async def list_objects(self, prefix: str, start_after: str = ""):  # type: ignore[no-untyped-def]
        found = [o async for o in self._store.list_objects(prefix, start_after)]
        if prefix == "instances/" and found:
            self.listed.set()
            await self.go_on.wait()
        for o in found:
            yield o


@pytest.fixture
async def ingest(shard: Shard) -> AsyncIterator:
    """The real ingest app and a real index worker (in this process) on the shard."""
    worker_redis = aioredis.from_url(shard.settings.redis_url)
    worker = IndexWorker(shard.settings, shard.pool, worker_redis)
    task = asyncio.create_task(worker.run())
    app = create_app(shard.settings)
    async with running(app), asgi_client(app) as client:
        yield client
    worker.stopping.set()
    await asyncio.wait_for(task, 30)
    await worker_redis.aclose()


async def _stow(client, data: bytes):  # type: ignore[no-untyped-def]
    body, ctype = multipart([data])
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    return r


@pytest.mark.parametrize("shard", ["file"], indirect=True)
async def test_a_stow_of_an_orphans_bytes_while_the_sweeper_removes_it_keeps_its_object(
    shard: Shard, ingest
) -> None:
    """The interleavings that would lose an acknowledged instance without the guard,
    forced, then left to chance twenty times: every stored instance's object is there."""
    # 1. the sweeper lists the orphan, then the STOW finds it present (and pins it)
    data = make_instance()
    key = instance_key(hashlib.sha256(data).hexdigest())
    await shard.store.put_bytes(key, data)
    shard.age(key)
    paused = _Paused(shard.store)
    sweeper = Sweeper(shard.pool, paused, shard.guard, 3600)  # type: ignore[arg-type]
    sweeping = asyncio.create_task(sweeper.sweep())
    await paused.listed.wait()
    await _stow(ingest, data)
    paused.go_on.set()
    assert await sweeping == {}
    assert await shard.store.get_bytes(key) == data

    # 2. the sweeper has claimed the orphan when the STOW comes: the STOW waits, then
    # finds it gone and writes it again
    data = make_instance()
    key = instance_key(hashlib.sha256(data).hexdigest())
    await shard.store.put_bytes(key, data)
    assert await shard.guard.claim(key)
    stow = asyncio.create_task(_stow(ingest, data))
    await asyncio.sleep(0.5)
    assert not stow.done()  # waiting for the claim
    await shard.store.delete_instance(key)
    await shard.guard.release(key)
    await stow
    assert await shard.store.get_bytes(key) == data

    # 3. by chance
    for _ in range(20):
        data = make_instance()
        key = instance_key(hashlib.sha256(data).hexdigest())
        await shard.store.put_bytes(key, data)
        shard.age(key)
        await asyncio.gather(_stow(ingest, data), shard.sweeper(grace=3600).sweep())
        assert await shard.store.get_bytes(key) == data
        assert await shard.pool.fetchval("SELECT 1 FROM instance WHERE storage_key = $1", key)
