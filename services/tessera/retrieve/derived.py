"""Derived objects (transcoded instances and frames, renderings) produced at most once.

A derived object lives in storage under a key computed from its source and parameters.
:meth:`DerivedObjects.get` returns the key when the object is stored; otherwise it runs
``produce`` (which asks a transcode worker to write it) once per key in this process:
identical requests arriving together share the one task, and across processes the
workers' own lock (``tessera.transcode.cache``) keeps the work single.
:meth:`DerivedObjects.made` does the same for a ``produce`` that may also answer the
object's bytes (the render lane does, before the object is in storage).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from tessera.shared.storage import ObjectStore

# the key, and the object's bytes when the producer answered them (the object may then
# not be in storage yet)
Made = tuple[str, bytes | None]


class DerivedObjects:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._inflight: dict[str, asyncio.Task[Made]] = {}

    async def get(self, key: str, produce: Callable[[], Coroutine[Any, Any, str]]) -> str:
        """``key`` once the object is stored, producing it first if it is not."""

        async def keyed() -> Made:
            return await produce(), None

        made_key, _ = await self.made(key, keyed)
        return made_key

    async def made(self, key: str, produce: Callable[[], Coroutine[Any, Any, Made]]) -> Made:
        """``(key, None)`` once the object is stored, or what ``produce`` answered: the
        key and, if it gave them, the object's bytes (serve those: the object may not be
        in storage yet)."""
        if await self.store.exists(key):
            return key, None
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(produce())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shielded: a client that goes away does not cancel work others wait for
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Made]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaits is not logged twice
