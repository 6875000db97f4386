"""The ingest service: STOW-RS for one shard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Route

from tessera.ingest.stow import StoreInstances
from tessera.shared.http import make_app
from tessera.shared.queue import IndexQueue, blocking_client
from tessera.shared.settings import Settings
from tessera.shared.storage import open_store
from tessera.shared.storage.guard import ObjectGuard


def create_app(settings: Settings) -> Starlette:
    store = open_store(settings)
    redis = blocking_client(settings.redis_url, settings.index_timeout, max_connections=256)
    queue = IndexQueue(redis, settings.shard)
    guard = ObjectGuard(redis, settings.shard, pin_ttl=settings.index_timeout + 60)
    stow = StoreInstances(settings, store, queue, guard)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await redis.aclose()
            await store.close()

    async def ready() -> dict[str, str]:
        await redis.ping()
        await store.check()
        return {"queue_depth": str(await queue.depth())}

    routes = [
        Route("/studies", stow.handle, methods=["POST"]),
        Route("/studies/{study}", stow.handle, methods=["POST"]),
    ]
    return make_app(routes, lifespan=lifespan, ready=ready, shard=settings)
