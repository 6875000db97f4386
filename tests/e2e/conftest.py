"""A running cluster for the end-to-end tests: real PostgreSQL, Redis, S3 API server, and
every Tessera service as its own process. Set TESSERA_E2E_URL to run the read-only parts
against an already deployed router instead (not used by ``make test``)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.buckets import new_bucket
from tests.support.cluster import Cluster, migrated_database, quick_shard_settings, start_cluster

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
async def cluster_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_dsn, "e2e") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def cluster(
    cluster_database: str, redis_url: str, s3_settings: dict[str, str]
) -> Iterator[Cluster]:
    bucket = new_bucket(s3_settings, "e2e")
    workdir = Path(tempfile.mkdtemp(prefix="tessera-e2e-"))
    c = start_cluster(
        lambda: quick_shard_settings(
            s3_settings,
            bucket,
            workdir,
            shard=f"e2e-{uuid.uuid4().hex[:8]}",
            database_url=cluster_database,
            redis_url=redis_url,
            log_level="info",
        ),
        workdir,
    )
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as c:
        yield c
