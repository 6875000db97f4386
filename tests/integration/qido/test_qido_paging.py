"""Paging (PS3.18 8.3.4.4) when many studies share a date and time: the order is total
(StudyDate, StudyTime, then StudyInstanceUID in byte order, newest first; the UIDs,
unlike a row id, let a router merge the pages of several shards in the same order), so
consecutive pages neither repeat nor skip a result, at every level, and the server
maximum adds the 8.3.4.4.1 Warning with the number of results left.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from pydicom.dataset import Dataset

from tessera.shared.messages import IndexInstance
from tests.support.qido_archive import MR, index, indexed, search, serve, value

ROOT = "1.2.826.0.9.5"
SAME = 30  # studies on 2024-01-01 at 12:00
# (study number, date, time): 30 alike, then 5 a day later, 5 without a date
STUDIES = (
    [(n, "20240101", "120000") for n in range(SAME)]
    + [(n, "20240102", "") for n in range(SAME, SAME + 5)]
    + [(n, "", "") for n in range(SAME + 5, SAME + 10)]
)


def _instance(study: int, date: str, time: str, series: int, number: int) -> IndexInstance:
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = MR, "MR"
    ds.StudyInstanceUID = study_uid = f"{ROOT}.{study}"
    ds.SeriesInstanceUID = series_uid = f"{study_uid}.{series}"
    ds.SOPInstanceUID = f"{series_uid}.{number}"
    ds.StudyDate, ds.StudyTime = date, time
    ds.PatientName, ds.PatientID = f"Same^Day{study % 3}", f"P{study % 3}"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1  # every one alike: the UIDs decide
    return indexed(ds)


@pytest.fixture
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    instances = [
        _instance(n, date, time, series, number)
        for n, date, time in STUDIES
        for series in (1, 2)
        for number in (1, 2)
    ]
    await index(database, instances)
    async with serve(database, qido_max_limit=25) as c:
        yield c


def _uids(results: list[dict], tag: str) -> list[str]:
    return [value(r, tag) for r in results]


def _desc(numbers: range) -> list[str]:
    """Study UIDs in descending byte order (COLLATE "C"): ...5.9 before ...5.29."""
    return sorted((f"{ROOT}.{n}" for n in numbers), reverse=True)


LATER = _desc(range(SAME, SAME + 5))
ALIKE = _desc(range(SAME))
UNDATED = _desc(range(SAME + 5, SAME + 10))
ALL = LATER + ALIKE + UNDATED


def _series(studies: list[str]) -> list[str]:
    return [f"{s}.{k}" for s in studies for k in (1, 2)]


def _instances(studies: list[str]) -> list[str]:
    return [f"{se}.{m}" for se in _series(studies) for m in (1, 2)]


async def test_same_date_studies_in_a_total_order(client):
    everything = _uids(await search(client, "/studies", limit=25), "0020000D")
    everything += _uids(await search(client, "/studies", limit=25, offset=25), "0020000D")
    assert everything == ALL


@pytest.mark.parametrize(
    ("path", "tag", "params", "expected"),
    [
        ("/studies", "0020000D", {}, ALL),
        ("/studies", "0020000D", {"StudyDate": "20240101"}, ALIKE),
        ("/studies", "0020000D", {"PatientName": "same*", "includefield": "00081030"}, ALL),
        ("/series", "0020000E", {}, _series(ALL)),
        ("/instances", "00080018", {"StudyDate": "20240101-"}, _instances(LATER + ALIKE)),
    ],
)
@pytest.mark.parametrize("size", [1, 7, 25])
async def test_pages_neither_repeat_nor_skip(client, path, tag, params, expected, size):
    everything: list[str] = []
    for offset in range(0, len(expected) + size, size):
        everything += _uids(await search(client, path, limit=size, offset=offset, **params), tag)
    assert everything == expected


async def test_the_server_maximum_cuts_with_a_warning(client):
    # PS3.18 8.3.4.4.1: 40 studies, at most 25 per page
    first = await client.get("/studies")
    assert len(first.json()) == 25
    assert re.fullmatch(r'299 \S+ "There are 15 additional results that can be requested"',
                        first.headers["warning"])  # fmt: skip
    rest = await client.get("/studies", params={"offset": "25"})
    assert len(rest.json()) == 15 and "warning" not in rest.headers
    beyond = await client.get("/studies", params={"offset": "1000"})
    assert (beyond.status_code, beyond.content) == (204, b"")  # PS3.18 8.3.4.4.1
    nothing = await client.get("/studies", params={"limit": "0"})
    assert nothing.status_code == 204 and "warning" not in nothing.headers
