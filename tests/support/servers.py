"""Real servers for the tests: PostgreSQL, Redis and an S3 API, started once per session.

With a Docker engine (``docker info`` succeeds) they are testcontainers (postgres:15,
redis:7, MinIO); otherwise local child processes from :mod:`tessera.local.processes`
in a temporary folder. ``TESSERA_TEST_DOCKER=0`` forces local processes, ``=1`` Docker.

Session fixtures (shared by every test; do not flush or drop what they point at):
    postgres_dsn   DSN of the ``tessera`` database of the session server (a superuser)
    redis_url      ``redis://host:port/0``
    s3_endpoint    ``http://host:port`` of the S3 API
    s3_settings    Settings fields for it: s3_endpoint_url, s3_region, s3_access_key_id,
                   s3_secret_access_key (``Settings(**s3_settings, storage_url=...)``)

    redis_databases  hands out the server's other databases (1..15), one holder each:
                   ``with redis_databases.lease() as url: ...`` (module and session
                   fixtures: a transcode worker, a federation, the browser cluster)

Per-test fixtures:
    database       DSN of a new database, migrated when ``tessera.shared.db.migrate``
                   exists (copied from a template migrated once), dropped after the test
    redis_db       ``redis://host:port/N``, a leased database flushed before and after
    s3_bucket      name of a new, empty bucket on ``s3_endpoint``
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis

from tessera.local.processes import (
    docker_available,
    start_postgres,
    start_redis,
    start_s3,
)
from tests.support.buckets import new_bucket

Migrate = Callable[[str], Awaitable[list[str]]]


def _use_docker() -> bool:
    choice = os.environ.get("TESSERA_TEST_DOCKER", "auto").strip().lower()
    if choice in ("0", "no", "false"):
        return False
    if choice in ("1", "yes", "true"):
        return True
    return docker_available()


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def _migrations() -> Migrate | None:
    """``apply_migrations`` if the migration module exists yet, else None."""
    try:
        from tessera.shared.db.migrate import apply_migrations
    except ModuleNotFoundError as exc:
        if exc.name in ("tessera.shared.db", "tessera.shared.db.migrate"):
            return None
        raise
    return apply_migrations


async def admin_sql(dsn: str, sql: str) -> None:
    """Run one statement (CREATE / DROP DATABASE...) on its own connection."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@asynccontextmanager
async def empty_database(postgres_dsn: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database ``{prefix}_<random>`` on the test server; dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_dsn, name)
    finally:
        await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """A session folder for server data that PostgreSQL's own user can enter (pytest's
    tmp_path is under /tmp/pytest-of-root, mode 0700, which the `postgres` user cannot)."""
    root = Path(tempfile.mkdtemp(prefix="tessera-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_dsn(servers_dir: Path) -> Iterator[str]:
    if _use_docker():
        from testcontainers.community.postgres import PostgresContainer

        container = PostgresContainer(
            "postgres:15", username="tessera", password="tessera", dbname="tessera", driver=None
        )
        with container:
            yield container.get_connection_url()
        return
    with start_postgres(servers_dir / "postgres", durable=False) as pg:
        yield pg.dsn


@pytest.fixture(scope="session")
async def template_database(postgres_dsn: str) -> AsyncIterator[str]:
    """Name of a database that ``database`` copies: migrated once if migrations exist."""
    name = f"tessera_template_{uuid.uuid4().hex[:8]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
    migrate = _migrations()
    if migrate is not None:
        await migrate(with_database(postgres_dsn, name))
    yield name
    await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database(postgres_dsn: str, template_database: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield with_database(postgres_dsn, name)
    await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(servers_dir: Path) -> Iterator[str]:
    if _use_docker():
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    with start_redis(servers_dir / "redis") as server:
        yield server.url


def _flushdb(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


class RedisDatabases:
    """The session server's databases 1..15 (0 is ``redis_url``'s), each leased to one
    holder at a time and flushed before and after, so no two fixtures share one."""

    def __init__(self, url: str, count: int = 16) -> None:
        self.url = url
        self.free = list(range(1, count))

    @contextmanager
    def lease(self) -> Iterator[str]:
        if not self.free:
            raise RuntimeError("every Redis database is leased: a fixture keeps too many")
        db = self.free.pop(0)
        url = with_database(self.url, str(db))
        _flushdb(url)
        try:
            yield url
        finally:
            _flushdb(url)
            self.free = sorted([*self.free, db])


@pytest.fixture(scope="session")
def redis_databases(redis_url: str) -> RedisDatabases:
    return RedisDatabases(redis_url)


@pytest.fixture
def redis_db(redis_databases: RedisDatabases) -> Iterator[str]:
    with redis_databases.lease() as url:
        yield url


# --- S3 --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _S3:
    url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


@pytest.fixture(scope="session")
def _s3(servers_dir: Path) -> Iterator[_S3]:
    if _use_docker():
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.wait_strategies import HttpWaitStrategy

        key, secret = "tessera-test", "tessera-test-secret"
        container = (
            DockerContainer("minio/minio:latest")
            .with_exposed_ports(9000)
            .with_env("MINIO_ROOT_USER", key)
            .with_env("MINIO_ROOT_PASSWORD", secret)
            .with_command("server /data")
            .waiting_for(HttpWaitStrategy(9000, "/minio/health/live"))
        )
        with container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(9000)
            yield _S3(f"http://{host}:{port}", key, secret)
        return
    with start_s3(servers_dir / "s3") as server:
        yield _S3(server.endpoint_url, "test", "test")


@pytest.fixture(scope="session")
def s3_endpoint(_s3: _S3) -> str:
    return _s3.url


@pytest.fixture(scope="session")
def s3_settings(_s3: _S3) -> dict[str, str]:
    return {
        "s3_endpoint_url": _s3.url,
        "s3_region": _s3.region,
        "s3_access_key_id": _s3.access_key_id,
        "s3_secret_access_key": _s3.secret_access_key,
    }


@pytest.fixture
def s3_bucket(s3_settings: dict[str, str]) -> str:
    return new_bucket(s3_settings, "test")
