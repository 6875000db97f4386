"""The audit trail: who asked for which patient's data, when, and what they got.

Modelled on DICOM PS3.15 A.5 (IHE ATNA): each event has its actor (``subject``, the OAuth
``client_id`` or the API key's label, the network ``address``, how it authenticated), its
action (``query`` — PS3.15 A.5.3.10 Query, with the search asked as
ParticipantObjectQuery —, ``retrieve`` — A.5.3.7 DICOM Instances Transferred —,
``store``, ``delete`` — A.5.3.5 —, ``admin``), the participant objects (the study, the
patient when the request names one) and its outcome (EventOutcomeIndicator 0 success,
4 minor failure: a 4xx, 8 serious failure: a 5xx).

Durability: :meth:`AuditTrail.record` returns once the event is committed in the router's
PostgreSQL, and the router records before it sends the answer's first byte
(:mod:`.middleware`), so an answered request always has its event, whatever dies after.
Events are group-committed: the requests in flight share one INSERT, so the cost per
request is a share of a transaction, not one each. If the database cannot take an event,
the request is answered 503 instead of with data.

Coalescing: a viewer opening a series asks for hundreds of frames of one study. Requests
that would make the same event — same caller (subject, client, address), action, study,
patient, query and outcome — within ``audit_coalesce_seconds`` (60) are one event: the
first is committed before its answer, the others wait for that commit (or find it done)
and add nothing. This is the granularity of PS3.15 A.5.3.7 (instances of a study
accessed by a user), not of HTTP requests. ``0`` records every request.

``GET /admin/audit?patient=&study=&subject=&action=&since=&until=&limit=`` (the
``admin`` permission) lists events, newest first. ``patient=`` finds the requests that
named the patient (a search by PatientID) and every request on one of the patient's
studies, which the shards are asked for at query time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass, fields
from datetime import datetime

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.shared.errors import BadRequest

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_LIST = 10_000
MAX_RECENT = 100_000  # coalescing keys kept before the expired ones are dropped


def outcome(status: int) -> int:
    """PS3.15 A.5.2 EventOutcomeIndicator of an HTTP status."""
    if status < 400:
        return 0
    return 4 if status < 500 else 8


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: datetime
    action: str
    outcome: int
    status: int
    subject: str
    client_id: str
    auth_method: str
    address: str
    http_method: str
    path: str
    query: str
    study_instance_uid: str | None
    patient_id: str | None

    def coalescing_key(self) -> tuple[object, ...]:
        """What makes two requests one event (see the module docstring)."""
        query = self.query if self.action != "retrieve" else ""
        return (
            self.action,
            self.outcome,
            self.subject,
            self.client_id,
            self.auth_method,
            self.address,
            self.study_instance_uid,
            self.patient_id,
            query,
            self.path if self.action != "retrieve" else "",
            self.http_method,
        )

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["at"] = self.at.isoformat()
        return doc


COLUMNS = [f.name for f in fields(AuditEvent)]


class AuditTrail:
    """Group-committed, coalesced inserts of :class:`AuditEvent` rows."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        coalesce_seconds: float = 60.0,
        forward: Callable[[AuditEvent], None] | None = None,
    ) -> None:
        self.pool = pool
        self.coalesce_seconds = coalesce_seconds
        self.forward = forward  # each committed event, e.g. to syslog (best effort)
        # coalescing key -> (the commit of its event, until when it covers repeats)
        self._recent: dict[tuple[object, ...], tuple[asyncio.Future[None], float]] = {}
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            # what is pending is written first (a clean stop loses nothing either)
            if self._pending:
                await asyncio.gather(*(f for _, f in self._pending), return_exceptions=True)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def record(self, event: AuditEvent) -> None:
        """Returns when ``event`` (or the event it repeats) is committed; raises if it
        could not be."""
        now = time.monotonic()
        key = event.coalescing_key()
        recent = self._recent.get(key) if self.coalesce_seconds > 0 else None
        if recent is not None and recent[1] > now:
            future = recent[0]
            if not future.done() or future.exception() is None:
                await asyncio.shield(future)
                return
        future = asyncio.get_running_loop().create_future()
        if self.coalesce_seconds > 0:
            if len(self._recent) > MAX_RECENT:
                self._recent = {k: v for k, v in self._recent.items() if v[1] > now}
            self._recent[key] = (future, now + self.coalesce_seconds)
        self._pending.append((event, future))
        self._wake.set()
        await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    async with self.pool.acquire() as conn:
                        await conn.copy_records_to_table(
                            "audit_event", records=[astuple(e) for e, _ in batch], columns=COLUMNS
                        )
                except Exception as e:  # every waiter hears it; the loop goes on
                    log.error("audit trail: %d event(s) not written: %s", len(batch), e)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for event, future in batch:
                    if not future.done():
                        future.set_result(None)
                    if self.forward is not None:
                        self.forward(event)

    async def search(
        self,
        *,
        patient: str | None = None,
        patient_studies: list[str] | None = None,
        study: str | None = None,
        subject: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        where: list[str] = []
        args: list[object] = []
        if patient is not None:
            args += [patient, patient_studies or []]
            n = len(args)
            where.append(f"(patient_id = ${n - 1} OR study_instance_uid = ANY(${n}::text[]))")
        for column, value in (
            ("study_instance_uid", study),
            ("subject", subject),
            ("action", action),
        ):
            if value is not None:
                args.append(value)
                where.append(f"{column} = ${len(args)}")
        if since is not None:
            args.append(since)
            where.append(f"at >= ${len(args)}")
        if until is not None:
            args.append(until)
            where.append(f"at < ${len(args)}")
        args.append(limit)
        sql = (
            f"SELECT {', '.join(COLUMNS)} FROM audit_event"
            f"{' WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY at DESC, id DESC LIMIT ${len(args)}"
        )
        return [AuditEvent(**dict(r)) for r in await self.pool.fetch(sql, *args)]


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or date-time, not {value!r}") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{name} needs a time zone (e.g. 2026-01-31T00:00:00Z)")
    return parsed


StudiesOf = Callable[[str], Awaitable[list[str]]]


def routes(trail: Callable[[], AuditTrail], studies_of: StudiesOf) -> list[Route]:
    async def list_events(request: Request) -> Response:
        q = request.query_params
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            raise BadRequest("limit must be an integer") from None
        if not 0 < limit <= MAX_LIST:
            raise BadRequest(f"limit must be 1..{MAX_LIST}")
        patient = q.get("patient")
        events = await trail().search(
            patient=patient,
            patient_studies=await studies_of(patient) if patient else None,
            study=q.get("study"),
            subject=q.get("subject"),
            action=q.get("action"),
            since=_time(q.get("since"), "since"),
            until=_time(q.get("until"), "until"),
            limit=limit,
        )
        return JSONResponse({"events": [e.to_json() for e in events]})

    return [Route("/admin/audit", list_events, methods=["GET"])]
