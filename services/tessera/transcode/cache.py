"""Derived objects made once: the storage cache and Redis lock the transcode tasks share.

A derived object (a converted instance, a decoded frame) is stored under an immutable key
that names the source object and the conversion, so once it exists it is the answer.
Identical tasks that arrive together do the work once: it runs under a Redis lock named
after the key, and whoever gets the lock second finds the object made. A lock whose
holder died expires after :data:`LOCK_TIMEOUT` seconds; a task that waited longer than
the transcode timeout does the work anyway rather than fail.

Tasks run their coroutine with :func:`run`: one event loop per worker thread (a
prefork child has one), kept from task to task with the store and the Redis client
opened on it, so a task does not pay a new loop, a new thread pool, a new Redis
connection (redis-py reads its package metadata for each) and a new S3 client (issue 12:
about half of a first rendering's time). Nothing is shared across threads or forked
processes: a child process, or a thread, or other settings (tests), get their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, open_store
from tessera.shared.transcode import lock_name

log = logging.getLogger(__name__)

# A lock whose holder died expires after this many seconds; longer than any conversion.
LOCK_TIMEOUT = 600

# make(store) -> the bytes to store under the key, or the key of an existing object
# to answer with instead (nothing stored)
Make = Callable[[ObjectStore], Awaitable[bytes | str]]


T = TypeVar("T")


class _Loop:
    """A worker thread's event loop and the clients opened on it."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key = key
        self.runner = asyncio.Runner()
        self.store: ObjectStore | None = None
        self.redis: aioredis.Redis | None = None
        self.closed = False

    def close(self) -> None:
        self.closed = True

        async def close_clients() -> None:
            if self.redis is not None:
                await self.redis.aclose()
            if self.store is not None:
                await self.store.close()

        try:
            self.runner.run(close_clients())
        finally:
            self.runner.close()


_local = threading.local()
_opened: list[_Loop] = []  # every loop of this process, closed when the worker stops
_opened_lock = threading.Lock()


def _after_fork() -> None:
    """A forked child (a prefork pool's) starts with no loop of its parent's threads (so
    none is ever shared across processes), and with a lock no thread of its own holds."""
    global _local, _opened_lock
    _local = threading.local()
    _opened_lock = threading.Lock()
    _opened.clear()


os.register_at_fork(after_in_child=_after_fork)


def close_loops() -> None:
    """Close the loops (and their clients) this process opened: at a worker's shutdown
    (Celery's worker_process_shutdown in a prefork child, worker_shutdown otherwise),
    once its tasks are done (never while a task runs on one of them)."""
    with _opened_lock:
        mine, _opened[:] = list(_opened), []

    def close_them() -> None:
        for loop in mine:
            with contextlib.suppress(Exception):
                loop.close()

    # in a thread of its own: the caller's thread may be running an event loop
    closer = threading.Thread(target=close_them, name="close-task-loops")
    closer.start()
    closer.join()


def close_own_loop() -> None:
    """Close the calling thread's loop and clients (a thread that is about to end)."""
    loop: _Loop | None = getattr(_local, "loop", None)
    if loop is None or loop.closed:
        return
    with _opened_lock:
        _opened[:] = [x for x in _opened if x is not loop]
    with contextlib.suppress(Exception):
        loop.close()


def run(settings: Settings, coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``'s result, run on this thread's loop for ``settings`` (made, or made
    again after a fork or for other settings, as needed)."""
    key = (settings.storage_url, settings.redis_url)
    loop: _Loop | None = getattr(_local, "loop", None)
    if loop is None or loop.key != key or loop.closed:
        if loop is not None:  # other settings (tests): this thread's old loop goes
            close_own_loop()
        loop = _local.loop = _Loop(key)
        with _opened_lock:
            _opened.append(loop)
    return loop.runner.run(coroutine)


def _clients(settings: Settings) -> tuple[ObjectStore, aioredis.Redis, bool]:
    """The store and Redis client of this thread's loop (kept), or new ones for this
    call only (True: close them after) when not run by :func:`run`."""
    loop: _Loop | None = getattr(_local, "loop", None)
    key = (settings.storage_url, settings.redis_url)
    if (
        loop is None
        or loop.key != key
        or loop.closed
        or loop.runner.get_loop() is not asyncio.get_running_loop()
    ):
        return open_store(settings), aioredis.Redis.from_url(settings.redis_url), True
    if loop.store is None:
        loop.store = open_store(settings)
    if loop.redis is None:
        # kept from task to task: a connection Redis closed meanwhile (restarted) is
        # opened again once, rather than failing the task that meets it
        loop.redis = aioredis.Redis.from_url(
            settings.redis_url,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    return loop.store, loop.redis, False


async def produce_once(
    settings: Settings,
    key: str,
    make: Make,
    answer: Callable[[str, bytes], None] | None = None,
) -> str:
    """``key`` once the object under it exists, made by ``make`` if it did not.

    ``answer(key, made)``: called with what ``make`` made before it is written to storage
    (still under the lock), for a caller that serves the bytes itself (the render lane)."""
    store, redis, own = _clients(settings)
    try:
        # no look before the lock: whoever asks (retrieve) has just found the key missing,
        # and the look under the lock below is the one that counts
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
            if answer is not None:
                answer(key, made)
            await store.put_bytes(key, made)
            return key
        finally:
            if locked:
                try:
                    await lock.release()
                except LockError:
                    log.warning("%s: the lock expired before the conversion ended", key)
    finally:
        if own:
            await redis.aclose()
            await store.close()
