"""A running cluster for the end-to-end tests: real PostgreSQL, Redis, S3 API server, and
every Tessera service as its own process. Set TESSERA_E2E_URL to run the read-only parts
against an already deployed router instead (not used by ``make test``)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tessera.local.processes import create_bucket, free_port
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.settings import Settings
from tests.e2e.cluster import Cluster

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
async def cluster_database(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"e2e_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/" + name
    await apply_migrations(dsn)
    yield dsn
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


@pytest.fixture(scope="session")
def cluster(
    cluster_database: str, redis_url: str, s3_settings: dict[str, str]
) -> Iterator[Cluster]:
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    create_bucket(
        s3_settings["s3_endpoint_url"],
        bucket,
        access_key_id=s3_settings["s3_access_key_id"],
        secret_access_key=s3_settings["s3_secret_access_key"],
        region=s3_settings["s3_region"],
    )
    workdir = Path(tempfile.mkdtemp(prefix="tessera-e2e-"))
    for attempt in range(3):  # a free port can be taken by someone else before we bind it
        ports = {
            p: free_port()
            for p in ("router", "ingest", "index", "retrieve", "index_worker", "transcode")
        }
        settings = Settings(
            shard=f"e2e-{uuid.uuid4().hex[:8]}",
            database_url=cluster_database,
            redis_url=redis_url,
            storage_url=f"s3://{bucket}",
            **s3_settings,
            spool_threshold=256 * 1024,
            spool_dir=str(workdir),
            index_timeout=8.0,
            index_claim_idle=2.0,
            router_port=ports["router"],
            ingest_port=ports["ingest"],
            index_port=ports["index"],
            retrieve_port=ports["retrieve"],
            index_worker_port=ports["index_worker"],
            transcode_port=ports["transcode"],
            ingest_url=f"http://127.0.0.1:{ports['ingest']}",
            index_url=f"http://127.0.0.1:{ports['index']}",
            retrieve_url=f"http://127.0.0.1:{ports['retrieve']}",
            log_level="info",
        )
        c = Cluster(settings, workdir)
        try:
            c.start_all()
            break
        except RuntimeError:
            c.stop_all()
            if attempt == 2:
                raise
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as c:
        yield c
