"""Write instances into the shard index: patient, study, series and instance rows.

One transaction per batch. An instance the database refuses is reported failed without
failing its neighbours: the batch is written without savepoints first (the common case,
two statements less per instance), and if the database refuses anything, written again
with each instance in its own savepoint. Writing the same
object twice leaves one row (outcome ``unchanged``); a different object under a
SOPInstanceUID already stored is kept out (``conflict``) unless the duplicate policy is
``replace``. Counts and ModalitiesInStudy of the touched studies and series are
recomputed in the same transaction, so a QIDO after commit sees them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tessera.shared.changefeed import FEED_LOCK, MOVE_IN
from tessera.shared.levels import Layout, instance_attrs, instance_number_int, text
from tessera.shared.messages import IndexInstance, InstanceOutcome

log = logging.getLogger(__name__)


@dataclass
class _Touched:
    studies: set[int] = field(default_factory=set)
    series: set[int] = field(default_factory=set)
    # series stored by an earlier instance of this batch: SeriesInstanceUID ->
    # (StudyInstanceUID, patient key, study pk, series pk). Their patient, study and
    # series rows are already upserted in this transaction, so later instances of the
    # same series (same study, same patient) skip those statements.
    known: dict[str, tuple[str, str, int, int]] = field(default_factory=dict)
    # which attributes study.attrs / series.attrs hold (the operator's extra attributes)
    layout: Layout = field(default_factory=Layout)


async def index_instances(
    db: asyncpg.Pool | asyncpg.Connection,
    instances: Sequence[IndexInstance],
    duplicate_policy: str = "reject",
    layout: Layout | None = None,
) -> list[InstanceOutcome]:
    """Index ``instances`` in one transaction; one outcome per instance, in order.
    ``layout``: the extra attributes kept in study and series ``attrs`` (default none)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await index_instances(conn, instances, duplicate_policy, layout)
    try:
        # most batches have no instance the database refuses: no savepoint for each
        return await _index_batch(db, instances, duplicate_policy, layout, savepoints=False)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
        # one is refused and the whole transaction rolled back: again, each instance in
        # its own savepoint, so that the refused one fails alone
        return await _index_batch(db, instances, duplicate_policy, layout, savepoints=True)


async def _index_batch(
    conn: asyncpg.Connection,
    instances: Sequence[IndexInstance],
    duplicate_policy: str,
    layout: Layout | None,
    savepoints: bool,
) -> list[InstanceOutcome]:
    touched = _Touched(layout=layout or Layout())
    outcomes: list[InstanceOutcome] = []
    async with conn.transaction():
        # change feed rows numbered in commit order (tessera.shared.changefeed)
        await conn.execute("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
        for inst in instances:
            if not savepoints:
                outcome, placed = await _labelled(conn, inst, duplicate_policy, touched)
                outcomes.append(outcome)
                if placed is not None:
                    touched.known[inst.series_instance_uid] = placed
                continue
            try:
                async with conn.transaction():  # savepoint
                    outcome, placed = await _labelled(conn, inst, duplicate_policy, touched)
                outcomes.append(outcome)
                if placed is not None:  # only once the savepoint is released
                    touched.known[inst.series_instance_uid] = placed
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as e:
                log.warning("instance %s refused by the database: %s", inst.sop_instance_uid, e)
                outcomes.append(InstanceOutcome(inst.sop_instance_uid, "failed", str(e)))
        await _refresh_counts(conn, touched)
    return outcomes


async def _labelled(
    conn: asyncpg.Connection, inst: IndexInstance, policy: str, touched: _Touched
) -> tuple[InstanceOutcome, tuple[str, str, int, int] | None]:
    """:func:`_index_one` within the storer's labels: a storer limited to labels is refused
    a study that carries none of them (it cannot see it, so it may not add to it); the
    labels the instance brings are added to its study."""
    if inst.visible is not None:
        labels = await conn.fetchval(
            "SELECT labels FROM study WHERE study_instance_uid = $1 FOR UPDATE",
            inst.study_instance_uid,
        )
        if labels is not None and set(labels).isdisjoint(inst.visible):
            refused = "the credential's labels do not include this study"
            return InstanceOutcome(inst.sop_instance_uid, "refused", refused), None
    outcome, placed = await _index_one(conn, inst, policy, touched)
    if inst.labels and outcome.outcome in ("stored", "unchanged", "replaced"):
        await conn.execute(
            """UPDATE study SET labels = ARRAY(SELECT DISTINCT unnest(labels || $2::text[])
                                             ORDER BY 1)
                WHERE study_instance_uid = $1 AND NOT labels @> $2::text[]""",
            inst.study_instance_uid,
            list(inst.labels),
        )
    return outcome, placed


async def _index_one(
    conn: asyncpg.Connection, inst: IndexInstance, policy: str, touched: _Touched
) -> tuple[InstanceOutcome, tuple[str, str, int, int] | None]:
    """The instance's outcome, and where a newly stored one was placed (for ``known``)."""
    # the instance row if it exists (locked), and the study that owns the series if any:
    # one round trip
    row = await conn.fetchrow(
        """WITH found AS (
             SELECT i.pk, i.sha256, i.storage_key, se.series_instance_uid,
                    st.study_instance_uid
               FROM instance i JOIN series se ON se.pk = i.series_pk
               JOIN study st ON st.pk = se.study_pk
              WHERE i.sop_instance_uid = $1 FOR UPDATE OF i
           )
           SELECT f.*, (SELECT st.study_instance_uid FROM series se
                          JOIN study st ON st.pk = se.study_pk
                         WHERE se.series_instance_uid = $2) AS owner
             FROM (SELECT 1) AS one LEFT JOIN found f ON true""",
        inst.sop_instance_uid,
        inst.series_instance_uid,
    )
    if row["pk"] is not None:
        return await _index_existing(conn, inst, row, policy, touched), None

    md, stored = _clean(inst.metadata)  # md for columns; the stored text keeps every byte
    patient = _patient_key(md)
    known = touched.known.get(inst.series_instance_uid)
    if known is not None and known[0] != inst.study_instance_uid:
        owner: str | None = known[0]
    elif known is not None and known[1] == patient:
        owner = None  # rows upserted by an earlier instance of this batch
    else:
        known = None
        owner = row["owner"]
    if owner is not None and owner != inst.study_instance_uid:
        return InstanceOutcome(
            inst.sop_instance_uid,
            "conflict",
            f"SeriesInstanceUID {inst.series_instance_uid} belongs to study {owner}",
        ), None
    if known is not None:
        study_pk, series_pk = known[2], known[3]
    else:
        study_pk, series_pk = await _upsert_study_series(conn, inst, md, patient, touched.layout)
    # the change feed row is written by the same statement, only if the row is inserted
    pk = await conn.fetchval(
        """WITH ins AS (
             INSERT INTO instance (sop_instance_uid, series_pk, sop_class_uid, instance_number,
               instance_number_int, transfer_syntax_uid, rows, columns, number_of_frames,
               storage_key, size, sha256, pixel_data, metadata, attrs)
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13::text::jsonb,$14,$15::text::jsonb)
             ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING pk
           ), feed AS (
             INSERT INTO change_feed (action, study_instance_uid, series_instance_uid,
               sop_instance_uid) SELECT $18, $16, $17, $1 FROM ins
           )
           SELECT pk FROM ins""",
        inst.sop_instance_uid,
        series_pk,
        *_instance_values(inst, md, stored),
        inst.study_instance_uid,
        inst.series_instance_uid,
        MOVE_IN if inst.moved else "create",
    )
    if pk is None:  # another worker inserted it after our SELECT: judge against theirs
        return await _index_one(conn, inst, policy, touched)
    touched.studies.add(study_pk)
    touched.series.add(series_pk)
    placed = (inst.study_instance_uid, patient, study_pk, series_pk)
    return InstanceOutcome(inst.sop_instance_uid, "stored"), placed


async def _index_existing(
    conn: asyncpg.Connection,
    inst: IndexInstance,
    row: asyncpg.Record,
    policy: str,
    touched: _Touched,
) -> InstanceOutcome:
    uid = inst.sop_instance_uid
    if row["sha256"] == inst.sha256:
        return InstanceOutcome(uid, "unchanged")
    where = (row["study_instance_uid"], row["series_instance_uid"])
    if where != (inst.study_instance_uid, inst.series_instance_uid):
        return InstanceOutcome(
            uid,
            "conflict",
            f"SOPInstanceUID is already stored in study {where[0]}, series {where[1]}",
        )
    if policy != "replace":
        return InstanceOutcome(
            uid, "conflict", "a different object with this SOPInstanceUID is already stored"
        )
    md, stored = _clean(inst.metadata)
    series_pk = await conn.fetchval(
        """UPDATE instance SET sop_class_uid=$2, instance_number=$3, instance_number_int=$4,
               transfer_syntax_uid=$5, rows=$6, columns=$7, number_of_frames=$8,
               storage_key=$9, size=$10, sha256=$11, pixel_data=$12::text::jsonb, metadata=$13,
               attrs=$14::text::jsonb
            WHERE pk=$1 RETURNING series_pk""",
        row["pk"],
        *_instance_values(inst, md, stored),
    )
    touched.series.add(series_pk)
    touched.studies.add(await conn.fetchval("SELECT study_pk FROM series WHERE pk=$1", series_pk))
    await _feed(conn, "replace", inst)
    return InstanceOutcome(uid, "replaced", previous_storage_key=row["storage_key"])


def _patient_key(md: dict) -> str:
    """The patient row's identity: PatientID, its issuer, PatientName and BirthDate."""
    pid, issuer = text(md, "00100020"), text(md, "00100021")
    name, birth = text(md, "00100010"), text(md, "00100030")
    return hashlib.sha256("\x1f".join((pid, issuer, name, birth)).encode()).hexdigest()


async def _upsert_study_series(
    conn: asyncpg.Connection, inst: IndexInstance, md: dict, key: str, layout: Layout
) -> tuple[int, int]:
    """The patient, study and series rows of ``inst`` (inserted, or the existing ones:
    an existing study keeps its patient), in one statement: their (study pk, series pk)."""
    row = await conn.fetchrow(
        """WITH p AS (
             INSERT INTO patient (patient_key, patient_id, issuer_of_patient_id, patient_name,
                 patient_birth_date, patient_sex)
             VALUES ($1,$2,$3,$4,$5,$6)
             ON CONFLICT (patient_key) DO UPDATE SET patient_key = EXCLUDED.patient_key
             RETURNING pk
           ), st AS (
             INSERT INTO study (study_instance_uid, patient_pk, study_date, study_time,
                 accession_number, study_id, study_description, referring_physician_name, attrs)
             SELECT $7, p.pk, $8, $9, $10, $11, $12, $13, $14::text::jsonb FROM p
             ON CONFLICT (study_instance_uid) DO UPDATE SET updated_at = now()
             RETURNING pk
           ), se AS (
             INSERT INTO series (series_instance_uid, study_pk, modality, series_number,
                 series_description, performed_procedure_step_start_date,
                 performed_procedure_step_start_time, attrs)
             SELECT $15, st.pk, $16, $17, $18, $19, $20, $21::text::jsonb FROM st
             ON CONFLICT (series_instance_uid) DO UPDATE SET updated_at = now()
             RETURNING pk
           )
           SELECT st.pk AS study_pk, se.pk AS series_pk FROM st, se""",
        key,
        text(md, "00100020"),
        text(md, "00100021"),
        text(md, "00100010"),
        text(md, "00100030"),
        text(md, "00100040"),
        inst.study_instance_uid,
        text(md, "00080020"),
        text(md, "00080030"),
        text(md, "00080050"),
        text(md, "00200010"),
        text(md, "00081030"),
        text(md, "00080090"),
        _dumps(layout.study_attrs(md)),
        inst.series_instance_uid,
        text(md, "00080060"),
        text(md, "00200011"),
        text(md, "0008103E"),
        text(md, "00400244"),
        text(md, "00400245"),
        _dumps(layout.series_attrs(md)),
    )
    return row["study_pk"], row["series_pk"]


async def refresh_counts(
    conn: asyncpg.Connection, studies: Iterable[int], series: Iterable[int] = ()
) -> None:
    """Recompute the computed attributes of these studies and series (PS3.18 Table
    10.6.3-3: counts, ModalitiesInStudy, SOPClassesInStudy) from their instances; a
    delete calls it for what it left."""
    await _refresh_counts(conn, _Touched(studies=set(studies), series=set(series)))


async def _refresh_counts(conn: asyncpg.Connection, touched: _Touched) -> None:
    # one statement (one round trip): the series' counts in a CTE, the studies' after it
    # (a study's counts come from its instances, not from the series rows being updated)
    if not touched.series and not touched.studies:
        return
    await conn.execute(
        """WITH se AS (
             UPDATE series s SET number_of_instances = c.n, updated_at = now()
               FROM (SELECT series_pk, count(*) AS n FROM instance
                      WHERE series_pk = ANY($1::bigint[]) GROUP BY series_pk) c
              WHERE s.pk = c.series_pk
           )
           UPDATE study st SET number_of_series = c.nse, number_of_instances = c.ni,
                  modalities_in_study = c.mods, sop_classes_in_study = c.classes,
                  updated_at = now()
             FROM (SELECT se.study_pk, count(DISTINCT se.pk) AS nse, count(*) AS ni,
                          coalesce(array_agg(DISTINCT se.modality ORDER BY se.modality)
                                   FILTER (WHERE se.modality <> ''), '{}') AS mods,
                          array_agg(DISTINCT i.sop_class_uid ORDER BY i.sop_class_uid)
                              AS classes
                     FROM series se JOIN instance i ON i.series_pk = se.pk
                    WHERE se.study_pk = ANY($2::bigint[]) GROUP BY se.study_pk) c
            WHERE st.pk = c.study_pk""",
        sorted(touched.series),
        sorted(touched.studies),
    )


async def _feed(conn: asyncpg.Connection, action: str, inst: IndexInstance) -> None:
    await conn.execute(
        """INSERT INTO change_feed (action, study_instance_uid, series_instance_uid,
               sop_instance_uid) VALUES ($1,$2,$3,$4)""",
        action,
        inst.study_instance_uid,
        inst.series_instance_uid,
        inst.sop_instance_uid,
    )


def _instance_values(inst: IndexInstance, md: dict, stored: str) -> tuple[Any, ...]:
    """The instance row's values from sop_class_uid to attrs, in column order (the INSERT's
    $3..$15 and the UPDATE's $2..$14); ``stored``: the metadata's JSON text."""
    return (
        inst.sop_class_uid,
        text(md, "00200013"),
        instance_number_int(text(md, "00200013")),
        inst.transfer_syntax_uid,
        inst.rows,
        inst.columns,
        inst.number_of_frames,
        inst.storage_key,
        inst.size,
        inst.sha256,
        _dumps_or_none(inst.pixel_data),
        stored,
        _dumps(instance_attrs(md)),
    )


def _dumps(doc: dict) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _dumps_or_none(doc: dict | None) -> str | None:
    return None if doc is None else _dumps(doc)


def _clean(metadata: dict) -> tuple[dict, str]:
    """The metadata for columns and jsonb, and its JSON text as stored. PostgreSQL text
    and jsonb cannot hold U+0000; DICOM values sometimes do (padding written as NUL
    instead of space): the first has them dropped from every string, as padding; the
    text keeps them, escaped."""
    raw = _dumps(metadata)
    if "\\u0000" not in raw:
        return metadata, raw
    return json.loads(raw.replace("\\u0000", "")), raw
