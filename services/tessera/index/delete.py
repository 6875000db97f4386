"""Deleting studies, series and instances of a shard, and the internal routes the
rebalance job needs to move a study (``tessera.router.rebalance.move``).

    DELETE /studies/{study}                             the study: rows, counts, objects
    DELETE /studies/{study}/series/{series}             one series
    DELETE /studies/{study}/series/{series}/instances/{instance}   one instance
    GET    /internal/studies?after=PK&limit=N   studies by primary key (keyset paging),
                                                 with their number of instances
    GET    /internal/studies/{study}/instances  every instance: SOPInstanceUID,
                                                 SeriesInstanceUID, SHA-256, size, and
                                                 the study's ``digest`` (see below)

The three ``DELETE`` routes are what the router forwards of a client's ``DELETE`` on the
same DICOMweb resources (as Microsoft's and Google's DICOM services and Orthanc offer
it; PS3.18 has no delete transaction): ``204 No Content`` once the rows are gone (QIDO-RS
and WADO-RS no longer find them when the answer is sent), ``404`` for a UID the shard
does not hold, or a study outside the caller's labels. Deleting the last instance of a
series deletes the series, the last series of a study the study; what remains gets its
counts, ModalitiesInStudy and SOPClassesInStudy recomputed in the same transaction.

Keyset paging (``pk > after``) and not QIDO's ``offset``: studies keep arriving while a
rebalance lists them, and an offset page slides when a row is inserted before it, so a
study could be skipped; a pk only grows.

The study **digest** is the SHA-256 of its sorted ``SOPInstanceUID TAB sha256 LF`` lines:
two shards hold the same instances, byte for byte, exactly when their digests are
equal. A study's ``DELETE`` takes it as ``If-Match: "<digest>"`` (RFC 9110 13.1.1): the study is
deleted only if it still holds exactly what the caller copied elsewhere, else 412, so an
instance that reached the source after the last copy is never lost with it.

Deleting: one transaction locks the study row (the index writer's study upsert waits
on it, so no instance can join the study meanwhile), deletes its instance, series and
study rows and the patient row when no other study refers to it (patients keep no
counts: QIDO computes them), and writes one ``delete`` change-feed row per instance.
After commit the stored objects go: each instance's object (``instance_key``) and its
caches, everything under ``derived/<sha256>/`` (transcoded objects and frames,
``derived_key`` / ``derived_frame_key``) and ``rendered/<sha256>/`` (``rendered_key``),
found by listing those prefixes (their names carry Transfer Syntaxes and rendering
digests that the rows do not). An object key is the SHA-256 of its bytes, which hold
the SOPInstanceUID, so no other row can share it; an object is still kept if a row
references it again meanwhile or a STOW of the same bytes has pinned it
(:mod:`tessera.shared.storage.guard`). A crash between commit and the object
deletions leaves unreferenced objects (garbage, never a dangling row), which the sweeper
(:mod:`.sweeper`) removes. A second
``DELETE`` of a study that is gone answers ``404 Not Found``: the caller (the rebalance
job) treats 404 as "already done".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.index.sweeper import remove_unreferenced
from tessera.index.writer import refresh_counts
from tessera.shared.auth.internal import principal_of
from tessera.shared.changefeed import FEED_LOCK, MOVE_OUT, is_move
from tessera.shared.errors import BadRequest, NotFound, TesseraError
from tessera.shared.index_internal import (
    INSTANCES_PATH,
    MAX_PAGE,
    STUDIES_PATH,
    STUDY_PATH,
    study_digest,
)
from tessera.shared.refs import check_uid
from tessera.shared.storage import ObjectStore, open_store
from tessera.shared.storage.guard import ObjectGuard

log = logging.getLogger(__name__)


class PreconditionFailed(TesseraError):
    """If-Match named another digest than the study's: it changed since it was copied."""

    status_code = 412


@dataclass(frozen=True)
class StoredInstance:
    sop_instance_uid: str
    series_instance_uid: str
    sha256: str
    size: int
    storage_key: str


async def study_instances(
    db: asyncpg.Pool | asyncpg.Connection, study: str
) -> list[StoredInstance]:
    rows = await db.fetch(
        """SELECT i.sop_instance_uid, se.series_instance_uid, i.sha256, i.size, i.storage_key
             FROM study st JOIN series se ON se.study_pk = st.pk
             JOIN instance i ON i.series_pk = se.pk
            WHERE st.study_instance_uid = $1
            ORDER BY se.pk, i.instance_number_int NULLS LAST, i.sop_instance_uid""",
        study,
    )
    return [StoredInstance(*r) for r in rows]


@dataclass(frozen=True)
class DeletedStudy:
    study_instance_uid: str
    instances: list[StoredInstance]
    patient_deleted: bool


async def _locked_study(
    conn: asyncpg.Connection, study: str, labels: frozenset[str] | None
) -> asyncpg.Record | None:
    """The study's row, locked for this transaction (the index writer's study upsert
    waits on it: no instance joins the study meanwhile); None if there is none, or the
    caller's ``labels`` (None: any study) do not see it."""
    # change feed rows numbered in commit order (tessera.shared.changefeed)
    await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
    row = await conn.fetchrow(
        "SELECT pk, patient_pk, labels FROM study WHERE study_instance_uid = $1 FOR UPDATE",
        study,
    )
    if row is None or (labels is not None and not set(row["labels"]) & labels):
        return None
    return row


async def _feed_deletes(
    conn: asyncpg.Connection, study: str, gone: list[StoredInstance], action: str = "delete"
) -> None:
    await conn.execute(
        """INSERT INTO change_feed (action, study_instance_uid, series_instance_uid,
               sop_instance_uid)
           SELECT $4, $1, s, i FROM unnest($2::text[], $3::text[]) AS u(s, i)""",
        study,
        [i.series_instance_uid for i in gone],
        [i.sop_instance_uid for i in gone],
        action,
    )


async def _delete_study_row(conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
    """Delete the (emptied) study, and its patient if no other study refers to it
    (patients keep no counts: QIDO computes them); whether the patient went too."""
    await conn.execute("DELETE FROM study WHERE pk = $1", row["pk"])
    gone = await conn.fetchval(
        """DELETE FROM patient p WHERE p.pk = $1
             AND NOT EXISTS (SELECT 1 FROM study WHERE patient_pk = $1) RETURNING pk""",
        row["patient_pk"],
    )
    return gone is not None


async def delete_study_rows(
    conn: asyncpg.Connection,
    study: str,
    if_digest: str | None = None,
    labels: frozenset[str] | None = None,
    moved: bool = False,
) -> DeletedStudy | None:
    """Delete the study's rows in one transaction; None if there is no such study (or
    ``labels`` do not see it). With ``if_digest``, raise :class:`PreconditionFailed`
    unless the study's digest is it. ``moved``: a rebalance's delete of the copy it
    moved ("move-out" in the change feed)."""
    async with conn.transaction():
        row = await _locked_study(conn, study, labels)
        if row is None:
            return None
        instances = await study_instances(conn, study)
        if if_digest is not None:
            digest = study_digest((i.sop_instance_uid, i.sha256) for i in instances)
            if digest != if_digest:
                raise PreconditionFailed(
                    f"study {study} holds other instances than If-Match says "
                    f"(digest {digest}); copy them, then delete again"
                )
        await _feed_deletes(conn, study, instances, MOVE_OUT if moved else "delete")
        await conn.execute(
            """DELETE FROM instance i USING series se
                WHERE i.series_pk = se.pk AND se.study_pk = $1""",
            row["pk"],
        )
        await conn.execute("DELETE FROM series WHERE study_pk = $1", row["pk"])
        patient_deleted = await _delete_study_row(conn, row)
    return DeletedStudy(study, instances, patient_deleted)


async def delete_series_rows(
    conn: asyncpg.Connection,
    study: str,
    series: str,
    sop: str | None = None,
    labels: frozenset[str] | None = None,
) -> list[StoredInstance] | None:
    """Delete a series of the study (or, with ``sop``, one instance of it) in one
    transaction; the instances deleted, None if there is no such series or instance in
    that study (or ``labels`` do not see the study). An emptied series goes, an emptied
    study too; what remains has its computed attributes recomputed."""
    async with conn.transaction():
        row = await _locked_study(conn, study, labels)
        if row is None:
            return None
        rows = await conn.fetch(
            """SELECT i.pk, i.sop_instance_uid, se.series_instance_uid, i.sha256, i.size,
                      i.storage_key, se.pk AS series_pk
                 FROM series se JOIN instance i ON i.series_pk = se.pk
                WHERE se.study_pk = $1 AND se.series_instance_uid = $2
                  AND ($3::text IS NULL OR i.sop_instance_uid = $3)""",
            row["pk"],
            series,
            sop,
        )
        if not rows:
            return None
        gone = [StoredInstance(*r[1:6]) for r in rows]
        await _feed_deletes(conn, study, gone)
        await conn.execute(
            "DELETE FROM instance WHERE pk = ANY($1::bigint[])", [r[0] for r in rows]
        )
        series_pk = rows[0]["series_pk"]
        await conn.execute(
            """DELETE FROM series se WHERE se.pk = $1
                 AND NOT EXISTS (SELECT 1 FROM instance WHERE series_pk = se.pk)""",
            series_pk,
        )
        if await conn.fetchval("SELECT count(*) FROM series WHERE study_pk = $1", row["pk"]):
            await refresh_counts(conn, {row["pk"]}, {series_pk})
        else:
            await _delete_study_row(conn, row)
    return gone


async def delete_objects(
    db: asyncpg.Pool | asyncpg.Connection,
    store: ObjectStore,
    guard: ObjectGuard,
    instances: list[StoredInstance],
) -> int:
    """Delete the objects of deleted instances and their caches; the number of instance
    objects deleted. One that a row references again (the instance was stored again
    meanwhile) or that a STOW has pinned is kept (:func:`.sweeper.remove_unreferenced`;
    the sweeper removes it later if it stays unreferenced)."""
    deleted = 0
    for inst in instances:
        deleted += await remove_unreferenced(db, store, guard, inst.storage_key)
    return deleted


def _store(request: Request) -> tuple[ObjectStore, ObjectGuard]:
    """The shard's object store and its removal guard, opened on first use (QIDO alone
    never needs them)."""
    state = request.app.state
    if getattr(state, "store", None) is None:
        settings = state.settings
        state.store = open_store(settings)
        state.guard = ObjectGuard(
            aioredis.from_url(settings.redis_url), settings.shard, settings.index_timeout + 60
        )
    return state.store, state.guard


def _if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise BadRequest('If-Match must be "<study digest>" (64 lower-case hex digits)')
    return value


async def delete_study(request: Request) -> Response:
    """``DELETE /studies/{study}``: see the module docstring."""
    study = check_uid(request.path_params["study"], "StudyInstanceUID")
    if_digest = _if_match(request)
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        deleted = await delete_study_rows(
            conn, study, if_digest, principal_of(request).labels, moved=is_move(request)
        )
    if deleted is None:
        raise NotFound(f"no study {study} on this shard")
    objects = await delete_objects(pool, *_store(request), deleted.instances)
    log.info("deleted study %s: %d instances, %d objects", study, len(deleted.instances), objects)
    return Response(status_code=204)


async def delete_series(request: Request) -> Response:
    """``DELETE /studies/{study}/series/{series}[/instances/{instance}]``."""
    study = check_uid(request.path_params["study"], "StudyInstanceUID")
    series = check_uid(request.path_params["series"], "SeriesInstanceUID")
    sop = request.path_params.get("instance")
    if sop is not None:
        sop = check_uid(sop, "SOPInstanceUID")
    pool: asyncpg.Pool = request.app.state.pool
    async with pool.acquire() as conn:
        gone = await delete_series_rows(conn, study, series, sop, principal_of(request).labels)
    if gone is None:
        what = f"instance {sop} of series {series}" if sop else f"series {series}"
        raise NotFound(f"no {what} in study {study} on this shard")
    objects = await delete_objects(pool, *_store(request), gone)
    log.info("deleted %d instances of series %s, %d objects", len(gone), series, objects)
    return Response(status_code=204)


async def list_studies(request: Request) -> Response:
    """``GET /internal/studies?after=PK&limit=N``: ``{"studies": [[pk, uid, n], ...]}``,
    ``n`` the study's NumberOfStudyRelatedInstances."""
    try:
        after = int(request.query_params.get("after", "0"))
        limit = int(request.query_params.get("limit", "1000"))
    except ValueError:
        raise BadRequest("after and limit must be integers") from None
    if not 0 < limit <= MAX_PAGE:
        raise BadRequest(f"limit must be 1..{MAX_PAGE}")
    rows = await request.app.state.pool.fetch(
        "SELECT pk, study_instance_uid, number_of_instances FROM study"
        " WHERE pk > $1 ORDER BY pk LIMIT $2",
        after,
        limit,
    )
    return JSONResponse({"studies": [list(r.values()) for r in rows]})


async def list_instances(request: Request) -> Response:
    """``GET /internal/studies/{study}/instances``: what a move copies and verifies."""
    study = check_uid(request.path_params["study"], "StudyInstanceUID")
    instances = await study_instances(request.app.state.pool, study)
    return JSONResponse(
        {
            "study": study,
            "digest": study_digest((i.sop_instance_uid, i.sha256) for i in instances),
            "instances": [
                {
                    "sop": i.sop_instance_uid,
                    "series": i.series_instance_uid,
                    "sha256": i.sha256,
                    "size": i.size,
                }
                for i in instances
            ],
        }
    )


def routes() -> list[Route]:
    return [
        Route(STUDIES_PATH, list_studies, methods=["GET"]),
        Route(INSTANCES_PATH, list_instances, methods=["GET"]),
        Route(STUDY_PATH, delete_study, methods=["DELETE"]),
        Route(STUDY_PATH + "/series/{series}", delete_series, methods=["DELETE"]),
        Route(
            STUDY_PATH + "/series/{series}/instances/{instance}",
            delete_series,
            methods=["DELETE"],
        ),
    ]
