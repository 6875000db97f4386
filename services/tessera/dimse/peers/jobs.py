"""Peer jobs: rows of ``peer_job`` run by threads of the gateway (README "Peers").

A job is ``queued`` when made, ``running`` while a thread of a gateway has it, then
``done``, ``failed`` (the peer or Tessera stayed away past the retries, or refused) or
``cancelled`` (``DELETE /admin/peer-jobs/{id}``; a mirror runs until then). Its progress
is written as it goes, and the gateway that runs it touches it every few seconds; a
gateway that starts, and every running one now and then, takes up the jobs left queued
and those left running by a gateway that stopped (no touch for ``dimse_job_stale``
seconds). A pull or push taken up again lists what is still missing and goes on with
that; a mirror goes on from its saved cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import Coroutine
from typing import Any

import asyncpg

from tessera.dimse.archive import Archive, Refused, Unavailable
from tessera.dimse.peers.registry import PeerRegistry
from tessera.dimse.peers.remote import PeerRefused, PeerUnavailable, Remote
from tessera.dimse.peers.transfer import Progress, Transfer

log = logging.getLogger(__name__)

KINDS = ("pull", "push", "mirror")
_COLUMNS = "id, kind, peer, request, state, progress, detail, created_by, created_at, updated_at"
ENDED = ("done", "failed", "cancelled")


def job_json(row: asyncpg.Record) -> dict[str, Any]:
    progress = row["progress"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "peer": row["peer"],
        "request": json.loads(row["request"]),
        "state": row["state"],
        "progress": json.loads(progress) if isinstance(progress, str) else progress,
        "detail": row["detail"],
        "createdBy": row["created_by"],
        "created": row["created_at"].isoformat(),
        "updated": row["updated_at"].isoformat(),
    }


class PeerJobs:
    def __init__(
        self, pool: asyncpg.Pool, peers: PeerRegistry, archive: Archive, stale: float
    ) -> None:
        self.pool = pool
        self.peers = peers
        self.archive = archive
        self.stale = stale
        self.loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[str, threading.Event] = {}  # job id -> its stop flag
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._watch(), name="peer-jobs")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for flag in self._running.values():
            flag.set()

    async def _watch(self) -> None:
        """Touch the jobs this gateway runs; take up queued and abandoned ones."""
        while True:
            try:
                if self._running:
                    await self.pool.execute(
                        "UPDATE peer_job SET updated_at = now() WHERE id = ANY($1)"
                        " AND state = 'running'",
                        list(self._running),
                    )
                await self._take_up()
                await self._notice_cancels()
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                log.warning("peer jobs not checked: %s", e)
            await asyncio.sleep(max(0.5, min(self.stale / 3, 5.0)))

    async def _take_up(self) -> None:
        rows = await self.pool.fetch(
            "UPDATE peer_job SET state = 'queued', updated_at = now()"
            " WHERE state = 'running' AND updated_at < now() - make_interval(secs => $1)"
            " AND NOT (id = ANY($2)) RETURNING id",
            self.stale,
            list(self._running),
        )
        for row in rows:
            log.warning("peer job %s was left running: taken up again", row["id"])
        for row in await self.pool.fetch("SELECT id FROM peer_job WHERE state = 'queued'"):
            self._launch(row["id"])

    async def _notice_cancels(self) -> None:
        if not self._running:
            return
        rows = await self.pool.fetch(
            "SELECT id FROM peer_job WHERE id = ANY($1) AND state = 'cancelled'",
            list(self._running),
        )
        for row in rows:
            flag = self._running.get(row["id"])
            if flag is not None:
                flag.set()

    def _launch(self, job_id: str) -> None:
        if job_id in self._running:
            return
        self._running[job_id] = threading.Event()
        threading.Thread(
            target=self._run, args=(job_id,), name=f"peer-job-{job_id}", daemon=True
        ).start()

    async def create(
        self, kind: str, peer: str, request: dict[str, Any], by: str
    ) -> dict[str, Any]:
        job_id = secrets.token_hex(8)
        row = await self.pool.fetchrow(
            f"INSERT INTO peer_job (id, kind, peer, request, state, created_by)"
            f" VALUES ($1, $2, $3, $4, 'queued', $5) RETURNING {_COLUMNS}",
            job_id,
            kind,
            peer,
            json.dumps(request),
            by,
        )
        self._launch(job_id)
        return job_json(row)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM peer_job WHERE id = $1", job_id)
        return None if row is None else job_json(row)

    async def list(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM peer_job ORDER BY created_at DESC LIMIT $1", limit
        )
        return [job_json(r) for r in rows]

    async def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Cancel a job that has not ended (its thread stops at the next instance)."""
        await self.pool.execute(
            "UPDATE peer_job SET state = 'cancelled', updated_at = now() WHERE id = $1"
            " AND state IN ('queued', 'running')",
            job_id,
        )
        flag = self._running.get(job_id)
        if flag is not None:
            flag.set()
        return await self.get(job_id)

    # -- the job's thread ----------------------------------------------------------------
    def _db(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def _save(
        self, job_id: str, progress: Progress, state: str | None = None, detail: str = ""
    ) -> None:
        self._db(
            self.pool.execute(
                "UPDATE peer_job SET progress = $2, state = coalesce($3, state), detail = $4,"
                " updated_at = now() WHERE id = $1 AND state = 'running'",
                job_id,
                json.dumps(progress.to_json()),
                state,
                detail,
            )
        )

    def _run(self, job_id: str) -> None:
        stop = self._running[job_id]
        try:
            self._run_claimed(job_id, stop)
        except Exception:
            log.exception("peer job %s", job_id)
        finally:
            self._running.pop(job_id, None)

    def _run_claimed(self, job_id: str, stop: threading.Event) -> None:
        row = self._db(
            self.pool.fetchrow(
                f"UPDATE peer_job SET state = 'running', updated_at = now() WHERE id = $1"
                f" AND state = 'queued' RETURNING {_COLUMNS}",
                job_id,
            )
        )
        if row is None:
            return
        job = job_json(row)
        progress = Progress.from_json(job["progress"])
        peer = self._db(self.peers.get(job["peer"]))
        if peer is None:
            self._save(job_id, progress, "failed", f"no peer {job['peer']}")
            return
        log.info("peer job %s: %s %s", job_id, job["kind"], peer.name)
        with Remote(peer, stop.is_set) as remote:
            transfer = Transfer(
                self.archive,
                remote,
                job["request"],
                progress,
                lambda p: self._save(job_id, p),
                stop.is_set,
            )
            try:
                getattr(transfer, job["kind"])()
            except (PeerUnavailable, Unavailable) as e:
                if stop.is_set():
                    return
                self._save(job_id, progress, "failed", str(e)[:500])
                return
            except (PeerRefused, Refused) as e:
                self._save(job_id, progress, "failed", str(e)[:500])
                return
            except Exception as e:
                log.exception("peer job %s failed", job_id)
                self._save(job_id, progress, "failed", type(e).__name__)
                return
        if stop.is_set():
            return  # cancelled (its state says so), or this gateway is stopping
        failed = progress.failed > 0
        detail = f"{progress.failed} instances failed" if failed else ""
        self._save(job_id, progress, "failed" if failed else "done", detail)
