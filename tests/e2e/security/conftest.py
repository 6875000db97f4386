"""A cluster with access control on, and the real OpenID provider it trusts.

provider        node-oidc-provider (deploy/oidc-demo) with one machine client per
                permission (reader, writer, deleter, admin, everything), one whose
                tokens live 2 s (brief), and limited ones (labels)
secure          a single-shard cluster (every service its own process): shard services
                demand the internal credential, the router demands bearer tokens from
                the provider or API keys, /metrics demands METRICS_TOKEN, and every
                request is audited in the router's database
tokens          client id -> a fresh access token of that client
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, migrated_database, shard_settings, start_cluster
from tests.support.identity import Provider, Unavailable, machine, node
from tests.support.servers import RedisDatabases, empty_database

SECRET = "internal-secret-for-the-tests-0123456789abcdef"
METRICS_TOKEN = "metrics-token-for-the-tests"
ALL = "tessera:read tessera:write tessera:delete tessera:admin"
CLIENTS = {
    "reader": "tessera:read",
    "writer": "tessera:write",
    "deleter": "tessera:delete",
    "admin": "tessera:admin",
    "everything": ALL,
}


@pytest.fixture(scope="package")
def provider() -> Iterator[Provider]:
    try:
        node()
    except Unavailable as e:
        pytest.fail(f"the OpenID provider cannot run: {e} (make oidc-provider)")
    workdir = Path(tempfile.mkdtemp(prefix="tessera-oidc-"))
    clients = [machine(name, scope) for name, scope in CLIENTS.items()]
    clients += [
        machine("brief", ALL, ttl=2),
        machine("cardio", "tessera:read tessera:write", extra={"tessera_labels": ["cardio"]}),
        machine("neuro", "tessera:read tessera:write", extra={"tessera_labels": ["neuro"]}),
    ]
    p = Provider(workdir, clients).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="package")
async def auth_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with empty_database(postgres_dsn, "router_auth") as dsn:
        yield dsn


@pytest.fixture(scope="package")
async def shard_database(postgres_dsn: str) -> AsyncIterator[str]:
    async with migrated_database(postgres_dsn, "secure") as dsn:
        yield dsn


@pytest.fixture(scope="package")
def secure(
    provider: Provider,
    auth_database: str,
    shard_database: str,
    redis_databases: RedisDatabases,
) -> Iterator[Cluster]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-secure-"))
    with redis_databases.lease() as redis_url:
        cluster = start_cluster(
            lambda: shard_settings(
                shard=f"secure-{uuid.uuid4().hex[:6]}",
                database_url=shard_database,
                redis_url=redis_url,
                storage_url=(workdir / "objects").as_uri(),
                spool_dir=str(workdir),
                internal_secret=SECRET,
                metrics_token=METRICS_TOKEN,
                auth="on",
                auth_issuer=provider.issuer,
                auth_database_url=auth_database,
                auth_cache_seconds=0.0,
                auth_jwks_refresh=2.0,
                auth_leeway=1.0,
                log_level="info",
            ),
            workdir,
        )
        try:
            yield cluster
        finally:
            cluster.stop_all()


class Tokens:
    """Access tokens of the provider's clients, fetched once per client."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self._tokens: dict[str, str] = {}

    def __getitem__(self, client: str) -> str:
        if client not in self._tokens:
            scope = CLIENTS.get(client, ALL if client == "brief" else "tessera:read tessera:write")
            self._tokens[client] = self.provider.token(client, f"{client}-secret", scope)
        return self._tokens[client]

    def forget(self) -> None:
        self._tokens.clear()


@pytest.fixture(scope="package")
def tokens(provider: Provider) -> Tokens:
    return Tokens(provider)
