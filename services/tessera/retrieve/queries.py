"""The index reads retrieve makes: which instances a WADO-RS request names (PS3.18 10.4).

A request names a study, a series of that study, or an instance of that series. The
instances come back in retrieval order: series by SeriesNumber (then UID), instances by
InstanceNumber (then UID). When nothing matches, :func:`explain_not_found` says which
level is missing, so a 404 names the study, series or instance the client got wrong
(a series that exists under another study is "not in this study", PS3.18 10.4.1).

Every read takes the caller's ``labels`` (README "Security"; None: every study): a study
that carries none of them is not found, exactly as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from tessera.shared.errors import NotFound
from tessera.shared.refs import InstanceRef, SeriesRef, StudyRef, check_uid

Target = StudyRef | SeriesRef | InstanceRef

# SeriesNumber is text in the index; order numerically when it is a number, else last.
_ORDER = """
    ORDER BY CASE WHEN se.series_number ~ '^ *[+-]?[0-9]{1,9} *$'
                  THEN trim(se.series_number)::integer END NULLS LAST,
             se.series_instance_uid, i.instance_number_int NULLS LAST, i.sop_instance_uid
"""
_FROM = """
    FROM instance i JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk
"""


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One indexed instance: where its object is and how it is encoded."""

    ref: InstanceRef
    transfer_syntax_uid: str
    storage_key: str
    size: int
    pixel_data: dict[str, Any] | None  # ParsedInstance.pixel_data_json(): where, frame index
    sha256: str = ""  # of the stored object: names its bytes (ETags)
    number_of_frames: int | None = None


def target_of(path_params: Mapping[str, Any]) -> Target:
    """The study, series or instance a route's ``{study}/{series}/{instance}`` name."""
    study = check_uid(path_params["study"], "StudyInstanceUID")
    if "series" not in path_params:
        return StudyRef(study)
    series = check_uid(path_params["series"], "SeriesInstanceUID")
    if "instance" not in path_params:
        return SeriesRef(study, series)
    return InstanceRef(study, series, check_uid(path_params["instance"], "SOPInstanceUID"))


Labels = frozenset[str] | None


def _where(target: Target, labels: Labels) -> tuple[str, list[Any]]:
    clauses = ["st.study_instance_uid = $1"]
    args: list[Any] = [target.study_instance_uid]
    if isinstance(target, SeriesRef | InstanceRef):
        args.append(target.series_instance_uid)
        clauses.append(f"se.series_instance_uid = ${len(args)}")
    if isinstance(target, InstanceRef):
        args.append(target.sop_instance_uid)
        clauses.append(f"i.sop_instance_uid = ${len(args)}")
    if labels is not None:
        args.append(sorted(labels))
        clauses.append(f"st.labels && ${len(args)}::text[]")
    return " WHERE " + " AND ".join(clauses), args


async def stored_instances(
    pool: asyncpg.Pool, target: Target, labels: Labels = None
) -> list[StoredInstance]:
    """The instances of ``target`` in retrieval order; :class:`NotFound` if there are none."""
    where, args = _where(target, labels)
    sql = (
        "SELECT st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid,"
        " i.transfer_syntax_uid, i.storage_key, i.size, i.pixel_data, i.sha256,"
        " i.number_of_frames" + _FROM + where + _ORDER
    )
    async with pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
        if not rows:
            raise await explain_not_found(conn, target, labels)
    return [
        StoredInstance(
            InstanceRef(r[0], r[1], r[2]),
            transfer_syntax_uid=r["transfer_syntax_uid"],
            storage_key=r["storage_key"],
            size=r["size"],
            pixel_data=r["pixel_data"],
            sha256=r["sha256"],
            number_of_frames=r["number_of_frames"],
        )
        for r in rows
    ]


async def metadata_rows(
    pool: asyncpg.Pool, target: Target, labels: Labels = None
) -> list[tuple[str, str]]:
    """(SHA-256 of the stored object, DICOM JSON text) of each instance of ``target``."""
    return [(r[0], r[1]) for r in await _fetch(pool, target, "i.sha256, i.metadata", labels)]


async def instance_digests(pool: asyncpg.Pool, target: Target, labels: Labels = None) -> list[str]:
    """The SHA-256 of each instance of ``target``'s stored object, in retrieval order:
    what a validator (ETag) of the target's metadata is made from, read without it."""
    return [r[0] for r in await _fetch(pool, target, "i.sha256", labels)]


async def _fetch(
    pool: asyncpg.Pool, target: Target, columns: str, labels: Labels
) -> list[asyncpg.Record]:
    where, args = _where(target, labels)
    sql = f"SELECT {columns}" + _FROM + where + _ORDER
    async with pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
        if not rows:
            raise await explain_not_found(conn, target, labels)
    return list(rows)


async def explain_not_found(
    conn: asyncpg.Connection, target: Target, labels: Labels = None
) -> NotFound:
    """A :class:`NotFound` naming the first level of ``target`` that does not exist (for
    the caller: a study outside its labels does not exist)."""
    study = target.study_instance_uid
    study_pk = await conn.fetchval(
        "SELECT pk FROM study WHERE study_instance_uid = $1"
        + ("" if labels is None else " AND labels && $2::text[]"),
        study,
        *(() if labels is None else (sorted(labels),)),
    )
    if study_pk is None:
        return NotFound(f"study {study} not found")
    if isinstance(target, StudyRef):
        return NotFound(f"study {study} has no instances")
    series = target.series_instance_uid
    series_pk = await conn.fetchval(
        "SELECT pk FROM series WHERE series_instance_uid = $1 AND study_pk = $2",
        series,
        study_pk,
    )
    if series_pk is None:
        return NotFound(f"series {series} not found in study {study}")
    if isinstance(target, SeriesRef):
        return NotFound(f"series {series} of study {study} has no instances")
    return NotFound(
        f"instance {target.sop_instance_uid} not found in series {series} of study {study}"
    )
