"""The retrieve service of a shard: WADO-RS (PS3.18 10.4) over the shard's index and storage.

Routes (the router proxies them under the public DICOMweb prefix, with
``X-Forwarded-*`` headers that :func:`~tessera.shared.http.public_base_url` honours):

    GET /studies/{study}                                       retrieve_study
    GET /studies/{study}/series/{series}                       retrieve_series
    GET /studies/{study}/series/{series}/instances/{instance}  retrieve_instance
    GET .../metadata (study, series, instance)                 retrieve_*_metadata
    GET .../instances/{instance}/bulk/{tag_path}               retrieve_bulkdata
    GET .../instances/{instance}/frames/{frame_list}           retrieve_frames
    GET .../rendered, .../thumbnail (study, series, instance,  retrieve_*_rendered,
        frames; PS3.18 10.4.1.1.3-4)                            retrieve_*_thumbnail
    GET /wado (WADO-URI, PS3.18 9)                             wado_uri
    GET /healthz, /readyz

The lifespan opens the PostgreSQL pool and the object store, and builds the Celery
client that asks transcode for conversions; readiness checks the database and storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette

from tessera.retrieve import bulkdata, frames, instances, metadata, rendered, wado_uri
from tessera.retrieve.context import Context
from tessera.retrieve.renderer import Renderer
from tessera.retrieve.transcoding import Transcoder
from tessera.shared.db.pool import create_pool
from tessera.shared.http import make_app
from tessera.shared.settings import Settings
from tessera.shared.storage import open_store
from tessera.shared.transcode.client import TranscodeClient


def create_app(settings: Settings) -> Starlette:
    state: dict[str, Context] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url)
        store = open_store(settings)
        client = TranscodeClient(settings)
        transcoder = Transcoder(client, store)
        renderer = Renderer(client, store)
        ctx = Context(settings, pool, store, transcoder, renderer=renderer)
        app.state.retrieve = state["ctx"] = ctx
        try:
            yield
        finally:
            state.clear()
            await client.aclose()
            await store.close()
            await pool.close()

    async def ready() -> dict[str, str]:
        ctx = state["ctx"]
        async with ctx.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        await ctx.store.check()
        return {"database": "ok", "storage": "ok"}

    return make_app(
        [
            *instances.routes,
            *metadata.routes,
            *bulkdata.routes,
            *frames.routes,
            *rendered.routes,
            *wado_uri.routes,
        ],
        lifespan=lifespan,
        ready=ready,
        shard=settings,
    )
