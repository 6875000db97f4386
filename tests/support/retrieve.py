"""Apps under test in process: :func:`running` starts one (its lifespan), :func:`asgi_client`
calls it through httpx's ASGI transport; and a store that counts what is read from it.
The retrieve app's fixtures for the WADO-RS tests that need no transcode worker are in
``tests/integration/retrieve/conftest.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette

from tessera.retrieve.context import Context
from tessera.shared.storage import ObjectStore

BASE = "http://testserver"


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """``app`` with its lifespan run (pools and stores open) while the block runs."""
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def asgi_client(app: Starlette, base_url: str = BASE) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``app`` in process, through httpx's ASGI transport."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
        yield client


class CountingStore:
    """The real store, counting what is read from it."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.reads: list[tuple[str, int, int | None]] = []
        self.bytes_read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        self.reads.append((key, start, length))
        data = await self.inner.get_bytes(key, start, length)
        self.bytes_read += len(data)
        return data

    async def stream(self, key: str, start: int = 0, length: int | None = None, **kw: Any):
        self.reads.append((key, start, length))
        async for chunk in self.inner.stream(key, start, length, **kw):
            self.bytes_read += len(chunk)
            yield chunk


def counting(app: Starlette) -> CountingStore:
    """Put a :class:`CountingStore` around the retrieve app's store; it."""
    ctx: Context = app.state.retrieve
    store = CountingStore(ctx.store)
    app.state.retrieve = dataclasses.replace(ctx, store=store)
    return store
