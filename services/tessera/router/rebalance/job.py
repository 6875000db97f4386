"""A rebalance job: add a shard or drain one, moving the studies whose placement changes.

The job's state is rows of the router database (``rebalance_job``, ``rebalance_study``,
migration ``router/migrations/0002_rebalance.sql``), so a worker that dies anywhere
resumes where the rows say (:meth:`JobRunner.run`; a PostgreSQL advisory lock on the job
keeps two workers from running it at once). The phases (design steps 1-5):

``pending``
    :func:`start_add` registered the shard as ``joining`` (or :func:`start_drain` set it
    ``draining``): the job waits two registry polls so that every router sees the
    transition and pins the new studies it stores whose placement changes.
``listing``
    Every study of every shard is listed (keyset pages of the index's internal listing);
    a study whose shard after the transition (``place(uid, final_placement)``) is not the
    one holding it is pinned there (an override) and becomes a ``rebalance_study`` row,
    as does every live override that does not point at its final shard (studies routers
    pinned meanwhile). Then the transition commits (the new shard becomes a hash
    candidate, a drained one stops being one), and after two more polls the listing
    runs once more, for studies whose rows committed late (a STOW begun before routers
    saw the transition): those are pinned now.
``moving``
    The studies go through :class:`tessera.router.rebalance.batch.BatchMover`:
    ``rebalance_concurrency`` copied at a time, then locked, released and deleted at
    their source in batches (``rebalance_switch_studies``), so the routers' waits are
    paid once per batch; counters (studies, instances, bytes) are updated in the same
    transaction as each study's state. Locks a crashed run left are lifted first.
``done`` / ``failed``
    A drained shard left empty is set ``removed``. A study that cannot be moved stays on
    its source (pinned) and is counted in ``failed_studies``; the job then ends
    ``failed`` with the first reason. An error that is not the study's (a shard or the
    registry not answering) is recorded in ``error`` and the job is retried by the worker.

Where a study holds its data: a shard ``S`` holds the real study ``uid`` when the
override says ``S``, or without an override when ``S`` is its shard before
(``old_placement``) or after (``final_placement``) the transition; anything else is a
copy in the middle of a move and is left alone by the listing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from tessera.router.placement import place
from tessera.router.rebalance.batch import BatchMover, Study
from tessera.router.rebalance.move import TIMEOUT, Copied, MoveError, Mover, ShardClient
from tessera.router.registry import Registry
from tessera.router.shards import ShardMap
from tessera.shared.auth.internal import httpx_auth
from tessera.shared.errors import Conflict, NotFound
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

JOB_LOCK = 0x7E55  # first key of pg_try_advisory_lock(JOB_LOCK, job id)
RUNNING = ("pending", "listing", "moving")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    shard: str
    state: str
    old_placement: tuple[str, ...]
    final_placement: tuple[str, ...]


def _job(row: asyncpg.Record) -> Job:
    return Job(
        row["id"],
        row["kind"],
        row["shard"],
        row["state"],
        tuple(row["old_placement"] or ()),
        tuple(row["final_placement"] or ()),
    )


# --- starting jobs (the admin API calls these) -----------------------------------------------


async def _check_idle(registry: Registry) -> ShardMap:
    running = await registry.pool.fetchval(
        "SELECT id FROM rebalance_job WHERE state = ANY($1::text[])", list(RUNNING)
    )
    if running is not None:
        raise Conflict(f"rebalance job {running} is still running; wait for it to end")
    smap = ShardMap.from_rows(await registry.shards(), [])
    if smap.next_placement is not None:
        raise Conflict("a shard transition is in progress without a job; finish it first")
    return smap


async def _insert_job(
    registry: Registry, kind: str, shard: str, old: Iterable[str], final: Iterable[str]
) -> int:
    try:
        job_id: int = await registry.pool.fetchval(
            "INSERT INTO rebalance_job (kind, shard, old_placement, final_placement)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            kind,
            shard,
            sorted(old),
            sorted(final),
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("another rebalance job started meanwhile") from None
    return job_id


async def start_add(
    registry: Registry, name: str, ingest_url: str, index_url: str, retrieve_url: str
) -> int:
    """Register shard ``name`` as joining and create its job; the job's id."""
    smap = await _check_idle(registry)
    existing = await registry.shard(name)
    if existing is not None and existing.state != "removed":
        raise Conflict(f"shard {name!r} is already registered ({existing.state})")
    old = smap.placement
    row = await registry.add_shard(name, ingest_url, index_url, retrieve_url, "joining")
    if row.state != "joining":  # a removed shard coming back
        await registry.set_shard_state(name, "joining")
    return await _insert_job(registry, "add", name, old, {*old, name})


async def start_drain(registry: Registry, name: str) -> int:
    """Set shard ``name`` draining and create the job that empties it; the job's id."""
    smap = await _check_idle(registry)
    existing = await registry.shard(name)
    if existing is None or existing.state == "removed":
        raise NotFound(f"no shard {name!r}")
    if existing.state != "active":
        raise Conflict(f"shard {name!r} is {existing.state}, not active")
    old = smap.placement
    final = [n for n in old if n != name]
    if not final:
        raise Conflict(f"shard {name!r} is the last active shard; add another first")
    await registry.set_shard_state(name, "draining")
    return await _insert_job(registry, "drain", name, old, final)


# --- progress --------------------------------------------------------------------------------


async def job_rows(registry: Registry, job_id: int | None = None, limit: int = 20) -> list[Any]:
    if job_id is not None:
        return await registry.pool.fetch("SELECT * FROM rebalance_job WHERE id = $1", job_id)
    return await registry.pool.fetch("SELECT * FROM rebalance_job ORDER BY id DESC LIMIT $1", limit)


def progress(row: asyncpg.Record, now: datetime | None = None) -> dict[str, Any]:
    """A job's progress as JSON: instances ``total``/``moved``, ``bytes``, ``rate``
    (instances/s since copying began), ``eta`` (seconds, None when unknown)."""
    now = now or datetime.now(UTC)
    end = row["finished_at"] or now
    elapsed = (end - row["moving_at"]).total_seconds() if row["moving_at"] else 0.0
    moved, total = row["moved_instances"], row["total_instances"]
    rate = moved / elapsed if elapsed > 0 else 0.0
    eta = None
    if row["state"] in RUNNING and rate > 0:
        eta = max(total - moved, 0) / rate
    elif row["state"] == "done":
        eta = 0.0
    return {
        "id": row["id"],
        "kind": row["kind"],
        "shard": row["shard"],
        "state": row["state"],
        "studies": {
            "total": row["total_studies"],
            "done": row["done_studies"],
            "failed": row["failed_studies"],
        },
        "total": total,
        "moved": moved,
        "bytes": row["moved_bytes"],
        "rate": round(rate, 2),
        "bytes_rate": round(row["moved_bytes"] / elapsed, 1) if elapsed > 0 else 0.0,
        "eta": None if eta is None else round(eta, 1),
        "elapsed": round(elapsed, 2),
        "error": row["error"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


# --- running ---------------------------------------------------------------------------------


class JobRunner:
    """Runs (or resumes) one job to its end."""

    def __init__(self, settings: Settings, registry: Registry, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client
        self.pool = registry.pool
        self.lock_wait = 2 * settings.registry_poll

    async def run(self, job_id: int) -> str:
        """The state the job ended in, or ``busy`` if another worker is running it."""
        async with self.pool.acquire() as lock:
            if not await lock.fetchval("SELECT pg_try_advisory_lock($1, $2)", JOB_LOCK, job_id):
                return "busy"
            try:
                return await self._run(job_id)
            finally:
                await lock.execute("SELECT pg_advisory_unlock($1, $2)", JOB_LOCK, job_id)

    async def _load(self, job_id: int) -> Job:
        row = await self.pool.fetchrow("SELECT * FROM rebalance_job WHERE id = $1", job_id)
        if row is None:
            raise KeyError(f"no rebalance job {job_id}")
        return _job(row)

    async def _set(self, job: Job, state: str, **extra: Any) -> Job:
        sets = ", ".join(f"{k} = ${i + 3}" for i, k in enumerate(extra))
        await self.pool.execute(
            f"UPDATE rebalance_job SET state = $2, updated_at = now(){', ' + sets if sets else ''}"
            " WHERE id = $1",
            job.id,
            state,
            *extra.values(),
        )
        return await self._load(job.id)

    async def _run(self, job_id: int) -> str:
        job = await self._load(job_id)
        if job.state not in RUNNING:
            return job.state
        await self.pool.execute("UPDATE rebalance_job SET error = NULL WHERE id = $1", job.id)
        if job.state == "pending":
            await asyncio.sleep(self.lock_wait)  # every router sees the transition
            job = await self._set(job, "listing")
        if job.state == "listing":
            await self.list_studies(job)
            await self.registry.commit_transition()
            await asyncio.sleep(self.lock_wait)  # every router sees the commit
            await self.list_studies(job)
            job = await self._set(job, "moving", moving_at=datetime.now(UTC))
        await self.move_all(job)
        return await self._finish(job)

    async def list_studies(self, job: Job) -> None:
        """Pin and record the studies whose shard changes (see the module docstring)."""
        smap = ShardMap.from_rows(await self.registry.shards(), [])
        overrides = {o.study_instance_uid: o.shard for o in await self.registry.overrides()}
        for shard in smap.all():
            async for page in ShardClient(self.client, shard).studies():
                moving: list[tuple[str, int, str]] = []
                for uid, n in page:
                    pinned = overrides.get(uid)
                    if pinned is not None and pinned != shard.name:
                        continue  # a copy: the owner is listed on its own shard
                    homes = {place(uid, job.final_placement)}
                    if job.old_placement:
                        homes.add(place(uid, job.old_placement))
                    if pinned is None and shard.name not in homes:
                        continue  # a copy left by a move in progress
                    dest = place(uid, job.final_placement)
                    if dest != shard.name:
                        moving.append((uid, n, dest))
                if moving:
                    owners = await self.registry.pin((u for u, _, _ in moving), shard.name)
                    await self._add_work(job, [(u, owners[u], d, n) for u, n, d in moving])
        # overrides not pointing at their final shard: studies routers pinned meanwhile
        await self._add_work(
            job,
            [
                (o.study_instance_uid, o.shard, dest, 0)
                for o in await self.registry.overrides()
                if o.shard != (dest := place(o.study_instance_uid, job.final_placement))
            ],
        )
        await self.pool.execute(
            """UPDATE rebalance_job j SET total_studies = c.n, total_instances = c.i,
                      updated_at = now()
                 FROM (SELECT count(*) AS n, coalesce(sum(instances), 0) AS i
                         FROM rebalance_study WHERE job_id = $1) c
                WHERE j.id = $1""",
            job.id,
        )

    async def _add_work(self, job: Job, rows: list[tuple[str, str, str, int]]) -> None:
        rows = [r for r in rows if r[1] != r[2]]
        if not rows:
            return
        await self.pool.execute(
            """INSERT INTO rebalance_study (job_id, study_instance_uid, source, target, instances)
               SELECT $1, u, s, t, n
                 FROM unnest($2::text[], $3::text[], $4::text[], $5::int[]) AS w(u, s, t, n)
               ON CONFLICT DO NOTHING""",
            job.id,
            *(list(col) for col in zip(*rows, strict=True)),
        )

    async def move_all(self, job: Job) -> None:
        """Move every study not done yet, in batches (:mod:`.batch`)."""
        await self._unlock_leftovers()
        smap = ShardMap.from_rows(await self.registry.shards(), [])
        while await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM rebalance_study"
            " WHERE job_id = $1 AND state NOT IN ('done', 'failed'))",
            job.id,
        ):
            mover = BatchMover(
                self.registry,
                self.lock_wait,
                concurrency=self.settings.rebalance_concurrency,
                batch_studies=self.settings.rebalance_switch_studies,
                batch_bytes=self.settings.rebalance_switch_bytes,
                save=lambda uid, state, copied: self._save(job, uid, state, copied),
                fail=lambda uid, e: self._fail(job, uid, e),
            )
            await mover.run(self._todo(job, smap))

    async def _unlock_leftovers(self) -> None:
        """Unlock what a crashed run left locked (only one job runs at a time, and this
        one has locked nothing yet): routers accept STOWs of those studies again, which
        go through their batch again, copy first."""
        locked = [o.study_instance_uid for o in await self.registry.overrides() if o.locked]
        if locked:
            log.info("unlocking %d studies locked by an interrupted run", len(locked))
            await self.registry.set_locked_many(locked, False)

    async def _todo(self, job: Job, smap: ShardMap) -> AsyncIterator[Study]:
        """The studies not done yet, by key, a page at a time."""
        after = ""
        while True:
            rows = await self.pool.fetch(
                """SELECT study_instance_uid, source, target, state FROM rebalance_study
                    WHERE job_id = $1 AND state NOT IN ('done', 'failed')
                      AND study_instance_uid > $2
                    ORDER BY study_instance_uid LIMIT 1000""",
                job.id,
                after,
            )
            if not rows:
                return
            for row in rows:
                uid = row["study_instance_uid"]
                mover = Mover(
                    ShardClient(self.client, smap.get(row["source"], uid)),
                    ShardClient(self.client, smap.get(row["target"], uid)),
                    self.settings.rebalance_batch_size,
                    self.settings.rebalance_batch_bytes,
                )
                yield Study(uid, row["state"], mover)
            after = rows[-1]["study_instance_uid"]

    async def _fail(self, job: Job, uid: str, e: MoveError) -> None:
        """The study stays on its source (pinned there); the job records why."""
        log.warning("study %s not moved: %s", uid, e)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE rebalance_study SET state = 'failed', error = $3,"
                " attempts = attempts + 1, updated_at = now()"
                " WHERE job_id = $1 AND study_instance_uid = $2",
                job.id,
                uid,
                str(e),
            )
            await conn.execute(
                "UPDATE rebalance_job SET failed_studies = failed_studies + 1,"
                " error = coalesce(error, $2), updated_at = now() WHERE id = $1",
                job.id,
                str(e),
            )

    async def _save(self, job: Job, uid: str, state: str, copied: Copied) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            before = await conn.fetchrow(
                "SELECT instances, bytes FROM rebalance_study"
                " WHERE job_id = $1 AND study_instance_uid = $2 FOR UPDATE",
                job.id,
                uid,
            )
            n = max(before["instances"], copied.instances)
            size = max(before["bytes"], copied.bytes)
            await conn.execute(
                "UPDATE rebalance_study SET state = $3, instances = $4, bytes = $5,"
                " updated_at = now() WHERE job_id = $1 AND study_instance_uid = $2",
                job.id,
                uid,
                state,
                n,
                size,
            )
            done = state == "done"
            await conn.execute(
                "UPDATE rebalance_job SET total_instances = total_instances + $2,"
                " done_studies = done_studies + $3, moved_instances = moved_instances + $4,"
                " moved_bytes = moved_bytes + $5, updated_at = now() WHERE id = $1",
                job.id,
                n - before["instances"],
                int(done),
                n if done else 0,
                size if done else 0,
            )

    async def _finish(self, job: Job) -> str:
        row = await self.pool.fetchrow("SELECT * FROM rebalance_job WHERE id = $1", job.id)
        if row["failed_studies"]:
            await self._set(job, "failed", finished_at=datetime.now(UTC))
            return "failed"
        if job.kind == "drain":
            left = await self._left_on(job.shard)
            if left:
                await self._set(
                    job,
                    "failed",
                    finished_at=datetime.now(UTC),
                    error=f"{left} studies are still on {job.shard}; it is kept",
                )
                return "failed"
            await self.registry.set_shard_state(job.shard, "removed")
        await self._set(job, "done", finished_at=datetime.now(UTC))
        return "done"

    async def _left_on(self, name: str) -> int:
        """Studies a draining shard still owns (its own rows, or live overrides to it)."""
        shard = ShardMap.from_rows(await self.registry.shards(), []).get(name)
        pinned = {o.study_instance_uid for o in await self.registry.overrides() if o.shard == name}
        left = len(pinned)
        async for page in ShardClient(self.client, shard).studies():
            left += sum(1 for uid, _ in page if uid not in pinned)
        return left


async def run_job(settings: Settings, job_id: int) -> str:
    """Run or resume job ``job_id`` with a registry and HTTP client of its own."""
    registry = await Registry.connect(settings.router_database_url, max_size=8)
    try:
        async with httpx.AsyncClient(
            timeout=TIMEOUT, trust_env=False, auth=httpx_auth(settings)
        ) as client:
            runner = JobRunner(settings, registry, client)
            try:
                return await runner.run(job_id)
            except Exception as e:
                while isinstance(e, ExceptionGroup):  # from the TaskGroup of move_all
                    e = e.exceptions[0]
                await registry.pool.execute(
                    "UPDATE rebalance_job SET error = $2, updated_at = now() WHERE id = $1",
                    job_id,
                    f"{type(e).__name__}: {e} (will retry)",
                )
                raise
    finally:
        await registry.close()


async def unfinished_jobs(settings: Settings) -> list[int]:
    registry = await Registry.connect(settings.router_database_url, max_size=1)
    try:
        rows = await registry.pool.fetch(
            "SELECT id FROM rebalance_job WHERE state = ANY($1::text[]) ORDER BY id",
            list(RUNNING),
        )
    finally:
        await registry.close()
    return [r["id"] for r in rows]
