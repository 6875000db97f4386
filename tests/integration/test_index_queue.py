"""The index queue on a real Redis: ack after commit, redelivery, claiming from the dead."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from tessera.shared.messages import IndexInstance, IndexJob, IndexReply, InstanceOutcome
from tessera.shared.queue import IndexConsumer, IndexQueue, reply_key


def _job(reply_to: str, n: int = 1) -> IndexJob:
    insts = tuple(
        IndexInstance(
            study_instance_uid="1.2.3",
            series_instance_uid="1.2.3.4",
            sop_instance_uid=f"1.2.3.4.{i}",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            storage_key=f"instances/aa/bb/{i}.dcm",
            size=10,
            sha256="0" * 64,
            metadata={"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jörg"}]}},
        )
        for i in range(n)
    )
    return IndexJob(job_id=uuid.uuid4().hex, reply_to=reply_to, instances=insts)


@pytest.fixture
async def redis(redis_url: str):
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def shard() -> str:
    return "test-" + uuid.uuid4().hex[:8]


async def test_job_round_trip_keeps_unicode_metadata(redis, shard):
    queue = IndexQueue(redis, shard)
    consumer = IndexConsumer(redis, shard, "w1")
    await consumer.ensure_group()
    job = _job(reply_key(shard, "r1"), n=2)
    await queue.send(job)
    got = await consumer.read(10, block=1.0)
    assert [d.job for d in got] == [job]


async def test_unacknowledged_job_is_redelivered_to_restarted_worker(redis, shard):
    queue = IndexQueue(redis, shard)
    first = IndexConsumer(redis, shard, "w1")
    await first.ensure_group()
    jobs = [_job("x") for _ in range(3)]
    for j in jobs:
        await queue.send(j)
    got = await first.read(10, block=1.0)
    assert len(got) == 3
    # the worker "dies" here: nothing acknowledged. It restarts with the same name.
    restarted = IndexConsumer(redis, shard, "w1")
    again = await restarted.read(10, block=0.1)
    assert [d.job for d in again] == jobs
    await restarted.ack([d.entry_id for d in again])
    assert await queue.depth() == 0
    # after the ack nothing comes back
    assert await IndexConsumer(redis, shard, "w1").read(10, block=0.1) == []


async def test_job_of_a_dead_consumer_is_claimed_by_another_after_idle_time(redis, shard):
    queue = IndexQueue(redis, shard)
    dead = IndexConsumer(redis, shard, "dead")
    await dead.ensure_group()
    job = _job("x")
    await queue.send(job)
    assert len(await dead.read(10, block=1.0)) == 1
    other = IndexConsumer(redis, shard, "other", claim_idle=0.2)
    other._own_pending_done = True
    assert await other.read(10, block=0.05) == []  # not idle long enough yet
    await asyncio.sleep(0.3)
    claimed = await other.read(10, block=0.05)
    assert [d.job for d in claimed] == [job]


async def test_unreadable_entry_is_delivered_as_such_not_raised(redis, shard):
    consumer = IndexConsumer(redis, shard, "w1")
    await consumer.ensure_group()
    await redis.xadd(consumer.stream, {"job": b'{"v": 99}'})
    await redis.xadd(consumer.stream, {"junk": b"1"})
    got = await consumer.read(10, block=1.0)
    assert [d.job for d in got] == [None, None]
    assert "version" in got[0].error and "no job" in got[1].error


async def test_wait_replies_collects_until_count_or_deadline(redis, shard):
    queue = IndexQueue(redis, shard)
    consumer = IndexConsumer(redis, shard, "w1")
    key = reply_key(shard, "req")
    await consumer.reply(key, IndexReply("a", (InstanceOutcome("1.2", "stored"),)))
    replies = await queue.wait_replies(key, 2, wait_seconds=0.3)
    assert [r.job_id for r in replies] == ["a"]  # the second never came: deadline
    await consumer.reply(key, IndexReply("b", (InstanceOutcome("1.3", "unchanged"),)))
    replies = await queue.wait_replies(key, 1, wait_seconds=1)
    assert replies[0].outcomes[0].outcome == "unchanged"
    assert await redis.ttl(key) == -2 or await redis.ttl(key) > 0  # never left without TTL


async def test_the_answer_ends_the_writers_pins_in_the_same_step(redis, shard):
    """IndexJob.unpin: the worker's answer and the unpinning of each instance's object
    are one MULTI (the writer's pin lasts until its commit answered; storage.guard)."""
    from tessera.shared.storage.guard import ObjectGuard, pin_key

    guard = ObjectGuard(redis, shard, pin_ttl=60)
    consumer = IndexConsumer(redis, shard, "w1")
    await consumer.ensure_group()
    job = _job(reply_key(shard, "r1"), n=2)
    keys = [inst.storage_key for inst in job.instances]
    for key in [*keys, keys[0]]:  # the first object pinned by two writers
        await guard.pin(key)
    reply = IndexReply(job.job_id, ())
    await consumer.reply_and_ack([(job.reply_to, reply)], [], unpin=keys)
    assert int(await redis.get(pin_key(shard, keys[0]))) == 1  # the other writer's
    assert await redis.exists(pin_key(shard, keys[1])) == 0
    assert await redis.llen(job.reply_to) == 1
