"""N shards on one machine for ``tessera run --shards N`` (``make run SHARDS=N``).

One PostgreSQL server holds a database per shard (``tessera_shard_0``...) and the router's
registry (``tessera_router``); every shard and the router's rebalance broker share one
Redis database (queues, replies and locks are named by shard: :mod:`tessera.shared.queue`,
:mod:`tessera.shared.transcode`); each shard keeps its objects in
``<data>/objects/<shard>``. Every service of every shard gets its own ports:
every ``*_port`` field of :class:`Settings`, so a field added later is covered too.

The registry is filled on start: each shard is registered ``active`` with its URLs of
this run (an existing entry keeps its state and gets the new URLs), so a restart with
the same ``--data`` finds the same shards and studies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tessera.local.processes import free_port, pick_port
from tessera.shared.settings import Settings

ROUTER_DATABASE = "tessera_router"
PORT_STEP = 100  # shard i prefers the single-shard ports + 100 * i (8101, 8201, 8301...)


# ports of the whole cluster, not of a shard: the router's and the DIMSE gateway's
CLUSTER_PORTS = frozenset({"router_port", "dimse_port", "dimse_tls_port", "dimse_http_port"})


def port_fields() -> list[str]:
    """Every ``*_port`` field of a shard's services."""
    return [
        f.name
        for f in dataclasses.fields(Settings)
        if f.name.endswith("_port") and f.name not in CLUSTER_PORTS
    ]


def with_path(url: str, path: str) -> str:
    """``url`` with its path (database name or number) replaced."""
    return urlunsplit(urlsplit(url)._replace(path="/" + path))


@dataclass
class Ports:
    """Hands out ports: the preferred one unless busy or already handed out."""

    taken: set[int] = dataclasses.field(default_factory=set)

    def __call__(self, preferred: int) -> int:
        port = pick_port(preferred) if preferred > 0 else free_port()
        while port in self.taken:
            port = free_port()
        self.taken.add(port)
        return port


def shard_settings(
    base: Settings, name: str, index: int, data: Path, database_url: str, redis_url: str,
    ports: Ports,
) -> Settings:  # fmt: skip
    """The settings of every service of shard number ``index``."""
    chosen: dict[str, Any] = {f: ports(getattr(base, f) + PORT_STEP * index) for f in port_fields()}
    ingest, idx, retrieve = chosen["ingest_port"], chosen["index_port"], chosen["retrieve_port"]
    return dataclasses.replace(
        base,
        shard=name,
        database_url=database_url,
        redis_url=redis_url,
        storage_url=(data / "objects" / name).as_uri(),
        spool_dir=str(data / "spool"),
        host="127.0.0.1",
        ingest_url=f"http://127.0.0.1:{ingest}",
        index_url=f"http://127.0.0.1:{idx}",
        retrieve_url=f"http://127.0.0.1:{retrieve}",
        **chosen,
    )


@dataclass
class Federation:
    router: Settings
    shards: list[Settings]


def plan(base: Settings, data: Path, pg_dsn: str, redis_url: str, count: int,
         router_port: int) -> Federation:  # fmt: skip
    """Settings for the router and ``count`` shards sharing one PostgreSQL and one Redis."""
    ports = Ports()
    router_port = ports(router_port)
    shards = []
    for i in range(count):
        name = f"shard-{i}"
        (data / "objects" / name).mkdir(parents=True, exist_ok=True)
        shards.append(
            shard_settings(
                base,
                name,
                i,
                data,
                with_path(pg_dsn, f"tessera_shard_{i}"),
                redis_url,
                ports,
            )
        )
    router = dataclasses.replace(
        shards[0],
        router_port=router_port,
        router_database_url=with_path(pg_dsn, ROUTER_DATABASE),
        # the rebalance worker's Celery broker (its queue: tessera.shared.jobs)
        router_redis_url=redis_url,
    )
    return Federation(router, shards)


async def create_database(admin_dsn: str, name: str) -> bool:
    """Create database ``name`` unless it exists; True if created now."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def prepare(admin_dsn: str, federation: Federation) -> list[str]:
    """Databases created and migrated, the shards registered; what was done, in words."""
    from tessera.router.registry import Registry
    from tessera.shared.db.migrate import apply_migrations

    done = []
    urls = [s.database_url for s in federation.shards] + [federation.router.router_database_url]
    for url in urls:
        name = urlsplit(url).path.lstrip("/")
        if await create_database(admin_dsn, name):
            done.append(f"created database {name}")
    for shard in federation.shards:
        applied = await apply_migrations(shard.database_url)
        if applied:
            done.append(f"{shard.shard}: migrations {', '.join(applied)}")
    registry = await Registry.connect(federation.router.router_database_url)
    try:
        for shard in federation.shards:
            await registry.add_shard(
                shard.shard, shard.ingest_url, shard.index_url, shard.retrieve_url, "active"
            )
        known = {row.name for row in await registry.shards() if row.state != "removed"}
    finally:
        await registry.close()
    started = {s.shard for s in federation.shards}
    for name in sorted(known - started):
        done.append(f"warning: the registry lists shard {name}, which this run does not start")
    done.append(f"registry: {', '.join(sorted(started))} registered")
    return done
