"""``tessera.transcode.to_transfer_syntax``: an instance in another Transfer Syntax.

The result is stored under :func:`~tessera.shared.storage.derived_key` and the task
returns that key; retrieve streams it from storage like any stored object. A derived
object that exists is returned without decoding anything (the cache). Identical tasks
that arrive together decode once: the work runs under a Redis lock named after the
derived key, and whoever gets the lock second finds the object made.

A target :mod:`~tessera.transcode.convert` does not produce, or a source it cannot
decode, raises :class:`~tessera.shared.errors.UnsupportedTransferSyntax`, which Celery
returns to the caller as itself (retrieve answers 406); a missing source raises
:class:`~tessera.shared.errors.ObjectNotFound` (404).

The task body is synchronous (Celery prefork); the async object store and Redis client
are used inside one ``asyncio.run`` per task, opened and closed there, so no client is
shared across event loops or forked processes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from celery import shared_task
from redis.exceptions import LockError

from tessera.shared.settings import Settings
from tessera.shared.storage import derived_key, open_store
from tessera.transcode import convert
from tessera.transcode.celery_app import settings_of

log = logging.getLogger(__name__)

TASK_NAME = "tessera.transcode.to_transfer_syntax"
# A lock whose holder died expires after this many seconds; longer than any conversion.
LOCK_TIMEOUT = 600


def lock_name(derived: str) -> str:
    return f"tessera:transcode:{derived}"


@shared_task(name=TASK_NAME, bind=True)
def to_transfer_syntax(self: Any, storage_key: str, target_ts: str) -> str:
    """Key of the object stored under ``storage_key``, converted to ``target_ts``."""
    settings = settings_of(self.app)
    convert.check_target(target_ts)  # refuse before any I/O
    return asyncio.run(transcode_object(settings, storage_key, target_ts))


async def transcode_object(settings: Settings, storage_key: str, target_ts: str) -> str:
    """Convert (or find converted) the stored object; the key of the result."""
    derived = derived_key(storage_key, target_ts)
    store = open_store(settings)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        if await store.exists(derived):
            return derived
        lock = redis.lock(
            lock_name(derived),
            timeout=LOCK_TIMEOUT,
            blocking_timeout=settings.transcode_timeout,
        )
        locked = await lock.acquire()
        if not locked:
            log.warning(
                "%s: still locked after %gs, converting anyway",
                derived,
                settings.transcode_timeout,
            )
        try:
            if await store.exists(derived):  # made while we waited for the lock
                return derived
            data = await store.get_bytes(storage_key)
            ds = convert.read(data)
            source_ts = convert.source_syntax(ds)
            if source_ts == target_ts:
                return storage_key
            await store.put_bytes(derived, convert.encode(ds, target_ts))
            log.info("%s: converted %s -> %s", storage_key, source_ts, target_ts)
            return derived
        finally:
            if locked:
                try:
                    await lock.release()
                except LockError:
                    log.warning("%s: the lock expired before the conversion ended", derived)
    finally:
        await redis.aclose()
        await store.close()
