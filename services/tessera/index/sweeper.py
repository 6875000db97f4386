"""The sweeper: removes what no row references from a shard's object store (issue 15).

Three kinds of garbage, each only once older than ``sweep_grace`` seconds:

- **orphan instance objects** (``instances/...``): written by a STOW whose index commit
  never happened (a Redis or index-worker crash between the two), or left by a delete
  that crashed between its commit and the object removal;
- **derived objects** (``derived/<sha256>/``, ``rendered/<sha256>/``) of an instance
  object no row references (a transcode that finished after a delete);
- **temporaries**: ``.put-*`` files of a killed local write, unfinished S3 multipart
  uploads.

Never an object a STOW is about to reference: each removal is claimed first through
:mod:`tessera.shared.storage.guard` (a STOW pins a key before it looks whether the
object exists), the row is looked for again under the claim, and the object's
modification time too (a STOW of the same bytes renews it).

A pass walks the store in key order, phase by phase, and writes where it is to
``sweep_progress`` after every batch: a sweeper stopped mid-pass resumes there.
``python -m tessera.index.sweeper`` runs a pass every ``sweep_interval`` seconds with
``/healthz``, ``/readyz`` and ``/metrics`` on ``sweeper_port``; ``--once`` runs one
pass and prints what it found as JSON; ``--dry-run`` removes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from tessera.shared import metrics
from tessera.shared.db.pool import create_pool
from tessera.shared.health_server import HealthServer, redis_and_database
from tessera.shared.settings import Settings
from tessera.shared.storage import ObjectStore, instance_key, instance_keys, open_store
from tessera.shared.storage.guard import ObjectGuard

log = logging.getLogger("tessera.index.sweeper")

BATCH = 500
PHASES = ("temporaries", "instances", "derived", "done")


async def remove_unreferenced(
    db: asyncpg.Pool | asyncpg.Connection,
    store: ObjectStore,
    guard: ObjectGuard,
    storage_key: str,
    older_than: float | None = None,
) -> bool:
    """Remove the instance object ``storage_key`` and what was derived from it if no row
    references it, no STOW has it pinned, and (with ``older_than``, a time) it was not
    written or touched since; True if removed. What a delete and the sweeper share."""
    if not await guard.claim(storage_key):
        return False
    try:
        if await db.fetchval("SELECT 1 FROM instance WHERE storage_key = $1", storage_key):
            return False
        if older_than is not None:
            modified = await store.modified(storage_key)
            if modified is not None and modified >= older_than:
                return False
        await store.delete_instance(storage_key)
        return True
    finally:
        await guard.release(storage_key)


@dataclass
class Pass:
    """One pass's position and what it found (``kind`` -> count)."""

    phase: str = PHASES[0]
    after_key: str = ""
    counts: Counter[str] = field(default_factory=Counter)


class Sweeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        store: ObjectStore,
        guard: ObjectGuard,
        grace: float,
        dry_run: bool = False,
    ) -> None:
        self.pool = pool
        self.store = store
        self.guard = guard
        self.grace = grace
        self.dry_run = dry_run

    async def sweep(self) -> dict[str, int]:
        """One whole pass (resumed where a stopped one was); what it found, by kind."""
        current = await self._resume()
        cutoff = time.time() - self.grace
        while current.phase != "done":
            if current.phase == "temporaries":
                await self._temporaries(current, cutoff)
            elif current.phase == "instances":
                await self._instances(current, cutoff)
            else:
                await self._derived(current, cutoff)
            current.phase, current.after_key = PHASES[PHASES.index(current.phase) + 1], ""
            await self._save(current)
        metrics.SWEEPER_PASSES.inc()
        return dict(current.counts)

    def _found(self, current: Pass, kind: str, removed: bool) -> None:
        action = "would_remove" if self.dry_run else "removed"
        if removed or self.dry_run:
            current.counts[kind] += 1
            metrics.SWEEPER_OBJECTS.labels(kind, action).inc()

    async def _temporaries(self, current: Pass, cutoff: float) -> None:
        async for temporary in self.store.temporaries():
            if temporary.started < cutoff:
                if not self.dry_run:
                    await self.store.remove_temporary(temporary)
                self._found(current, "temporary", True)

    async def _instances(self, current: Pass, cutoff: float) -> None:
        batch: list[tuple[str, float]] = []
        async for obj in self.store.list_objects("instances/", current.after_key):
            batch.append((obj.key, obj.modified))
            if len(batch) >= BATCH:
                await self._instance_batch(current, batch, cutoff)
                batch = []
        await self._instance_batch(current, batch, cutoff)

    async def _instance_batch(
        self, current: Pass, batch: list[tuple[str, float]], cutoff: float
    ) -> None:
        if not batch:
            return
        rows = await self.pool.fetch(
            "SELECT storage_key FROM instance WHERE storage_key = ANY($1::text[])",
            [key for key, _ in batch],
        )
        referenced = {r[0] for r in rows}
        for key, modified in batch:
            if key in referenced or modified >= cutoff:
                continue
            removed = self.dry_run or await remove_unreferenced(
                self.pool, self.store, self.guard, key, cutoff
            )
            self._found(current, "orphan", removed)
        current.after_key = batch[-1][0]
        await self._save(current)

    async def _derived(self, current: Pass, cutoff: float) -> None:
        """Caches (``derived/<sha>/``, ``rendered/<sha>/``) of instance objects no row
        references: by stem, the newest of its objects deciding its age."""
        for top in ("derived/", "rendered/"):
            start = current.after_key if current.after_key.startswith(top) else ""
            if current.after_key > top and not start:
                continue  # this prefix was swept before the restart
            stems: dict[str, float] = {}
            async for obj in self.store.list_objects(top, start):
                stem = obj.key[len(top) :].split("/", 1)[0]
                stems[stem] = max(stems.get(stem, 0.0), obj.modified)
                if len(stems) > BATCH:
                    last = next(reversed(stems))
                    done = {s: m for s, m in stems.items() if s != last}
                    await self._derived_batch(current, top, done, cutoff)
                    stems = {last: stems[last]}
            await self._derived_batch(current, top, stems, cutoff)

    async def _derived_batch(
        self, current: Pass, top: str, stems: dict[str, float], cutoff: float
    ) -> None:
        if not stems:
            return
        # a row may hold the stem's object under either layout (instance_keys)
        keys = {key: stem for stem in stems if len(stem) == 64 for key in instance_keys(stem)}
        rows = await self.pool.fetch(
            "SELECT storage_key FROM instance WHERE storage_key = ANY($1::text[])", list(keys)
        )
        referenced = {keys[r[0]] for r in rows}
        for stem, modified in stems.items():
            if stem in referenced or modified >= cutoff:
                continue
            key = instance_key(stem)  # what a STOW of these bytes pins
            removed = self.dry_run
            if not self.dry_run and await self.guard.claim(key):
                try:
                    if not await self.pool.fetchval(
                        "SELECT 1 FROM instance WHERE storage_key = ANY($1::text[])",
                        list(instance_keys(stem)),
                    ):
                        await self.store.delete_prefix(f"{top}{stem}/")
                        removed = True
                finally:
                    await self.guard.release(key)
            self._found(current, "derived", removed)
        current.after_key = f"{top}{next(reversed(stems))}/\U0010ffff"
        await self._save(current)

    async def _resume(self) -> Pass:
        if self.dry_run:
            return Pass()  # a dry run leaves the real pass's position alone
        row = await self.pool.fetchrow("SELECT phase, after_key, counts FROM sweep_progress")
        if row is None or row["phase"] == "done":
            current = Pass()
            await self.pool.execute(
                """INSERT INTO sweep_progress (phase, after_key, counts) VALUES ($1, '', '{}')
                   ON CONFLICT (id) DO UPDATE SET phase = $1, after_key = '', counts = '{}',
                       started_at = now(), finished_at = NULL""",
                current.phase,
            )
            return current
        log.info("resuming the sweep at %s after %r", row["phase"], row["after_key"])
        return Pass(row["phase"], row["after_key"], Counter(row["counts"]))

    async def _save(self, current: Pass) -> None:
        if self.dry_run:
            return
        await self.pool.execute(
            """UPDATE sweep_progress SET phase = $1, after_key = $2, counts = $3,
                   finished_at = CASE WHEN $1 = 'done' THEN now() END""",
            current.phase,
            current.after_key,
            dict(current.counts),  # the pool's jsonb codec (tessera.shared.db.pool)
        )


async def run(settings: Settings, once: bool, dry_run: bool, grace: float) -> dict[str, Any]:
    pool = await create_pool(settings.database_url, max_size=2)
    redis = aioredis.from_url(settings.redis_url)
    store = open_store(settings)
    guard = ObjectGuard(redis, settings.shard, pin_ttl=settings.index_timeout + 60)
    sweeper = Sweeper(pool, store, guard, grace, dry_run)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    health = None
    try:
        if once:
            return await sweeper.sweep()
        health = HealthServer(
            settings.host,
            settings.sweeper_port,
            partial(redis_and_database, settings),
            None,
            settings,
        ).start()
        while not stopping.is_set():
            try:
                found = await sweeper.sweep()
                log.info("sweep done: %s", found or "nothing to remove")
            except (OSError, asyncpg.PostgresError, aioredis.RedisError) as e:
                log.warning("sweep interrupted (%s); resuming on the next pass", e)
            try:
                await asyncio.wait_for(stopping.wait(), settings.sweep_interval)
            except TimeoutError:
                pass
        return {}
    finally:
        if health is not None:
            health.stop()
        await store.close()
        await redis.aclose()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.index.sweeper",
        description="remove stored objects that no row references (README 'Garbage')",
    )
    parser.add_argument("--once", action="store_true", help="one pass, then print and exit")
    parser.add_argument("--dry-run", action="store_true", help="find, count, remove nothing")
    parser.add_argument(
        "--grace", type=float, default=None, help="seconds (default: TESSERA_SWEEP_GRACE)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    grace = settings.sweep_grace if args.grace is None else args.grace
    found = asyncio.run(run(settings, args.once or args.dry_run, args.dry_run, grace))
    if args.once or args.dry_run:
        json.dump({"dry_run": args.dry_run, "found": found}, sys.stdout)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
