"""The index writer on a real PostgreSQL: rows, idempotence, conflicts, computed counts."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import pytest

from tessera.index.writer import index_instances
from tessera.shared.messages import IndexInstance

STUDY, SERIES = "1.2.826.0.1.1", "1.2.826.0.1.1.1"


def _inst(
    sop: str,
    *,
    study: str = STUDY,
    series: str = SERIES,
    sha: str = "a" * 64,
    pid: str = "P1",
    name: str = "Doe^John",
    modality: str = "MR",
    number: str = "1",
) -> IndexInstance:
    md = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.4"]},
        "00080018": {"vr": "UI", "Value": [sop]},
        "00080060": {"vr": "CS", "Value": [modality]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
        "00100020": {"vr": "LO", "Value": [pid]},
        "0020000D": {"vr": "UI", "Value": [study]},
        "0020000E": {"vr": "UI", "Value": [series]},
        "00200013": {"vr": "IS", "Value": [int(number)]},
        "00081030": {"vr": "LO", "Value": ["Brain\u0000"]},
    }
    return IndexInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_key=f"instances/{sha[:2]}/{sha[2:4]}/{sha}.dcm",
        size=100,
        sha256=sha,
        metadata=md,
    )


@pytest.fixture
async def conn(database: str):
    c = await asyncpg.connect(database)
    yield c
    await c.close()


async def test_new_instances_create_rows_and_counts(conn):
    out = await index_instances(
        conn,
        [
            _inst("1.1", sha="a" * 64),
            _inst("1.2", sha="b" * 64, number="2"),
            _inst("1.3", series="1.2.826.0.1.1.2", sha="c" * 64, modality="SR"),
        ],
    )
    assert [o.outcome for o in out] == ["stored"] * 3
    study = await conn.fetchrow("SELECT * FROM study WHERE study_instance_uid=$1", STUDY)
    assert study["number_of_series"] == 2
    assert study["number_of_instances"] == 3
    assert study["modalities_in_study"] == ["MR", "SR"]
    assert study["study_description"] == "Brain"  # NUL padding dropped
    n = await conn.fetchval(
        "SELECT number_of_instances FROM series WHERE series_instance_uid=$1", SERIES
    )
    assert n == 2
    assert await conn.fetchval("SELECT count(*) FROM change_feed") == 3


async def test_same_object_twice_is_one_row(conn):
    await index_instances(conn, [_inst("1.1")])
    out = await index_instances(conn, [_inst("1.1"), _inst("1.1")])
    assert [o.outcome for o in out] == ["unchanged", "unchanged"]
    assert await conn.fetchval("SELECT count(*) FROM instance") == 1
    assert await conn.fetchval("SELECT number_of_instances FROM study") == 1


async def test_different_object_same_uid_is_rejected_by_default(conn):
    await index_instances(conn, [_inst("1.1", sha="a" * 64)])
    out = await index_instances(conn, [_inst("1.1", sha="f" * 64)])
    assert out[0].outcome == "conflict"
    assert await conn.fetchval("SELECT sha256 FROM instance") == "a" * 64


async def test_different_object_same_uid_replaces_when_asked(conn):
    await index_instances(conn, [_inst("1.1", sha="a" * 64)])
    out = await index_instances(conn, [_inst("1.1", sha="f" * 64)], duplicate_policy="replace")
    assert out[0].outcome == "replaced"
    assert out[0].previous_storage_key and "aaaa" in out[0].previous_storage_key
    assert await conn.fetchval("SELECT sha256 FROM instance") == "f" * 64


async def test_series_uid_claimed_by_another_study_is_a_conflict_that_fails_alone(conn):
    await index_instances(conn, [_inst("1.1")])
    out = await index_instances(
        conn, [_inst("2.1", study="1.2.826.0.1.9", sha="d" * 64), _inst("1.2", sha="e" * 64)]
    )
    assert [o.outcome for o in out] == ["conflict", "stored"]
    assert "belongs to study" in out[0].reason


async def test_patients_sharing_an_id_are_not_merged(conn):
    await index_instances(conn, [_inst("1.1", name="Doe^John")])
    await index_instances(
        conn,
        [_inst("2.1", study="1.2.9", series="1.2.9.1", name="Roe^Jane", sha="e" * 64)],
    )
    rows = await conn.fetch("SELECT patient_id, patient_name FROM patient ORDER BY patient_name")
    assert [(r["patient_id"], r["patient_name"]) for r in rows] == [
        ("P1", "Doe^John"),
        ("P1", "Roe^Jane"),
    ]


async def test_a_series_stored_earlier_in_the_batch_is_still_owned_by_its_study(conn):
    out = await index_instances(
        conn,
        [
            _inst("1.1", sha="a" * 64),
            _inst("1.2", sha="b" * 64),
            _inst("2.1", study="1.2.826.0.1.9", sha="c" * 64),
        ],
    )
    assert [o.outcome for o in out] == ["stored", "stored", "conflict"]
    assert f"belongs to study {STUDY}" in out[2].reason
    assert await conn.fetchval("SELECT number_of_instances FROM series") == 2
    assert await conn.fetchval("SELECT count(*) FROM change_feed") == 2


async def test_a_refused_instance_does_not_leave_its_new_series_behind(conn):
    refused = replace(_inst("1.1", sha="a" * 64), rows=2**40)  # not an integer column value
    out = await index_instances(conn, [refused, _inst("1.2", sha="b" * 64)])
    assert [o.outcome for o in out] == ["failed", "stored"]
    series = await conn.fetch("SELECT pk, number_of_instances FROM series")
    assert [r["number_of_instances"] for r in series] == [1]
    assert await conn.fetchval("SELECT count(*) FROM change_feed") == 1


async def test_a_refused_last_instance_leaves_its_neighbours_written_once(conn):
    # the batch is first written without savepoints: the refusal rolls it all back, and
    # it is written again instance by instance
    refused = replace(_inst("1.3", sha="c" * 64), rows=2**40)
    batch = [_inst("1.1", sha="a" * 64), _inst("1.2", sha="b" * 64), refused]
    out = await index_instances(conn, batch)
    assert [o.outcome for o in out] == ["stored", "stored", "failed"]
    assert await conn.fetchval("SELECT number_of_instances FROM series") == 2
    assert await conn.fetchval("SELECT count(*) FROM instance") == 2
    assert await conn.fetchval("SELECT count(*) FROM change_feed") == 2


async def test_another_patient_in_a_series_of_the_batch_is_still_upserted(conn):
    out = await index_instances(
        conn, [_inst("1.1", sha="a" * 64), _inst("1.2", sha="b" * 64, name="Roe^Jane")]
    )
    assert [o.outcome for o in out] == ["stored", "stored"]
    names = await conn.fetch("SELECT patient_name FROM patient ORDER BY patient_name")
    assert [r["patient_name"] for r in names] == ["Doe^John", "Roe^Jane"]
