"""The shard registry on a real PostgreSQL: migrations, writes, incremental polling."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from tessera.router.registry import Registry, RegistryWatcher
from tessera.router.shards import ShardMap
from tessera.shared.db.migrate import apply_migrations
from tests.support.servers import admin_sql, with_database


@pytest.fixture
async def router_dsn(postgres_dsn: str) -> AsyncIterator[str]:
    """A new, empty database for the router (not a shard's schema)."""
    name = f"router_{uuid.uuid4().hex[:12]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
    yield with_database(postgres_dsn, name)
    await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def registry(router_dsn: str) -> AsyncIterator[Registry]:
    reg = await Registry.connect(router_dsn)
    yield reg
    await reg.close()


def _urls(name: str) -> tuple[str, str, str]:
    return (f"http://{name}:1", f"http://{name}:2", f"http://{name}:3")


async def test_router_migrations_apply_once_and_only_the_router_schema(router_dsn: str) -> None:
    applied = await apply_migrations(router_dsn, "tessera.router.registry")
    assert applied[0] == "0001_registry.sql"  # then the rebalance job's, if any
    assert await apply_migrations(router_dsn, "tessera.router.registry") == []
    conn = await asyncpg.connect(router_dsn)
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables")}
    finally:
        await conn.close()
    assert {"shard", "placement_override", "registry_state"} <= tables
    assert "study" not in tables  # the shard schema is not applied to the router's database


async def test_several_sources_migrate_one_new_database_at_once(postgres_dsn: str) -> None:
    """The router (registry, auth) and the DIMSE gateway start together on the router's
    database: their first runs, at the same moment, each make their tables (a race on
    creating the schema_migration table once failed one of them)."""
    sources = ["tessera.router.registry", "tessera.router.auth", "tessera.dimse"]
    for _ in range(3):
        name = f"router_{uuid.uuid4().hex[:12]}"
        await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
        dsn = with_database(postgres_dsn, name)
        try:
            applied = await asyncio.gather(*(apply_migrations(dsn, src) for src in sources))
            assert all(applied)
        finally:
            await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_shards_are_added_idempotently_and_change_state(registry: Registry) -> None:
    await registry.add_shard("a", *_urls("a"), state="active")
    await registry.add_shard("a", "http://a2:1", "http://a2:2", "http://a2:3")  # new URLs
    await registry.add_shard("b", *_urls("b"))
    rows = {r.name: r for r in await registry.shards()}
    assert rows["a"].state == "active" and rows["a"].ingest_url == "http://a2:1"
    assert rows["b"].state == "joining"
    await registry.set_shard_state("b", "active")
    assert (await registry.shard("b")).state == "active"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        await registry.set_shard_state("b", "asleep")
    with pytest.raises(KeyError):
        await registry.set_shard_state("nope", "active")


async def test_changes_since_is_incremental(registry: Registry) -> None:
    shards, overrides, seq0 = await registry.changes_since(0)
    assert shards == [] and overrides == []
    assert await registry.changes_since(seq0) == (None, [], seq0)

    await registry.add_shard("a", *_urls("a"), state="active")
    await registry.add_shard("b", *_urls("b"), state="active")
    shards, overrides, seq1 = await registry.changes_since(seq0)
    assert [s.name for s in shards or []] == ["a", "b"] and overrides == [] and seq1 > seq0

    owners = await registry.pin(["1.2.3", "1.2.4"], "a")
    assert owners == {"1.2.3": "a", "1.2.4": "a"}
    shards, overrides, seq2 = await registry.changes_since(seq1)
    assert shards is None
    assert [(o.study_instance_uid, o.shard) for o in overrides] == [("1.2.3", "a"), ("1.2.4", "a")]

    # A live override keeps its shard; only the new study is written.
    assert await registry.pin(["1.2.4", "1.2.5"], "b") == {"1.2.4": "a", "1.2.5": "b"}
    _, overrides, seq3 = await registry.changes_since(seq2)
    assert [(o.study_instance_uid, o.shard) for o in overrides] == [("1.2.5", "b")]

    await registry.set_locked("1.2.3", True)
    await registry.release("1.2.4")
    _, overrides, seq4 = await registry.changes_since(seq3)
    changes = {o.study_instance_uid: (o.locked, o.released) for o in overrides}
    assert changes == {"1.2.3": (True, False), "1.2.4": (False, True)}
    assert seq4 > seq3
    assert {o.study_instance_uid for o in await registry.overrides()} == {"1.2.3", "1.2.5"}

    # A released override comes back on the shard the new pin names.
    assert await registry.pin(["1.2.4"], "b") == {"1.2.4": "b"}
    with pytest.raises(KeyError):
        await registry.set_locked("9.9", True)
    await registry.release("1.2.3")  # locked above: the release drops the lock too
    await registry.set_locked("1.2.3", False)  # the design's order: release, then unlock
    assert "1.2.3" not in {o.study_instance_uid for o in await registry.overrides()}


async def test_concurrent_writers_are_never_skipped_by_a_poller(registry: Registry) -> None:
    """Each write's seq is drawn under the registry lock, so a poll that returns seq N
    has seen every write up to N, even with writers racing the poller."""
    await registry.add_shard("a", *_urls("a"), state="active")
    seen: set[str] = set()
    seq = 0
    uids = [f"1.2.840.{i}" for i in range(200)]

    async def write() -> None:
        for i in range(0, len(uids), 10):
            await asyncio.gather(*(registry.pin([u], "a") for u in uids[i : i + 10]))

    async def poll() -> None:
        nonlocal seq
        for _ in range(200):
            _, overrides, seq = await registry.changes_since(seq)
            seen.update(o.study_instance_uid for o in overrides)
            await asyncio.sleep(0)

    await asyncio.gather(write(), poll())
    _, overrides, seq = await registry.changes_since(seq)
    seen.update(o.study_instance_uid for o in overrides)
    assert seen == set(uids)


async def test_watcher_builds_the_shard_map_of_a_transition(registry: Registry) -> None:
    await registry.add_shard("a", *_urls("a"), state="active")
    await registry.add_shard("b", *_urls("b"), state="active")
    watcher = RegistryWatcher(registry, poll=0.05)
    await watcher.start()
    try:
        m = watcher.map
        assert m.placement == ("a", "b") and m.next_placement is None
        assert set(m.shards) == {"a", "b"}

        # Joining: a hash candidate only after the transition commits.
        await registry.add_shard("c", *_urls("c"))
        await _until(lambda: "c" in watcher.map.shards)
        m = watcher.map
        assert m.placement == ("a", "b") and m.next_placement == ("a", "b", "c")
        await registry.pin(["1.2.9"], "b")
        await registry.set_locked("1.2.9", True)
        await _until(lambda: "1.2.9" in watcher.map.locked)
        assert watcher.map.for_study("1.2.9").name == "b"

        await registry.commit_transition()
        await _until(lambda: watcher.map.next_placement is None)
        assert watcher.map.placement == ("a", "b", "c")

        # Draining: still a candidate until the commit, then known but not a candidate.
        await registry.set_shard_state("a", "draining")
        await _until(lambda: watcher.map.next_placement == ("b", "c"))
        assert watcher.map.placement == ("a", "b", "c")
        await registry.commit_transition()
        await _until(lambda: watcher.map.next_placement is None)
        assert watcher.map.placement == ("b", "c") and "a" in watcher.map.shards
        await registry.set_shard_state("a", "removed")
        await _until(lambda: "a" not in watcher.map.shards)

        await registry.release("1.2.9")
        await _until(lambda: "1.2.9" not in watcher.map.overrides)
        assert watcher.map.locked == frozenset()
    finally:
        await watcher.stop()


async def _until(check: Callable[[], bool]) -> None:
    """Wait (up to 5 s) for the watcher's next polls to make ``check`` true."""
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the watcher did not see the change within 5 s")


def test_single_shard_map_from_settings_is_its_own_placement() -> None:
    from tessera.shared.settings import Settings

    m = ShardMap.from_settings(Settings())
    assert m.placement == ("shard-0",) and m.next_placement is None
    assert m.only() is not None and m.for_study("1.2.3").name == "shard-0"
