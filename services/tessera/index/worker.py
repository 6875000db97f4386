"""The index worker: consumes index jobs from the shard's queue and commits them.

Run as ``python -m tessera.index.worker``. Each loop reads a batch of jobs, writes all
their instances in one transaction (:func:`~tessera.index.writer.index_instances`),
replies to each job's STOW request, and only then acknowledges the jobs. If the worker
dies anywhere before the acknowledgement, the jobs are delivered again (to the restarted
worker, or to another one after ``index_claim_idle`` seconds); indexing is idempotent,
so a redelivered job changes nothing and answers the same.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions

from tessera.index.worker_health import health_server
from tessera.index.writer import index_instances
from tessera.shared import malloc, metrics
from tessera.shared.db.pool import create_pool
from tessera.shared.levels import Layout
from tessera.shared.messages import IndexJob, IndexReply, InstanceOutcome
from tessera.shared.queue import Delivery, IndexConsumer
from tessera.shared.settings import Settings

log = logging.getLogger("tessera.index.worker")

# Errors that mean "the database or Redis is not there right now": keep the jobs, retry
# later (issue 15: a Redis stall of a few seconds made the worker exit, and with it the
# archive's indexing)
_TRANSIENT = (
    OSError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.TooManyConnectionsError,
)


class IndexWorker:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.pool = pool
        self.layout = Layout.parse(settings.qido_extra_attributes)
        self.consumer = IndexConsumer(
            redis, settings.shard, settings.index_consumer, settings.index_claim_idle
        )
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        log.info("index worker %s consuming shard %s", self.consumer.consumer, self.settings.shard)
        backoff = 0.5
        grouped = False
        while not self.stopping.is_set():
            try:
                if not grouped:
                    await self.consumer.ensure_group()
                    grouped = True
                size = self.settings.index_batch_size
                deliveries = await self.consumer.read(size, block=1.0)
                if deliveries and len(deliveries) < size and self.settings.index_linger > 0:
                    await asyncio.sleep(self.settings.index_linger)
                    deliveries += await self.consumer.read(size - len(deliveries), block=0)
                if deliveries:
                    await self.process(deliveries)
                backoff = 0.5
            except _TRANSIENT as e:
                log.warning("index batch not committed (%s); retrying in %.1fs", e, backoff)
                self.consumer.reset()  # take our unacknowledged jobs again
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def process(self, deliveries: list[Delivery]) -> None:
        started = time.perf_counter()
        unreadable = [d for d in deliveries if d.job is None]
        for d in unreadable:
            log.error("dropping index job %s: %s", d.entry_id, d.error)
        jobs = [d for d in deliveries if d.job is not None]
        try:
            outcomes = await self._commit([d.job for d in jobs if d.job is not None])
        except _TRANSIENT:
            raise
        except Exception:
            # Not the database being away: something in one of the jobs. Commit them one
            # by one so the bad one fails alone instead of wedging the queue.
            log.exception("index batch failed; committing its %d job(s) one by one", len(jobs))
            outcomes = [await self._commit_alone(d.job) for d in jobs if d.job is not None]
        replies = []
        unpin = []
        for d, job_outcomes in zip(jobs, outcomes, strict=True):
            assert d.job is not None
            replies.append((d.job.reply_to, IndexReply(d.job.job_id, job_outcomes)))
            if d.job.unpin:
                unpin += [inst.storage_key for inst in d.job.instances]
        await self.consumer.reply_and_ack(replies, [d.entry_id for d in deliveries], unpin)
        metrics.INDEX_BATCH_LATENCY.observe(time.perf_counter() - started)
        metrics.INDEX_JOBS.labels("processed").inc(len(jobs))
        metrics.INDEX_JOBS.labels("unreadable").inc(len(unreadable))

    async def _commit_alone(self, job: IndexJob) -> tuple[InstanceOutcome, ...]:
        try:
            return (await self._commit([job]))[0]
        except _TRANSIENT:
            raise
        except Exception as e:
            if len(job.instances) > 1:
                # a job of several (a STOW's group, tessera.ingest.to_index): each
                # instance alone, so that the bad one fails alone
                log.exception(
                    "index job %s failed; committing its %d instances one by one",
                    job.job_id,
                    len(job.instances),
                )
                one_by_one = [
                    await self._commit_alone(dataclasses.replace(job, instances=(inst,)))
                    for inst in job.instances
                ]
                return tuple(outcome for (outcome,) in one_by_one)
            log.exception("index job %s failed", job.job_id)
            reason = f"index failed: {type(e).__name__}: {e}"
            return tuple(
                InstanceOutcome(i.sop_instance_uid, "failed", reason) for i in job.instances
            )

    async def _commit(self, jobs: list[IndexJob]) -> list[tuple[InstanceOutcome, ...]]:
        """One transaction for the batch; outcomes split back per job."""
        if not jobs:
            return []
        policies = {job.duplicate_policy for job in jobs}
        if len(policies) > 1:  # jobs asking for different policies commit separately
            out: list[tuple[InstanceOutcome, ...]] = []
            for job in jobs:
                out.extend(await self._commit([job]))
            return out
        instances = [inst for job in jobs for inst in job.instances]
        flat = await index_instances(self.pool, instances, policies.pop(), self.layout)
        result, i = [], 0
        for job in jobs:
            result.append(tuple(flat[i : i + len(job.instances)]))
            i += len(job.instances)
        n = sum(1 for o in flat if o.outcome in ("stored", "replaced"))
        log.info("committed %d job(s), %d instance(s), %d new", len(jobs), len(flat), n)
        return result


async def main_async(settings: Settings) -> None:
    health = health_server(settings).start()  # probes answer while the pool connects
    pool = await create_pool(settings.database_url, max_size=4)
    redis = aioredis.from_url(settings.redis_url)
    worker = IndexWorker(settings, pool, redis)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await redis.aclose()
        await pool.close()
        health.stop()


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    malloc.tune()  # as the HTTP services (tessera.shared.serve)
    # uvloop (a dependency, as for the HTTP services) makes each asyncpg and Redis round
    # trip cheaper; plain asyncio where it cannot be imported
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_async(settings))
    else:
        uvloop.run(main_async(settings))


if __name__ == "__main__":
    main()
