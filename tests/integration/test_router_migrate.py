"""``python -m tessera.router.registry.migrate``: the deployment's registry preparation step (the
compose ``router-migrate`` service, the Helm hook job) on a real PostgreSQL."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tessera.router.registry import Registry
from tessera.router.registry.migrate import parse_shard, prepare
from tests.support.servers import with_database

S0 = ("shard-0", "http://s0-ingest:8101", "http://s0-index:8102", "http://s0-retrieve:8103")
S1 = ("shard-1", "http://s1-ingest:8101", "http://s1-index:8102", "http://s1-retrieve:8103")


@pytest.fixture
async def router_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    name = f"router_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield with_database(postgres_dsn, name)
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def _states(dsn: str) -> dict[str, tuple[str, str]]:
    registry = await Registry.connect(dsn, migrate=False)
    try:
        return {r.name: (r.state, r.ingest_url) for r in await registry.shards()}
    finally:
        await registry.close()


async def test_new_registry_gets_every_shard_active_and_reruns_change_nothing(
    router_dsn: str,
) -> None:
    await prepare(router_dsn, [S0, S1])
    expected = {"shard-0": ("active", S0[1]), "shard-1": ("active", S1[1])}
    assert await _states(router_dsn) == expected
    await prepare(router_dsn, [S0, S1])  # the hook runs again on every upgrade
    assert await _states(router_dsn) == expected


async def test_populated_registry_updates_urls_but_never_adds_a_shard(router_dsn: str) -> None:
    await prepare(router_dsn, [S0])
    moved = (S0[0], "http://s0-ingest.new:8101", S0[2], S0[3])
    done = await prepare(router_dsn, [moved, S1])
    assert await _states(router_dsn) == {"shard-0": ("active", "http://s0-ingest.new:8101")}
    assert any("shard-1: NOT registered" in line and "shardctl add" in line for line in done)


def test_shard_argument_needs_a_name_and_three_urls() -> None:
    assert parse_shard("shard-0=http://a,http://b,http://c") == (
        "shard-0",
        "http://a",
        "http://b",
        "http://c",
    )
    for bad in ("shard-0", "shard-0=http://a,http://b", "=http://a,http://b,http://c"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(bad)
