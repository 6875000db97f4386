r"""The index job queue: a durable, acknowledged queue on a Redis Stream.

Ingest ``send``s :class:`~tessera.shared.messages.IndexJob`\ s and collects the
replies on one list per STOW request (``wait_replies``). Index workers read jobs through a consumer
group; a job stays pending until the worker ``ack``s it, which it does only after the
job's transaction has committed. A worker that restarts first takes back its own
pending jobs; jobs pending on a consumer that is gone are claimed by any worker once
they have been idle for ``claim_idle`` seconds (XAUTOCLAIM). Redelivery is safe
because indexing an instance twice leaves one row.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from tessera.shared.messages import IndexJob, IndexReply
from tessera.shared.storage.guard import UNPIN, pin_key

log = logging.getLogger(__name__)

GROUP = "index"
REPLY_TTL = 600  # seconds a reply waits for an ingest that may have given up


def jobs_stream(shard: str) -> str:
    return f"tessera:{shard}:index:jobs"


def reply_key(shard: str, request_id: str) -> str:
    """The list on which one STOW request collects the replies to its jobs."""
    return f"tessera:{shard}:index:reply:{request_id}"


@dataclass(frozen=True)
class Delivery:
    """A job as delivered: its stream entry id, and the job (None if unreadable)."""

    entry_id: str
    job: IndexJob | None
    error: str = ""


def blocking_client(url: str, wait_seconds: float, **kwargs: Any) -> aioredis.Redis:
    """A Redis client for a service that blocks up to ``wait_seconds`` on a reply: its
    socket timeout (redis-py's default is 5 s) is longer than the wait it serves, so a
    slow index is reported as such (0xA700), not cut into a connection error."""
    return aioredis.from_url(url, socket_timeout=wait_seconds + 5.0, **kwargs)


class IndexQueue:
    def __init__(self, redis: aioredis.Redis, shard: str) -> None:
        self.redis = redis
        self.shard = shard
        self.stream = jobs_stream(shard)

    async def send(self, job: IndexJob) -> str:
        entry_id = await self.redis.xadd(self.stream, {"job": job.dumps()})
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def wait_replies(
        self, reply_to: str, count: int, wait_seconds: float
    ) -> list[IndexReply]:
        """Collect up to ``count`` replies from the list ``reply_to``; what arrived when
        ``wait_seconds`` ran out (fewer than ``count`` means the index did not commit in time).

        Bounded by ``wait_seconds`` whatever Redis does: a Redis that stalls or drops the
        connection ends the wait early with what arrived (the caller reports the rest as
        not committed in time, 0xA700), it never becomes the caller's error. The client's
        own socket timeout must exceed ``wait_seconds`` (:func:`blocking_client`).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        replies: list[IndexReply] = []
        while len(replies) < count:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(left + 1.0):
                    got = await self.redis.blpop([reply_to], timeout=max(left, 0.01))
            except (TimeoutError, RedisError) as e:
                log.warning("waiting for index replies on %s: %s", reply_to, e)
                break
            if got is None:
                break
            replies.append(IndexReply.loads(got[1]))
        return replies

    async def depth(self) -> int:
        """Jobs not yet acknowledged (waiting or in progress)."""
        return int(await self.redis.xlen(self.stream))


class IndexConsumer:
    """One index worker's view of the queue."""

    def __init__(
        self, redis: aioredis.Redis, shard: str, consumer: str, claim_idle: float = 15.0
    ) -> None:
        self.redis = redis
        self.shard = shard
        self.stream = jobs_stream(shard)
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle * 1000)
        # abandoned jobs are looked for this often, not before every read: a job is
        # abandoned only after claim_idle seconds, and XAUTOCLAIM is a round trip
        self.claim_every = min(1.0, claim_idle / 4)
        self._claimed_at = -math.inf
        self._own_pending_done = False

    def reset(self) -> None:
        """Read our own unacknowledged jobs again first (after a failed batch)."""
        self._own_pending_done = False

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def read(self, count: int, block: float) -> list[Delivery]:
        """Up to ``count`` jobs: first our own unacknowledged ones (after a restart),
        then jobs abandoned by dead consumers, then new ones (blocking ``block`` s; 0:
        only those already there)."""
        if not self._own_pending_done:
            entries = await self._readgroup("0", count, None)
            if entries:
                return entries
            self._own_pending_done = True
        now = time.monotonic()
        if now - self._claimed_at >= self.claim_every:
            claimed = await self._autoclaim(count)
            if claimed:
                return claimed  # there may be more: look again next time
            self._claimed_at = now
        block = min(block, self.claim_every)  # back in time for the next look
        # BLOCK 0 would wait for ever: no block at all is what 0 means here
        return await self._readgroup(">", count, int(block * 1000) or None)

    async def _readgroup(self, start: str, count: int, block_ms: int | None) -> list[Delivery]:
        # RESP2 reply: [(stream, [(entry_id, {field: value}), ...]), ...]
        resp: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        out: list[Delivery] = []
        for _stream, entries in resp or []:
            out.extend(_delivery(eid, fields) for eid, fields in entries)
        return out

    async def _autoclaim(self, count: int) -> list[Delivery]:
        resp = await self.redis.xautoclaim(
            self.stream, GROUP, self.consumer, self.claim_idle_ms, start_id="0-0", count=count
        )
        entries = resp[1] if resp else []
        if entries:
            log.warning("claimed %d index job(s) abandoned by another worker", len(entries))
        return [_delivery(eid, fields) for eid, fields in entries if fields]

    async def ack(self, entry_ids: list[str]) -> None:
        """Acknowledge and drop processed jobs (call only after their commit)."""
        await self.reply_and_ack([], entry_ids)

    async def reply(self, reply_to: str, reply: IndexReply) -> None:
        await self.reply_and_ack([(reply_to, reply)], [])

    async def reply_and_ack(
        self,
        replies: list[tuple[str, IndexReply]],
        entry_ids: list[str],
        unpin: Sequence[str] = (),
    ) -> None:
        """Answer each ``(reply_to, reply)``, then acknowledge and drop ``entry_ids``: one
        MULTI/EXEC, so one round trip for a whole batch (call only after its commit).
        ``unpin``: storage keys whose writer's pin ends with this answer (the jobs asked
        it, :attr:`IndexJob.unpin`; :mod:`tessera.shared.storage.guard`)."""
        if not replies and not entry_ids:
            return
        async with self.redis.pipeline(transaction=True) as p:
            for storage_key in unpin:
                p.eval(UNPIN, 1, pin_key(self.shard, storage_key))
            for key, reply in replies:
                p.rpush(key, reply.dumps())
                p.expire(key, REPLY_TTL)
            if entry_ids:
                p.xack(self.stream, GROUP, *entry_ids)
                p.xdel(self.stream, *entry_ids)
            await p.execute()


def _delivery(entry_id: bytes | str, fields: dict[bytes, bytes] | None) -> Delivery:
    eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    raw = (fields or {}).get(b"job")
    if raw is None:
        return Delivery(eid, None, "entry has no job field")
    try:
        return Delivery(eid, IndexJob.loads(raw))
    except Exception as e:  # a poison message must not wedge the worker
        return Delivery(eid, None, f"unreadable job: {e}")
