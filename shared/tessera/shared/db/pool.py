"""asyncpg connection pool for a shard's PostgreSQL."""

from __future__ import annotations

import json

import asyncpg


async def _init(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing more to reset: the shard services keep no session state on a connection
    (no session advisory lock, LISTEN, cursor or SET; a transaction left open is rolled
    back by asyncpg before this). asyncpg's default sends ``RESET ALL; CLOSE ALL; ...`` on
    every release: a round trip per request that one short query pays twice for."""


async def create_pool(
    dsn: str,
    min_size: int = 1,
    max_size: int = 10,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """A pool whose connections decode jsonb; ``server_settings`` are session GUCs."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init,
        reset=_keep_session,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool
