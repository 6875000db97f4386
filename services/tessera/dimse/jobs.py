"""SCU jobs: C-MOVE from a node into Tessera, C-STORE from Tessera to a node.

A job is a row of ``dimse_job`` (its request, state and counts) run by a thread of the
gateway that created it; its counts are written as it goes. A gateway that starts takes
up the jobs left ``queued``, and those left ``running`` by a gateway that stopped
(no progress written for ``dimse_job_stale`` seconds): a move is asked again (the instances already
stored are stored again unchanged), a store goes on after the instances it counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg

from tessera.dimse import scu
from tessera.dimse.archive import Refused, Unavailable
from tessera.dimse.context import Gateway
from tessera.dimse.retrieve import matches

log = logging.getLogger(__name__)

_COLUMNS = "id, kind, node, request, state, total, completed, warning, failed, detail, " \
    "created_at, updated_at"  # fmt: skip


def job_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "node": row["node"],
        "request": json.loads(row["request"]),
        "state": row["state"],
        "total": row["total"],
        "completed": row["completed"],
        "warning": row["warning"],
        "failed": row["failed"],
        "detail": row["detail"],
        "created": row["created_at"].isoformat(),
        "updated": row["updated_at"].isoformat(),
    }


class Jobs:
    def __init__(self, pool: asyncpg.Pool, gateway: Gateway, workers: int = 2) -> None:
        self.pool = pool
        self.gateway = gateway
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="dimse-job")
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stale = gateway.settings.dimse_job_stale
        self._mine: set[str] = set()  # the jobs this gateway has taken
        self._resume_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._resume_task = asyncio.create_task(self._resume_stale(), name="dimse-job-resume")

    async def _resume_stale(self) -> None:
        """Now and then, take up the jobs a dead gateway left running."""
        while True:
            try:
                await self._take_up()
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                log.warning("DIMSE jobs not checked: %s", e)
            await asyncio.sleep(max(1.0, self.stale / 2))

    async def _take_up(self) -> None:
        rows = await self.pool.fetch(
            "UPDATE dimse_job SET state = 'queued', updated_at = now()"
            " WHERE state = 'running' AND updated_at < now() - make_interval(secs => $1)"
            " RETURNING id",
            self.stale,
        )
        for row in rows:
            log.warning("DIMSE job %s was left running: taken up again", row["id"])
        for row in await self.pool.fetch("SELECT id FROM dimse_job WHERE state = 'queued'"):
            if row["id"] not in self._mine:
                self._mine.add(row["id"])
                self.executor.submit(self._run, row["id"])

    def close(self) -> None:
        if self._resume_task is not None:
            self._resume_task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def create(self, kind: str, node: str, request: dict[str, Any]) -> dict[str, Any]:
        job_id = secrets.token_hex(8)
        row = await self.pool.fetchrow(
            f"INSERT INTO dimse_job (id, kind, node, request, state) VALUES ($1, $2, $3, $4,"
            f" 'queued') RETURNING {_COLUMNS}",
            job_id,
            kind,
            node,
            json.dumps(request),
        )
        self._mine.add(job_id)
        self.executor.submit(self._run, job_id)
        return job_json(row)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM dimse_job WHERE id = $1", job_id)
        return None if row is None else job_json(row)

    async def list(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM dimse_job ORDER BY created_at DESC LIMIT $1", limit
        )
        return [job_json(r) for r in rows]

    # -- the job's thread ----------------------------------------------------------------
    def _db(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def _claim(self, job_id: str) -> asyncpg.Record | None:
        return self._db(
            self.pool.fetchrow(
                f"UPDATE dimse_job SET state = 'running', updated_at = now() WHERE id = $1"
                f" AND state = 'queued' RETURNING {_COLUMNS}",
                job_id,
            )
        )

    def _update(
        self, job_id: str, state: str | None, counts: tuple[int, ...], detail: str = ""
    ) -> None:
        self._db(
            self.pool.execute(
                "UPDATE dimse_job SET state = coalesce($2, state), total = $3, completed = $4,"
                " warning = $5, failed = $6, detail = $7, updated_at = now() WHERE id = $1",
                job_id,
                state,
                *counts,
                detail,
            )
        )

    def _run(self, job_id: str) -> None:
        try:
            row = self._claim(job_id)
        except Exception:
            log.exception("DIMSE job %s not claimed", job_id)
            return
        if row is None:
            return
        counts: tuple[int, ...] = (row["total"], row["completed"], row["warning"], row["failed"])
        request = json.loads(row["request"])

        def progress(*now: int) -> None:
            nonlocal counts
            counts = now
            self._update(job_id, None, counts)

        try:
            node = self.gateway.nodes.get(row["node"])
            if node is None:
                raise Refused(404, f"no node {row['node']}")
            query = scu.identifier(request["level"], request["keys"])
            model = request.get("model", "study")
            if row["kind"] == "move":
                counts = scu.move(self.gateway, node, query, model, progress)
            else:
                refs = matches(self.gateway, query, node.principal_read)
                done = counts[1] + counts[2] + counts[3] if counts[0] == len(refs) else 0
                counts = scu.store(self.gateway, node, refs, progress, start=done)
            failed = counts[3] > 0
            self._update(job_id, "failed" if failed else "done", counts,
                         f"{counts[3]} instances failed" if failed else "")  # fmt: skip
        except (scu.NodeUnreachable, Refused, Unavailable) as e:
            self._update(job_id, "failed", counts, str(e)[:500])
        except Exception as e:
            log.exception("DIMSE job %s failed", job_id)
            self._update(job_id, "failed", counts, type(e).__name__)
