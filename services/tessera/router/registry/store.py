"""The shard registry in the router's PostgreSQL (``router_database_url``).

Holds the shards (name, service URLs, state) and the placement overrides: studies that
are not on the shard rendezvous hashing gives them, because they were pinned during a
transition or are being moved. Every router replica polls :meth:`Registry.changes_since`
every ``registry_poll`` seconds and applies what changed to its :class:`ShardMap`
(:class:`RegistryWatcher`), so a replica never needs a restart to see a new shard.

Every write draws a new ``registry_seq`` value in a trigger (migration
``router/migrations/0001_registry.sql``), under a transaction advisory lock so that
writes commit in seq order: a reader that has seen seq N has seen everything up to N.

Shard states: ``joining`` (registered, not yet a hash candidate: the transition in
progress), ``active`` (a hash candidate), ``draining`` (still a hash candidate until the
transition commits, then leaves ``placement``), ``removed`` (forgotten by routers).

A rebalance (issue 6) drives it so:

- add S: ``add_shard(S, ..., state="joining")`` (``next_placement`` now has S); list and
  ``pin`` the studies whose owner changes; ``commit_transition()`` (S active); move each
  pinned study, a batch at a time (``set_locked_many(uids, True)`` ... ``release_many(uids)``
  in one transaction each; a release also clears the lock).
- drain D: ``set_shard_state(D, "draining")`` (D stays in ``placement``, leaves
  ``next_placement``); pin D's studies to D; ``commit_transition()`` (D leaves
  ``placement``, still known and searched); move them; ``set_shard_state(D, "removed")``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

import asyncpg

from tessera.router.shards import ShardMap
from tessera.shared.db.migrate import apply_migrations

log = logging.getLogger(__name__)

ShardState = Literal["joining", "active", "draining", "removed"]
SHARD_STATES: tuple[ShardState, ...] = ("joining", "active", "draining", "removed")
MIGRATIONS = "tessera.router.registry"


@dataclass(frozen=True, slots=True)
class ShardRow:
    name: str
    ingest_url: str
    index_url: str
    retrieve_url: str
    state: ShardState
    created_at: datetime | None = None
    # a draining shard is a hash candidate until commit_transition() (then False)
    in_placement: bool = True


@dataclass(frozen=True, slots=True)
class OverrideRow:
    """A placement override; ``released`` means deleted (a tombstone routers drop)."""

    study_instance_uid: str
    shard: str
    locked: bool
    released: bool
    seq: int


def _shard(row: asyncpg.Record) -> ShardRow:
    return ShardRow(
        row["name"],
        row["ingest_url"],
        row["index_url"],
        row["retrieve_url"],
        cast(ShardState, row["state"]),
        row["created_at"],
        row["in_placement"],
    )


def _override(row: asyncpg.Record) -> OverrideRow:
    return OverrideRow(
        row["study_instance_uid"], row["shard"], row["locked"], row["released"], row["seq"]
    )


def _check_state(state: str) -> ShardState:
    if state not in SHARD_STATES:
        raise ValueError(f"shard state must be one of {', '.join(SHARD_STATES)}, not {state!r}")
    return cast(ShardState, state)


class Registry:
    """Reads and writes the registry through an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def connect(
        cls, dsn: str, *, migrate: bool = True, min_size: int = 1, max_size: int = 4
    ) -> Registry:
        """A registry on ``dsn``, its migrations applied first unless ``migrate`` is False."""
        if migrate:
            await apply_migrations(dsn, MIGRATIONS)
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
        assert pool is not None
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    # --- shards ---------------------------------------------------------------------------

    async def shards(self) -> list[ShardRow]:
        """Every shard, removed ones included, by name."""
        rows = await self.pool.fetch("SELECT * FROM shard ORDER BY name")
        return [_shard(r) for r in rows]

    async def shard(self, name: str) -> ShardRow | None:
        row = await self.pool.fetchrow("SELECT * FROM shard WHERE name = $1", name)
        return None if row is None else _shard(row)

    async def add_shard(
        self,
        name: str,
        ingest_url: str,
        index_url: str,
        retrieve_url: str,
        state: str = "joining",
    ) -> ShardRow:
        """Register a shard; an existing one of that name gets the new URLs, keeps its state."""
        row = await self.pool.fetchrow(
            "INSERT INTO shard (name, ingest_url, index_url, retrieve_url, state)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (name) DO UPDATE SET ingest_url = EXCLUDED.ingest_url,"
            "  index_url = EXCLUDED.index_url, retrieve_url = EXCLUDED.retrieve_url"
            " RETURNING *",
            name,
            ingest_url,
            index_url,
            retrieve_url,
            _check_state(state),
        )
        assert row is not None
        return _shard(row)

    async def set_shard_state(self, name: str, state: str) -> None:
        """Set a shard's state. ``draining`` starts a drain transition: the shard stays a
        hash candidate (``placement``) but leaves ``next_placement`` until
        :meth:`commit_transition`; ``active`` on a joining shard commits its join."""
        status = await self.pool.execute(
            "UPDATE shard SET state = $2, in_placement = true WHERE name = $1",
            name,
            _check_state(state),
        )
        if status.endswith(" 0"):
            raise KeyError(f"no shard named {name!r}")

    async def commit_transition(self) -> None:
        """Step 3 of a rebalance, in one transaction: joining shards become active, and
        draining shards leave ``placement`` (they stay known and searched, holding their
        pinned studies, until set ``removed``). ``next_placement`` is then None."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE shard SET state = 'active' WHERE state = 'joining'")
            await conn.execute(
                "UPDATE shard SET in_placement = false WHERE state = 'draining' AND in_placement"
            )

    # --- overrides ------------------------------------------------------------------------

    async def pin(self, study_uids: Iterable[str], shard: str) -> dict[str, str]:
        """Pin studies to ``shard``; returns the owner of each after the call.

        A study without an override gets one; a released override (tombstone) comes back
        to life on ``shard``; a live override is kept as it is (its shard wins: another
        writer pinned or moved it first), so concurrent pins agree.
        """
        uids = list(dict.fromkeys(study_uids))
        if not uids:
            return {}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO placement_override (study_instance_uid, shard)"
                " SELECT unnest($1::text[]), $2"
                " ON CONFLICT (study_instance_uid) DO UPDATE"
                "  SET shard = EXCLUDED.shard, released = false, locked = false"
                "  WHERE placement_override.released",
                uids,
                shard,
            )
            rows = await conn.fetch(
                "SELECT study_instance_uid, shard FROM placement_override"
                " WHERE study_instance_uid = ANY($1::text[])",
                uids,
            )
        return {r["study_instance_uid"]: r["shard"] for r in rows}

    async def set_locked(self, study_instance_uid: str, locked: bool) -> None:
        """Lock (STOW of the study answers 503) or unlock a live override. Locking needs
        one (KeyError otherwise); unlocking a released or missing one does nothing."""
        status = await self.pool.execute(
            "UPDATE placement_override SET locked = $2"
            " WHERE study_instance_uid = $1 AND NOT released",
            study_instance_uid,
            locked,
        )
        if locked and status.endswith(" 0"):
            raise KeyError(f"no live override for study {study_instance_uid}")

    async def release(self, study_instance_uid: str) -> None:
        """Delete an override (a tombstone, so pollers see it; its lock goes with it):
        the hash decides again."""
        await self.pool.execute(
            "UPDATE placement_override SET released = true, locked = false"
            " WHERE study_instance_uid = $1 AND NOT released",
            study_instance_uid,
        )

    async def set_locked_many(self, study_uids: Iterable[str], locked: bool) -> set[str]:
        """:meth:`set_locked` for many studies in one transaction (a rebalance locks and
        unlocks a batch at once, so it waits for the routers once per batch). Each row
        still takes its own ``seq``. Returns the studies that have a live override (the
        ones now locked or unlocked); the others are released or unknown and unchanged."""
        uids = list(dict.fromkeys(study_uids))
        if not uids:
            return set()
        rows = await self.pool.fetch(
            "UPDATE placement_override SET locked = $2"
            " WHERE study_instance_uid = ANY($1::text[]) AND NOT released"
            " RETURNING study_instance_uid",
            uids,
            locked,
        )
        return {r["study_instance_uid"] for r in rows}

    async def release_many(self, study_uids: Iterable[str]) -> None:
        """:meth:`release` for many studies in one transaction (one ``seq`` each)."""
        uids = list(dict.fromkeys(study_uids))
        if uids:
            await self.pool.execute(
                "UPDATE placement_override SET released = true, locked = false"
                " WHERE study_instance_uid = ANY($1::text[]) AND NOT released",
                uids,
            )

    async def overrides(self) -> list[OverrideRow]:
        """The live overrides."""
        rows = await self.pool.fetch(
            "SELECT * FROM placement_override WHERE NOT released ORDER BY seq"
        )
        return [_override(r) for r in rows]

    # --- polling --------------------------------------------------------------------------

    async def changes_since(self, seq: int) -> tuple[list[ShardRow] | None, list[OverrideRow], int]:
        """What changed after ``seq``: (every shard if the shard table changed else None,
        the overrides written after ``seq`` in seq order, tombstones included, the seq to
        pass next time). ``seq=0`` gives everything."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            shards_seq = await conn.fetchval("SELECT shards_seq FROM registry_state WHERE id = 1")
            shards = None
            if shards_seq > seq:
                shards = [_shard(r) for r in await conn.fetch("SELECT * FROM shard ORDER BY name")]
            rows = await conn.fetch(
                "SELECT * FROM placement_override WHERE seq > $1 ORDER BY seq", seq
            )
        overrides = [_override(r) for r in rows]
        new_seq = max([seq, shards_seq, *(o.seq for o in overrides)])
        return shards, overrides, new_seq


class RegistryWatcher:
    """The current :class:`ShardMap` of a router, refreshed by polling the registry."""

    def __init__(self, registry: Registry, poll: float) -> None:
        self.registry = registry
        self.poll = poll
        self.seq = 0
        self._shards: list[ShardRow] = []
        self._overrides: dict[str, OverrideRow] = {}
        self.map = ShardMap.from_rows([], [])
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> bool:
        """Apply the changes since the last refresh; True if there were any."""
        shards, overrides, seq = await self.registry.changes_since(self.seq)
        if shards is None and not overrides:
            self.seq = seq
            return False
        if shards is not None:
            self._shards = shards
        for o in overrides:
            if o.released:
                self._overrides.pop(o.study_instance_uid, None)
            else:
                self._overrides[o.study_instance_uid] = o
        self.map = ShardMap.from_rows(self._shards, self._overrides.values())
        self.seq = seq
        return True

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="registry-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError) as e:  # keep the last map; retry
                log.warning("registry poll failed: %s", e)
