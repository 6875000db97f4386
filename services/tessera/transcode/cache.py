"""Derived objects made once: the storage cache and Redis lock the transcode tasks share.

A derived object (a converted instance, a decoded frame) is stored under an immutable key
that names the source object and the conversion, so once it exists it is the answer.
Identical tasks that arrive together do the work once: it runs under a Redis lock named
after the key, and whoever gets the lock second finds the object made. A lock whose
holder died expires after :data:`LOCK_TIMEOUT` seconds; a task that waited longer than
the transcode timeout does the work anyway rather than fail.

The store and the Redis client are opened and closed inside the calling task's event
loop (one ``asyncio.run`` per task), never shared across loops or forked processes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import LockError

from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, open_store
from tessera.shared.transcode import lock_name

log = logging.getLogger(__name__)

# A lock whose holder died expires after this many seconds; longer than any conversion.
LOCK_TIMEOUT = 600

# make(store) -> the bytes to store under the key, or the key of an existing object
# to answer with instead (nothing stored)
Make = Callable[[ObjectStore], Awaitable[bytes | str]]


async def produce_once(settings: Settings, key: str, make: Make) -> str:
    """``key`` once the object under it exists, made by ``make`` if it did not."""
    store = open_store(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        if await store.exists(key):
            return key
        lock = redis.lock(
            lock_name(settings.shard, key),
            timeout=LOCK_TIMEOUT,
            blocking_timeout=settings.transcode_timeout,
        )
        locked = await lock.acquire()
        if not locked:
            log.warning(
                "%s: still locked after %gs, converting anyway", key, settings.transcode_timeout
            )
        try:
            if await store.exists(key):  # made while we waited for the lock
                return key
            made = await make(store)
            if isinstance(made, str):
                return made
            await store.put_bytes(key, made)
            return key
        finally:
            if locked:
                try:
                    await lock.release()
                except LockError:
                    log.warning("%s: the lock expired before the conversion ended", key)
    finally:
        await redis.aclose()
        await store.close()
