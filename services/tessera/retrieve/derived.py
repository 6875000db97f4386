"""Derived objects (transcoded instances and frames, renderings) produced at most once.

A derived object lives in storage under a key computed from its source and parameters.
:meth:`DerivedObjects.get` returns the key when the object is stored; otherwise it runs
``produce`` (which asks a transcode worker to write it) once per key in this process:
identical requests arriving together share the one task, and across processes the
workers' own lock (``tessera.transcode.cache``) keeps the work single.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from tessera.shared.storage import ObjectStore


class DerivedObjects:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._inflight: dict[str, asyncio.Task[str]] = {}

    async def get(self, key: str, produce: Callable[[], Coroutine[Any, Any, str]]) -> str:
        """``key`` once the object is stored, producing it first if it is not."""
        if await self.store.exists(key):
            return key
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(produce())
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        # shielded: a client that goes away does not cancel work others wait for
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[str]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaits is not logged twice
