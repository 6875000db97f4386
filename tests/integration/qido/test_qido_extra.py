"""Extra searchable attributes (``TESSERA_QIDO_EXTRA_ATTRIBUTES``), their background
reindex (``python -m tessera.index.reindex``) and their indexes
(``python -m tessera.index.search_indexes``), against PostgreSQL. PS3.18 10.6.1.2 lets an
origin server match on more keys than Table 10.6.1-5 requires; these make a series
attribute (BodyPartExamined) and an instance attribute (ImageType) study- and
series-level keys.
"""

from __future__ import annotations

import asyncpg
import pytest

from tessera.index.reindex import reindex
from tessera.index.search_indexes import apply
from tessera.shared.levels import Layout
from tessera.shared.qido.params import Level, parse_query
from tessera.shared.qido.sql import page_of, search_sql
from tests.support.qido_archive import ST1, ST2, ST3, archive, index, search, serve, value

EXTRA = ("study:BodyPartExamined", "series:00080008")  # ImageType up to the series
LAYOUT = Layout.parse(EXTRA)


async def _study_uids(database: str, **params: str) -> list[str]:
    async with serve(database, qido_extra_attributes=EXTRA) as client:
        return [value(r, "0020000D") for r in await search(client, "/studies", **params)]


async def test_extra_attributes_are_written_matched_and_returned(database):
    await index(database, archive(), LAYOUT)
    # a study's attrs come from its first instance: ST1 and ST3 start with HEAD series
    assert await _study_uids(database, BodyPartExamined="HEAD") == [ST3, ST1]
    assert await _study_uids(database, BodyPartExamined="CH*") == [ST2]
    async with serve(database, qido_extra_attributes=EXTRA) as client:
        (st2,) = await search(client, "/studies", StudyInstanceUID=ST2, includefield="00180015")
        assert value(st2, "00180015") == "CHEST"
        # a series' attrs come from its first instance too: #10, AXIAL, never the LOCALIZER
        series = await search(client, f"/studies/{ST1}/series", ImageType="AXIAL")
        assert [value(r, "0020000E") for r in series] == [f"{ST1}.3", f"{ST1}.1", f"{ST1}.2"]
        assert value(series[0], "00080008") == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert await search(client, f"/studies/{ST1}/series", ImageType="LOCALIZER") == []


async def test_without_the_setting_they_stay_where_they_belong(database):
    await index(database, archive(), LAYOUT)
    async with serve(database) as client:
        response = await client.get("/studies", params={"BodyPartExamined": "HEAD"})
        assert response.status_code == 400 and "series-level" in response.text


async def test_reindex_adds_them_to_rows_stored_before_and_resumes(database):
    await index(database, archive())  # written without the extras
    assert await _study_uids(database, BodyPartExamined="HEAD") == []
    conn = await asyncpg.connect(database)
    try:
        first = await reindex(conn, LAYOUT, batch_size=2, max_batches=4)
        assert not first.finished and first.rows == {"study": 4, "series": 2}
        progress = await conn.fetch("SELECT phase, last_pk, done FROM reindex_progress")
        assert {(r["phase"], r["done"]) for r in progress} == {("study", True), ("series", False)}
        second = await reindex(conn, LAYOUT, batch_size=2)  # resumes with series row 3
        assert second.finished
        assert second.rows["series"] == 5 and second.rows["study"] == 0
        assert second.rows["instance"] == len(archive())
        again = await reindex(conn, LAYOUT, batch_size=2)  # nothing left to do
        assert again.rows == {"study": 0, "series": 0, "instance": 0}
        other = await reindex(conn, Layout(), batch_size=100)  # a new layout starts over
        assert other.rows["study"] == 4
        await reindex(conn, LAYOUT, batch_size=100)
    finally:
        await conn.close()
    assert await _study_uids(database, BodyPartExamined="HEAD") == [ST3, ST1]


async def test_search_indexes_are_created_used_and_dropped(database):
    await index(database, archive(), LAYOUT)
    conn = await asyncpg.connect(database)
    try:
        created = await apply(conn, LAYOUT)
        names = {r["relname"] for r in await conn.fetch("SELECT relname FROM pg_class")}
        assert {"qido_study_00180015_values", "qido_study_00180015_trgm"} <= names
        assert {"qido_series_00080008_values", "qido_series_00080008_trgm"} <= names
        assert await apply(conn, LAYOUT) == []  # idempotent
        assert created
        await conn.execute("SET enable_seqscan = off")  # a 4-row table: make the choice visible
        for params, name in [
            ([("BodyPartExamined", "HEAD")], "qido_study_00180015_values"),
            ([("BodyPartExamined", "*EAD*")], "qido_study_00180015_trgm"),
        ]:
            query = parse_query(params, Level.STUDY, layout=LAYOUT)
            sql = search_sql(query, page_of(query, 100))
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql.text, *sql.args))
            assert name in plan, plan
        dropped = await apply(conn, Layout(), drop_unused=True)
        assert len([s for s in dropped if s.startswith("DROP INDEX")]) == 4
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        (["study:NoSuchKeyword"], "NoSuchKeyword"),
        (["patient:PatientName"], "level"),
        (["instance:PatientName"], "down"),
    ],
)
def test_bad_settings_fail_at_start(entries, fragment):
    with pytest.raises(ValueError, match=fragment):
        Layout.parse(entries)
