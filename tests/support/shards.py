"""N shard stacks and a router with its registry, as real processes, for federation tests.

Builds on :class:`tests.support.cluster.Cluster`: each shard is a ``Cluster`` that runs only
the shard services (ingest, index, index worker, retrieve, transcode) with its own
settings; the router is a ``Cluster`` that runs only the router. They share the test
session's PostgreSQL server (a database per shard, one for the router's registry), its
Redis server (a database number per shard: the Celery transcode queue is not scoped by
shard) and its S3 API server (a bucket per shard). Every ``*_port`` setting gets a free
port. Processes of all stacks start together and are waited for together.

For other tests (the rebalance one), :meth:`Federation.add_stack` starts one more shard
stack, NOT registered, and returns it with its URLs; register it yourself
(``Registry.add_shard`` or the shardctl CLI). Use the ``federation`` fixture (import it
into the test module), :func:`running` (an async context manager) or
:func:`start_federation` directly. ``single_shard`` is one shard behind a router without
registry: today's single-shard deployment, to compare answers with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tessera.local.processes import free_port
from tessera.router.registry import Registry
from tessera.shared.auth.internal import httpx_auth
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.settings import Settings
from tests.support.buckets import new_bucket
from tests.support.cluster import Cluster
from tests.support.servers import RedisDatabases, with_database

SHARD_SERVICES = ("ingest", "index", "index-worker", "retrieve", "transcode")


@dataclass
class ShardStack:
    """One shard's processes and settings."""

    cluster: Cluster
    database: str  # the database name on the session's server

    @property
    def name(self) -> str:
        return self.cluster.settings.shard

    @property
    def settings(self) -> Settings:
        return self.cluster.settings

    @property
    def ingest_url(self) -> str:
        return self.settings.ingest_url

    @property
    def index_url(self) -> str:
        return self.settings.index_url

    @property
    def retrieve_url(self) -> str:
        return self.settings.retrieve_url

    def stop(self, service: str) -> None:
        """Stop one service of the shard (SIGTERM by PID), e.g. ``"index"``."""
        import signal

        self.cluster.kill(service, signal.SIGTERM)

    def restart(self, service: str) -> None:
        self.cluster.start(service)
        self.cluster.wait_ready(service)


@dataclass
class Federation:
    """The router (``base_url``) over shard stacks, all on the session's servers."""

    postgres_dsn: str
    redis_url: str
    s3_settings: dict[str, str]
    workdir: Path
    router_overrides: dict[str, Any] = field(default_factory=dict)
    # settings of every shard's services (e.g. internal_secret)
    shard_overrides: dict[str, Any] = field(default_factory=dict)
    stacks: dict[str, ShardStack] = field(default_factory=dict)
    router: Cluster | None = None
    router_database: str = ""

    @property
    def router_dsn(self) -> str:
        return with_database(self.postgres_dsn, self.router_database)

    @property
    def base_url(self) -> str:
        assert self.router is not None
        return self.router.base_url

    def _settings(self, name: str, **overrides: Any) -> Settings:
        """Settings with a free port for every ``*_port`` field."""
        ports = {
            f.name: free_port() for f in dataclasses.fields(Settings) if f.name.endswith("_port")
        }
        return Settings(
            shard=name,
            **self.s3_settings,
            spool_threshold=256 * 1024,
            spool_dir=str(self.workdir),
            index_timeout=8.0,
            index_claim_idle=2.0,
            ingest_url=f"http://127.0.0.1:{ports['ingest_port']}",
            index_url=f"http://127.0.0.1:{ports['index_port']}",
            retrieve_url=f"http://127.0.0.1:{ports['retrieve_port']}",
            log_level="info",
            **ports,
            **overrides,
        )

    async def _new_database(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.postgres_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return name

    async def _prepare_stack(self, name: str) -> ShardStack:
        """Database (migrated) and bucket of a new shard; its Redis is the federation's
        (every shard shares one database: queues and locks are named by shard)."""
        database = await self._new_database("fed_" + name.replace("-", "_"))
        dsn = with_database(self.postgres_dsn, database)
        await apply_migrations(dsn)
        bucket = new_bucket(self.s3_settings, f"fed-{name}")
        settings = self._settings(
            name,
            database_url=dsn,
            redis_url=self.redis_url,
            storage_url=f"s3://{bucket}",
            **self.shard_overrides,
        )
        stack = ShardStack(Cluster(settings, self.workdir / name), database)
        stack.cluster.workdir.mkdir(parents=True, exist_ok=True)
        return stack

    async def start(self, names: list[str], registry: bool = True) -> None:
        """Start shard stacks ``names`` (registered 'active') and the router, in parallel.
        Without ``registry`` (one shard only) the router is configured as before
        federation: the shard's URLs in its settings, no registry database."""
        stacks = [await self._prepare_stack(name) for name in names]
        if registry:
            self.router_database = await self._new_database("fed_router")
            await self._register(stacks)
            where: dict[str, Any] = {"router_database_url": self.router_dsn}
        else:
            (only,) = stacks
            where = {
                "ingest_url": only.ingest_url,
                "index_url": only.index_url,
                "retrieve_url": only.retrieve_url,
            }
        router_settings = dataclasses.replace(
            self._settings(
                "router", registry_poll=0.2, router_shard_timeout=3.0, **self.router_overrides
            ),
            **where,
        )
        self.router = Cluster(router_settings, self.workdir / "router")
        self.router.workdir.mkdir(parents=True, exist_ok=True)
        for stack in stacks:
            self.stacks[stack.name] = stack
        clusters = [(s.cluster, SHARD_SERVICES) for s in stacks] + [(self.router, ("router",))]
        await asyncio.to_thread(_start_together, clusters)

    async def _register(self, stacks: list[ShardStack]) -> None:
        registry = await Registry.connect(self.router_dsn)
        try:
            for stack in stacks:
                await registry.add_shard(
                    stack.name, stack.ingest_url, stack.index_url, stack.retrieve_url, "active"
                )
        finally:
            await registry.close()

    async def add_stack(self, name: str) -> ShardStack:
        """Start one more shard stack (not registered: that is the caller's job)."""
        stack = await self._prepare_stack(name)
        self.stacks[name] = stack
        await asyncio.to_thread(_start_together, [(stack.cluster, SHARD_SERVICES)])
        return stack

    def stop_all(self) -> None:
        for stack in self.stacks.values():
            stack.cluster.stop_all()
        if self.router is not None:
            self.router.stop_all()

    async def drop_databases(self) -> None:
        """Drop the PostgreSQL databases."""
        conn = await asyncpg.connect(self.postgres_dsn)
        try:
            for name in [s.database for s in self.stacks.values()] + [self.router_database]:
                if name:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def shard_client(self, name: str, service: str = "index") -> httpx.AsyncClient:
        """A client straight to one shard's service (no router)."""
        settings = self.stacks[name].settings
        url = getattr(settings, f"{service}_url")
        return httpx.AsyncClient(base_url=url, timeout=60, auth=httpx_auth(settings))


def _start_together(clusters: list[tuple[Cluster, tuple[str, ...]]]) -> None:
    """Start every named service of every cluster, then wait for all of them."""
    for cluster, names in clusters:
        for name in names:
            cluster.start(name)
    try:
        for cluster, names in clusters:
            for name in names:
                cluster.wait_ready(name, timeout=120.0)
    except RuntimeError:
        for cluster, _ in clusters:
            cluster.stop_all()
        raise


async def start_federation(
    postgres_dsn: str,
    redis_url: str,
    s3_settings: dict[str, str],
    shards: int = 3,
    registry: bool = True,
    prefix: str = "shard",
    shard_overrides: dict[str, Any] | None = None,
    **router_overrides: Any,
) -> Federation:
    """A started :class:`Federation` of ``shards`` stacks named ``{prefix}-0``...; call
    ``stop_all()`` and ``drop_databases()`` when done. ``registry=False`` (one shard):
    the router of a single-shard deployment, as before federation. ``shard_overrides``
    go to every shard's services, ``router_overrides`` to the router."""
    workdir = Path(tempfile.mkdtemp(prefix="tessera-fed-"))
    fed = Federation(
        postgres_dsn,
        redis_url,
        s3_settings,
        workdir,
        dict(router_overrides),
        dict(shard_overrides or {}),
    )
    try:
        await fed.start([f"{prefix}-{i}" for i in range(shards)], registry)
    except BaseException:
        fed.stop_all()
        await fed.drop_databases()
        raise
    return fed


@asynccontextmanager
async def running(
    postgres_dsn: str, redis_url: str, s3_settings: dict[str, str], **options: Any
) -> AsyncIterator[Federation]:
    """:func:`start_federation` for the duration of the block; everything removed after."""
    fed = await start_federation(postgres_dsn, redis_url, s3_settings, **options)
    try:
        yield fed
    finally:
        fed.stop_all()
        await fed.drop_databases()
        shutil.rmtree(fed.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
async def single_shard(
    postgres_dsn: str, redis_databases: RedisDatabases, s3_settings: dict[str, str]
) -> AsyncIterator[Federation]:
    """One shard behind a router without a registry: a single-shard deployment (the
    oracle the federation is compared with). Every ``*_port`` setting gets a free port."""
    options: dict[str, Any] = {"shards": 1, "registry": False, "prefix": "single"}
    with redis_databases.lease() as redis_url:
        async with running(postgres_dsn, redis_url, s3_settings, **options) as fed:
            yield fed


@pytest.fixture(scope="module")
async def federation(
    postgres_dsn: str, redis_databases: RedisDatabases, s3_settings: dict[str, str]
) -> AsyncIterator[Federation]:
    """Three shards (``shard-0``..``shard-2``) behind a router with a registry."""
    with redis_databases.lease() as redis_url:
        async with running(postgres_dsn, redis_url, s3_settings, shards=3) as fed:
            yield fed
