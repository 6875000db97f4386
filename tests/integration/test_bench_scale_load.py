"""The QIDO scale benchmark's bulk loader writes what the index writer writes.

``bench/scale_load.py`` fills the index with COPY instead of STOW-RS; its figures only
mean something if the rows are the writer's rows. A small :class:`ScaleSet` is loaded
both ways, into two databases, and every column QIDO-RS or WADO-RS metadata reads is
compared (everything but primary keys and timestamps).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.scale_data import ScaleSet, instance_metadata, series_base
from bench.scale_load import EVRLE, PIXEL, load
from tessera.index.writer import index_instances
from tessera.shared.levels import Layout
from tessera.shared.messages import IndexInstance
from tessera.shared.storage import instance_key
from tests.support.servers import with_database

DATA = ScaleSet(studies=15, instances=150, seed=3)
LAYOUT = Layout.parse(["study:BodyPartExamined"])
COMPARE = {
    "patient": """SELECT patient_key, patient_id, issuer_of_patient_id, patient_name,
                         patient_birth_date, patient_sex, attrs
                    FROM patient ORDER BY patient_key""",
    "study": """SELECT st.study_instance_uid, p.patient_key, study_date, study_time,
                       accession_number, study_id, study_description, referring_physician_name,
                       modalities_in_study, sop_classes_in_study, number_of_series,
                       number_of_instances, st.attrs
                  FROM study st JOIN patient p ON p.pk = st.patient_pk
                 ORDER BY study_instance_uid""",
    "series": """SELECT series_instance_uid, st.study_instance_uid, modality, series_number,
                        series_description, performed_procedure_step_start_date,
                        performed_procedure_step_start_time, se.number_of_instances, se.attrs
                   FROM series se JOIN study st ON st.pk = se.study_pk
                  ORDER BY series_instance_uid""",
    "instance": """SELECT sop_instance_uid, se.series_instance_uid, sop_class_uid,
                          instance_number, instance_number_int, transfer_syntax_uid, rows,
                          columns, number_of_frames, storage_key, size, sha256, pixel_data,
                          metadata, i.attrs
                     FROM instance i JOIN series se ON se.pk = i.series_pk
                    ORDER BY sop_instance_uid""",
}


@pytest.fixture
async def second_database(postgres_dsn: str, template_database: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        yield with_database(postgres_dsn, name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _instances(data: ScaleSet) -> list[IndexInstance]:
    """What ingest would send the index for each instance of ``data``."""
    out = []
    for st in data.all_studies():
        for k, (series_uid, _, count) in enumerate(st.series):
            base = series_base(st, k)
            for n in range(1, count + 1):
                md = instance_metadata(st, k, n, base)
                sop = md["00080018"]["Value"][0]
                sha = hashlib.sha256(sop.encode()).hexdigest()
                out.append(
                    IndexInstance(
                        study_instance_uid=st.uid,
                        series_instance_uid=series_uid,
                        sop_instance_uid=sop,
                        sop_class_uid=md["00080016"]["Value"][0],
                        transfer_syntax_uid=EVRLE,
                        storage_key=instance_key(sha),
                        size=525_800,
                        sha256=sha,
                        metadata=md,
                        number_of_frames=1,
                        rows=512,
                        columns=512,
                        pixel_data=json.loads(PIXEL),
                    )
                )
    return out


async def _rows(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        return {table: [tuple(r) for r in await conn.fetch(sql)] for table, sql in COMPARE.items()}
    finally:
        await conn.close()


async def test_bulk_load_equals_the_writer(database, second_database):
    report = await load(database, DATA, LAYOUT, log=lambda _: None)
    conn = await asyncpg.connect(second_database)
    try:
        # the writer, one study per batch (as a STOW request per study would come)
        instances = _instances(DATA)
        for study in sorted({i.study_instance_uid for i in instances}):
            batch = [i for i in instances if i.study_instance_uid == study]
            outcomes = await index_instances(conn, batch, "reject", LAYOUT)
            assert {o.outcome for o in outcomes} == {"stored"}
    finally:
        await conn.close()
    loaded, written = await _rows(database), await _rows(second_database)
    assert report["rows"]["instance"] == len(written["instance"]) == len(instances)
    for table in COMPARE:
        assert loaded[table] == written[table], table
