"""The index service's HTTP app: QIDO-RS for this shard, health and readiness.

``create_app(settings)`` builds it; the lifespan opens the shard's asyncpg pool
(``app.state.pool``) and closes it on shutdown. ``/readyz`` is ready when the database
answers ``SELECT 1``. Beside QIDO-RS it serves the internal routes of
:mod:`tessera.index.delete` (DELETE of a study, series or instance; the study lists the
rebalance job needs).

The pool's sessions plan as :data:`tessera.shared.qido.sql.SESSION_SETTINGS` says: each
search for its own values (asyncpg prepares a statement once per connection, and a
generic plan cannot tell ``ILIKE '%smi%'`` from ``ILIKE '%'``), without parallel workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from tessera.index import changefeed, delete, labels, qido
from tessera.shared.db.pool import create_pool
from tessera.shared.http import make_app
from tessera.shared.levels import Layout
from tessera.shared.qido.sql import SESSION_SETTINGS
from tessera.shared.settings import Settings


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings.database_url, server_settings=SESSION_SETTINGS)
        app.state.store = None  # opened by the first internal DELETE of a study
        try:
            yield
        finally:
            await app.state.pool.close()
            if app.state.store is not None:
                await app.state.store.close()
                await app.state.guard.redis.aclose()

    async def ready() -> dict[str, str]:
        async with app.state.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        return {"database": "ok"}

    app = make_app(
        [*qido.routes(), *delete.routes(), *labels.routes(), *changefeed.routes()],
        lifespan=lifespan,
        ready=ready,
        shard=settings,
    )
    app.state.settings = settings
    app.state.layout = Layout.parse(settings.qido_extra_attributes)
    return app
