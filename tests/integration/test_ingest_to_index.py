"""A STOW's stored instances go to the index several to a job (tessera.ingest.to_index),
on a real Redis and PostgreSQL: a job when a group is full, when its first instance has
waited LINGER, and at the end; a job that cannot be queued fails each of its instances;
and the index worker, given a job of several with one bad instance, fails that one alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tessera.index.worker import IndexWorker
from tessera.ingest import to_index
from tessera.ingest.to_index import Stored, ToIndex
from tessera.shared.db.pool import create_pool
from tessera.shared.messages import IndexInstance, IndexJob
from tessera.shared.queue import Delivery, IndexConsumer, IndexQueue, reply_key
from tessera.shared.settings import Settings
from tessera.shared.storage import instance_key


def _stored(study: str, n: int) -> Stored:
    sha = uuid.uuid4().hex * 2
    return Stored(
        IndexInstance(
            study_instance_uid=study,
            series_instance_uid=study + ".1",
            sop_instance_uid=f"{study}.1.{n}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            storage_key=instance_key(sha),
            size=10,
            sha256=sha,
            metadata={"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Group^Test"}]}},
        ),
        written_now=True,
        warning=None,
    )


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_db)
    yield client
    await client.aclose()


@pytest.fixture
async def consumer(redis: aioredis.Redis) -> IndexConsumer:
    shard = "group-" + uuid.uuid4().hex[:8]
    consumer = IndexConsumer(redis, shard, "w1")
    await consumer.ensure_group()
    return consumer


def _jobs(deliveries: list[Delivery]) -> list[IndexJob]:
    return [d.job for d in deliveries if d.job is not None]


async def test_a_full_group_goes_at_once_and_the_rest_at_the_end(
    redis: aioredis.Redis, consumer: IndexConsumer
) -> None:
    study = f"2.25.{uuid.uuid4().int}"
    refused: list[Stored] = []
    sender = ToIndex(
        IndexQueue(redis, consumer.shard), "reply", "reject", lambda s, e: refused.append(s)
    )
    stored = [_stored(study, n) for n in range(to_index.GROUP + 3)]
    for s in stored[: to_index.GROUP]:
        sender.add(s)
    await asyncio.sleep(0.05)  # the full group's job is on its way, not waiting for LINGER
    (first,) = _jobs(await consumer.read(10, block=1.0))
    assert first.instances == tuple(s.instance for s in stored[: to_index.GROUP])
    assert first.unpin and first.reply_to == "reply"

    for s in stored[to_index.GROUP :]:
        sender.add(s)
    sent = await sender.close()
    (second,) = _jobs(await consumer.read(10, block=1.0))
    assert second.instances == tuple(s.instance for s in stored[to_index.GROUP :])
    assert sent == {first.job_id: stored[: to_index.GROUP], second.job_id: stored[to_index.GROUP :]}
    assert sender.count == len(stored) and refused == []


async def test_an_instance_waits_at_most_linger_for_its_group(
    redis: aioredis.Redis, consumer: IndexConsumer
) -> None:
    sender = ToIndex(IndexQueue(redis, consumer.shard), "reply", "reject", lambda s, e: None)
    one = _stored(f"2.25.{uuid.uuid4().int}", 1)
    sender.add(one)
    assert await consumer.read(10, block=0) == []  # waiting for others
    (job,) = _jobs(await consumer.read(10, block=to_index.LINGER + 2))
    assert job.instances == (one.instance,)
    assert await sender.close() == {job.job_id: [one]}


async def test_a_job_that_cannot_be_queued_fails_each_of_its_instances() -> None:
    gone = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    refused: list[tuple[Stored, Exception]] = []
    sender = ToIndex(IndexQueue(gone, "nowhere"), "reply", "reject",
                     lambda s, e: refused.append((s, e)))  # fmt: skip
    stored = [_stored(f"2.25.{uuid.uuid4().int}", n) for n in range(3)]
    for s in stored:
        sender.add(s)
    try:
        assert await sender.close() == {}
    finally:
        await gone.aclose()
    assert [s for s, _ in refused] == stored
    assert all(isinstance(e, OSError | aioredis.ConnectionError) for _, e in refused)


async def test_an_abandoned_request_sends_nothing_more(
    redis: aioredis.Redis, consumer: IndexConsumer
) -> None:
    sender = ToIndex(IndexQueue(redis, consumer.shard), "reply", "reject", lambda s, e: None)
    sender.add(_stored(f"2.25.{uuid.uuid4().int}", 1))
    sender.abandon()
    await asyncio.sleep(to_index.LINGER + 0.1)
    assert await consumer.read(10, block=0) == []
    assert await sender.close() == {}


async def test_one_bad_instance_of_a_job_fails_alone(
    database: str, redis_db: str, redis: aioredis.Redis
) -> None:
    """The batch fails (a value that is no JSON), the job alone fails, then each of its
    instances is committed alone: the two good ones are stored."""
    settings = Settings(database_url=database, redis_url=redis_db,
                        shard="group-" + uuid.uuid4().hex[:8])  # fmt: skip
    study = f"2.25.{uuid.uuid4().int}"
    good = [_stored(study, 1).instance, _stored(study, 3).instance]
    bad = _stored(study, 2).instance
    bad = dataclasses.replace(bad, metadata={"00100010": {"vr": "PN", "Value": [b"x"]}})
    reply_to = reply_key(settings.shard, uuid.uuid4().hex)
    job = IndexJob(job_id="j1", reply_to=reply_to, instances=(good[0], bad, good[1]))
    pool = await create_pool(database, max_size=2)
    try:
        worker = IndexWorker(settings, pool, redis)
        await worker.process([Delivery("0-1", job)])
        (reply,) = await IndexQueue(redis, settings.shard).wait_replies(reply_to, 1, 10)
        assert [o.outcome for o in reply.outcomes] == ["stored", "failed", "stored"]
        assert reply.outcomes[1].sop_instance_uid == bad.sop_instance_uid
        stored = await pool.fetchval(
            "SELECT count(*) FROM instance WHERE sop_instance_uid = ANY($1::text[])",
            [i.sop_instance_uid for i in good],
        )
        assert stored == 2
    finally:
        await pool.close()
