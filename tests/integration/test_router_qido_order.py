"""The shard order the router's QIDO merge reproduces is still served by the
``study_order`` index (migration 0004: StudyDate, StudyTime, StudyInstanceUID, all
COLLATE "C", descending), for the plain study list and for StudyDate(+StudyTime) ranges."""

from __future__ import annotations

import random

import asyncpg
import pytest
from pydicom.dataset import Dataset

from tessera.router.qido_merge import in_order, parse_results
from tessera.shared.messages import IndexInstance
from tessera.shared.qido.params import Level, parse_query
from tessera.shared.qido.sql import page_of, search_sql
from tests.support.qido_archive import MR, index, indexed, serve


@pytest.mark.parametrize(
    "params",
    [
        [],
        [("StudyDate", "20240101-")],
        [("StudyDate", "20240101-20241231"), ("StudyTime", "080000-")],
    ],
)
async def test_study_list_is_read_in_study_order_index_order(database: str, params) -> None:
    query = parse_query([*params, ("limit", "101"), ("offset", "20")], Level.STUDY)
    sql = search_sql(query, page_of(query, 1000))
    conn = await asyncpg.connect(database)
    try:
        # Without a sort node on offer, the plan must take the order from the index:
        # a mismatch of column, direction or collation would show a Sort instead.
        await conn.execute("SET enable_sort = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql.text, *sql.args))
    finally:
        await conn.close()
    assert "study_order" in plan, plan
    assert "Sort" not in plan, plan


def _instance(
    study: str, date: str, time: str, series_number: str, number: str, sop: str
) -> IndexInstance:
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = MR, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{study}.{sop[-1]}"
    ds.SOPInstanceUID = sop
    ds.StudyDate, ds.StudyTime = date, time
    ds.PatientName, ds.PatientID = "Order^Test", "ORD"
    ds.SeriesNumber, ds.InstanceNumber = series_number, number
    return indexed(ds)


# Dates and times as written (empty, TM with and without seconds and fractions), UIDs
# that differ in length and byte order, series and instance numbers that are not all
# integers: what the SQL order and the router's merge order must agree on.
_TIMES = ["", "1200", "120000", "120000.5", "13", "0800"]
_DATES = ["", "20240101", "20231231"]


@pytest.mark.parametrize("level", [Level.STUDY, Level.SERIES, Level.INSTANCE])
async def test_router_merge_order_reproduces_the_sql_order(database: str, level: Level) -> None:
    rng = random.Random(6)
    instances = []
    for n in range(36):
        study = f"1.2.826.0.9.6.{n}{rng.choice(['', '.1', '.22'])}"
        for k, number in enumerate(["1", "", "10", "+2", "1234567890"][: rng.randint(1, 5)]):
            instances.append(
                _instance(
                    study,
                    _DATES[n % 3],
                    _TIMES[n % 6],
                    rng.choice(["1", "2", "", "10"]),
                    number,
                    f"{study}.9{k}",
                )
            )
    await index(database, instances)
    path = {Level.STUDY: "/studies", Level.SERIES: "/series", Level.INSTANCE: "/instances"}[level]
    async with serve(database) as client:
        r = await client.get(path, params={"limit": "1000"})
    assert r.status_code == 200, r.text
    # the shard's very answer, read as the router reads it, in the router's order
    results = parse_results(r.content, level, "a")
    assert len(results) > 30
    shuffled = results[::-1]
    random.Random(7).shuffle(shuffled)
    assert in_order(shuffled) == results
