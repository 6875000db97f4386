"""``/healthz``, ``/readyz`` and ``/metrics`` for a process that serves no HTTP itself
(the index worker, the transcode worker), so that probes and Prometheus reach every
service the same way.

The little app runs under uvicorn in a daemon thread with its own event loop, beside
whatever the process does in its main thread (an asyncio loop consuming a Redis Stream,
or a Celery worker). Its checks therefore open their own connections, in that loop.
The listening socket is bound in :class:`HealthServer`'s constructor, so a port that is
taken fails the process at start, loudly.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware

from tessera.shared.auth.exposure import check_exposure
from tessera.shared.auth.internal import InternalAuth
from tessera.shared.http import ReadyCheck, health_routes
from tessera.shared.http_limits import guarded_protocol
from tessera.shared.metrics import Scrape, metrics_route
from tessera.shared.settings import Settings

CHECK_TIMEOUT = 5.0  # seconds; a probe gives up before the kubelet's own timeout


@asynccontextmanager
async def probe_redis(url: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client of its own for one check or scrape, in the health server's loop
    (the worker's connections belong to the worker's loop), closed after it."""
    client = aioredis.from_url(url, socket_timeout=CHECK_TIMEOUT)
    try:
        yield client
    finally:
        await client.aclose()


async def redis_and_database(settings: Settings) -> dict[str, str]:
    """Readiness of a worker that needs its Redis and its PostgreSQL (the index worker,
    the sweeper): each answers, on connections of the check's own."""
    async with probe_redis(settings.redis_url) as client:
        await client.ping()
    conn = await asyncpg.connect(settings.database_url, timeout=CHECK_TIMEOUT)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return {"redis": "ok", "database": "ok"}


class HealthServer:
    def __init__(
        self,
        host: str,
        port: int,
        ready: ReadyCheck,
        scrape: Scrape | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is not None:
            check_exposure(settings, public=False)
        self.socket = socket.create_server((host, port))
        # /metrics behind the internal credential or metrics_token, as on the services
        guard = [Middleware(InternalAuth, settings=settings)] if settings is not None else []
        app = Starlette(routes=[*health_routes(ready), metrics_route(scrape)], middleware=guard)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http=guarded_protocol(settings or Settings()),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="tessera-health", daemon=True)

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.socket.close()

    def forget_in_child(self) -> None:
        """In a forked child: close our copy of the listening socket (the parent serves)."""
        self.socket.close()
