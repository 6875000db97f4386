"""QIDO-RS on a real PostgreSQL, through the index app (PS3.18 10.6, PS3.4 C.2.2.2).

The archive below is indexed with the real writer from pydicom datasets:

    study   patient                  date      time    modalities  description
    ST1     Smith^John               20240115  101500  MR, SR      Brain MRI
    ST2     Goldsmith^Anna           20231201  235959  CT          Chest_CT 100%
    ST3     SMITH^JANE               20240301  080000  MR, CT      Follow-up
    ST4     Yamada^Tarou=山田^太郎    (none)    (none)  OT          (none)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
from pydicom.dataset import Dataset

from tessera.index.app import create_app
from tessera.index.writer import index_instances
from tessera.shared.messages import IndexInstance
from tessera.shared.qido.params import Level
from tessera.shared.qido.result import REQUIRED
from tessera.shared.settings import Settings

MR = "1.2.840.10008.5.1.4.1.1.4"
BASE = "http://index.test"
ST1, ST2, ST3, ST4 = "1.2.826.0.9.1", "1.2.826.0.9.2", "1.2.826.0.9.3", "1.2.826.0.9.4"
NEWEST_FIRST = [ST3, ST1, ST2, ST4]

STUDIES: dict[str, dict[str, Any]] = {
    ST1: {
        "PatientName": "Smith^John",
        "PatientID": "P1",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "PatientAge": "054Y",
        "StudyDate": "20240115",
        "StudyTime": "101500",
        "AccessionNumber": "ACC1",
        "StudyDescription": "Brain MRI",
        "ReferringPhysicianName": "Ref^Doc",
        "StudyID": "S1",
    },
    ST2: {
        "PatientName": "Goldsmith^Anna",
        "PatientID": "P2",
        "StudyDate": "20231201",
        "StudyTime": "235959",
        "AccessionNumber": "ACC2",
        "StudyDescription": "Chest_CT 100%",
    },
    ST3: {
        "PatientName": "SMITH^JANE",
        "PatientID": "P3",
        "StudyDate": "20240301",
        "StudyTime": "080000",
        "AccessionNumber": "ACC3",
        "StudyDescription": "Follow-up",
    },
    ST4: {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "P4"},
}
# (study, series, modality, SeriesNumber, BodyPartExamined, instances)
SERIES = [
    (ST1, f"{ST1}.1", "MR", "2", "HEAD", 3),
    (ST1, f"{ST1}.2", "MR", "10", "HEAD", 1),
    (ST1, f"{ST1}.3", "SR", "1", "", 1),
    (ST2, f"{ST2}.1", "CT", "1", "CHEST", 2),
    (ST3, f"{ST3}.1", "MR", "1", "HEAD", 1),
    (ST3, f"{ST3}.2", "CT", "2", "CHEST", 1),
    (ST4, f"{ST4}.1", "OT", "1", "", 1),
]


def make_instance(
    study: str, series: str, sop: str, *, modality: str, series_number: str, number: int
) -> IndexInstance:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MR
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER" if number == 2 else "AXIAL"]
    ds.Rows, ds.Columns, ds.BitsAllocated = 4, 4, 16
    for keyword, value in STUDIES[study].items():
        setattr(ds, keyword, value)
    body_part = next((s[4] for s in SERIES if s[1] == series), "")
    if body_part:
        ds.BodyPartExamined = body_part
    sha = hashlib.sha256(sop.encode()).hexdigest()
    return IndexInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=MR,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        storage_key=f"instances/{sha}.dcm",
        size=100,
        sha256=sha,
        metadata=ds.to_json_dict(),
        rows=4,
        columns=4,
    )


def archive() -> list[IndexInstance]:
    # instance numbers 10, 1, 2, ... so that the order is visibly numeric, not textual
    return [
        make_instance(study, series, f"{series}.{n}", modality=mod, series_number=num, number=n)
        for study, series, mod, num, _, count in SERIES
        for n in [10, *range(1, count)][:count]
    ]


async def index(database: str, instances: list[IndexInstance]) -> None:
    conn = await asyncpg.connect(database)
    try:
        outcomes = await index_instances(conn, instances)
    finally:
        await conn.close()
    assert {o.outcome for o in outcomes} == {"stored"}


@asynccontextmanager
async def serve(database: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield client


@pytest.fixture
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    await index(database, archive())
    async with serve(database) as c:
        yield c


def value(result: dict, tag: str) -> Any:
    element = result.get(tag, {})
    values = element.get("Value")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


async def search(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    return response.json()  # type: ignore[no-any-return]


async def study_uids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    return [value(r, "0020000D") for r in await search(client, "/studies", **params)]


# --- response attributes (PS3.18 10.6.3.3) --------------------------------------------------


async def test_studies_newest_first_with_required_and_computed_attributes(client):
    results = await search(client, "/studies")
    assert [value(r, "0020000D") for r in results] == NEWEST_FIRST
    for result in results:
        assert set(REQUIRED[Level.STUDY]) <= set(result)  # Table 10.6.3-3, Type R and U
        assert list(result) == sorted(result)
    st1 = results[1]
    assert value(st1, "00100010") == {"Alphabetic": "Smith^John"}
    assert value(st1, "00080020") == "20240115"
    assert value(st1, "00080061") == ["MR", "SR"]  # ModalitiesInStudy
    assert value(st1, "00201206") == 3  # NumberOfStudyRelatedSeries
    assert value(st1, "00201208") == 5  # NumberOfStudyRelatedInstances
    assert value(st1, "00081190") == f"{BASE}/dicom-web/studies/{ST1}"  # RetrieveURL
    assert value(st1, "00080056") == "ONLINE"
    assert "00101010" not in st1  # PatientAge: neither required nor asked for
    st4 = results[3]
    assert st4["00080020"] == {"vr": "DA"}  # required, no value: present and empty


async def test_retrieve_url_follows_the_proxy_headers(client):
    response = await client.get(
        "/studies",
        params={"StudyInstanceUID": ST1},
        headers={
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "pacs.example",
            "X-Forwarded-Prefix": "/dw",
        },
    )
    assert value(response.json()[0], "00081190") == f"https://pacs.example/dw/studies/{ST1}"


async def test_computed_attributes_follow_new_instances(client, database):
    before = (await search(client, "/studies", StudyInstanceUID=ST2))[0]
    assert (value(before, "00201206"), value(before, "00201208")) == (1, 2)
    extra = [
        make_instance(ST2, f"{ST2}.9", f"{ST2}.9.{n}", modality="PR", series_number="9", number=n)
        for n in (1, 2, 3)
    ]
    await index(database, extra)
    after = (await search(client, "/studies", StudyInstanceUID=ST2))[0]
    assert (value(after, "00201206"), value(after, "00201208")) == (2, 5)
    assert value(after, "00080061") == ["CT", "PR"]
    (series,) = await search(client, f"/studies/{ST2}/series", SeriesInstanceUID=f"{ST2}.9")
    assert value(series, "00201209") == 3  # NumberOfSeriesRelatedInstances


# --- matching (PS3.4 C.2.2.2) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # C.2.2.2.3 universal
        ({"PatientName": ""}, NEWEST_FIRST),
        ({"PatientName": "*"}, NEWEST_FIRST),
        # C.2.2.2.1 single value; PN case-insensitive (our conformance), others exact
        ({"PatientName": "smith^john"}, [ST1]),
        ({"PatientName": "SMITH^JOHN"}, [ST1]),
        ({"PatientName": "Smith"}, []),
        ({"PatientID": "P2"}, [ST2]),
        ({"PatientID": "p2"}, []),
        ({"AccessionNumber": "ACC3"}, [ST3]),
        ({"00080050": "ACC3"}, [ST3]),  # by tag
        ({"PatientAge": "054Y"}, [ST1]),  # no column: matched on study.attrs
        # PN component groups (PS3.5 6.2.1): ideographic and phonetic groups match too
        ({"PatientName": "山田^太郎"}, [ST4]),
        ({"PatientName": "やまだ*"}, [ST4]),
        ({"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"}, [ST4]),
        # C.2.2.2.4 wildcards: PN case-insensitive, other VRs case-sensitive
        ({"PatientName": "*smi*"}, [ST3, ST1, ST2]),
        ({"PatientName": "smi*"}, [ST3, ST1]),
        ({"PatientName": "Sm?th^J*"}, [ST3, ST1]),
        ({"StudyDescription": "*MRI*"}, [ST1]),
        ({"StudyDescription": "*mri*"}, []),
        ({"StudyDescription": "*n_M*"}, []),  # '_' is literal, not LIKE's any-character
        ({"StudyDescription": "*%*"}, [ST2]),  # '%' is literal
        ({"StudyDescription": "Chest_CT*"}, [ST2]),
        # C.2.2.2.2 list of UIDs
        ({"StudyInstanceUID": f"{ST1}\\{ST2}"}, [ST1, ST2]),
        ({"StudyInstanceUID": f"{ST2},{ST4},1.2.3"}, [ST2, ST4]),
        # C.2.2.2.5 ranges, closed and open; empty values never match a range
        ({"StudyDate": "20240115"}, [ST1]),
        ({"StudyDate": "20240101-20240131"}, [ST1]),
        ({"StudyDate": "20240101-"}, [ST3, ST1]),
        ({"StudyDate": "-20231231"}, [ST2]),
        ({"StudyDate": "20231201-20240115"}, [ST1, ST2]),  # bounds are inclusive
        ({"StudyTime": "-0900"}, [ST3]),
        ({"StudyTime": "1015-1015"}, [ST1]),  # upper bound to the end of the minute
        ({"StudyTime": "2359-"}, [ST2]),
        ({"StudyDate": "20240101-", "StudyTime": "-1200"}, [ST3, ST1]),
        # ModalitiesInStudy: any series of the study; multiple values (PS3.18 8.3.4.6)
        ({"ModalitiesInStudy": "CT"}, [ST3, ST2]),
        ({"ModalitiesInStudy": "SR"}, [ST1]),
        ({"ModalitiesInStudy": "CT\\SR"}, [ST3, ST1, ST2]),
        ({"ModalitiesInStudy": "C?"}, [ST3, ST2]),
        # keys combine with AND
        ({"PatientName": "*smith*", "ModalitiesInStudy": "CT"}, [ST3, ST2]),
        # PS3.18 8.3.4.5 emptyvaluematching: entities without a value match too
        ({"StudyDate": "20240101-", "emptyvaluematching": "true"}, [ST3, ST1, ST4]),
        ({"PatientAge": "054Y", "emptyvaluematching": "true"}, [ST3, ST1, ST2, ST4]),
    ],
)
async def test_study_matching(client, params, expected):
    assert await study_uids(client, **params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # fuzzymatching=true: every word starts a word of the name, any case, any order
        ({"PatientName": "john smi", "fuzzymatching": "true"}, [ST1]),
        ({"PatientName": "jan", "fuzzymatching": "true"}, [ST3]),
        ({"PatientName": "smith", "fuzzymatching": "true"}, [ST3, ST1]),  # not Goldsmith
        ({"PatientName": "太郎", "fuzzymatching": "true"}, [ST4]),
        ({"PatientName": "jan", "fuzzymatching": "false"}, []),
        ({"PatientName": "*mith^J*", "fuzzymatching": "true"}, [ST3, ST1]),  # wildcards as usual
    ],
)
async def test_fuzzy_person_name_matching(client, params, expected):
    assert await study_uids(client, **params) == expected


async def test_no_match_is_200_with_an_empty_array(client):
    response = await client.get("/studies", params={"PatientID": "nobody"})
    assert (response.status_code, response.json()) == (200, [])


# --- includefield (PS3.18 8.3.4.3) ----------------------------------------------------------


async def test_includefield_and_matching_keys_are_returned(client):
    results = await search(
        client, "/studies", includefield="PatientAge,00081030", StudyDescription=""
    )
    by_uid = {value(r, "0020000D"): r for r in results}
    assert value(by_uid[ST1], "00101010") == "054Y"
    assert by_uid[ST2]["00101010"] == {"vr": "AS"}  # asked for, no value: empty
    assert value(by_uid[ST2], "00081030") == "Chest_CT 100%"


async def test_includefield_of_a_lower_level_is_not_returned(client):
    # PS3.18 10.6.3.3.1: Series and Instance level attributes are not returned for studies
    (result,) = await search(client, "/studies", StudyInstanceUID=ST1, includefield="Modality")
    assert "00080060" not in result


async def test_includefield_all(client):
    (result,) = await search(client, "/studies", StudyInstanceUID=ST1, includefield="all")
    assert value(result, "00101010") == "054Y"
    assert value(result, "00080005") == "ISO_IR 192"
    assert value(result, "00080062") == MR  # SOPClassesInStudy
    path = f"/studies/{ST1}/series/{ST1}.1/instances"
    (instance,) = await search(client, path, SOPInstanceUID=f"{ST1}.1.1", includefield="all")
    assert value(instance, "00080008") == ["ORIGINAL", "PRIMARY", "AXIAL"]


# --- series and instances (PS3.18 10.6.1, 10.6.3.3.2-3) -------------------------------------


async def test_study_series_in_series_number_order(client):
    results = await search(client, f"/studies/{ST1}/series")
    assert [value(r, "0020000E") for r in results] == [f"{ST1}.3", f"{ST1}.1", f"{ST1}.2"]
    for result in results:
        assert set(REQUIRED[Level.SERIES]) <= set(result)
        assert value(result, "0020000D") == ST1
        assert "00100010" not in result  # the study is fixed by the path
    first = results[1]
    assert value(first, "00201209") == 3
    assert value(first, "00081190") == f"{BASE}/dicom-web/studies/{ST1}/series/{ST1}.1"


async def test_study_series_matching(client):
    reports = await search(client, f"/studies/{ST1}/series", Modality="SR")
    assert [value(r, "0020000E") for r in reports] == [f"{ST1}.3"]
    assert await search(client, f"/studies/{ST2}/series", Modality="SR") == []
    hits = await search(client, f"/studies/{ST1}/series", BodyPartExamined="HEAD")  # series.attrs
    assert [value(r, "0020000E") for r in hits] == [f"{ST1}.1", f"{ST1}.2"]


async def test_all_series_with_a_study_level_key(client):
    # PS3.18 10.6.1.2: a relational search of all series may carry study-level keys
    results = await search(client, "/series", PatientName="smith*")
    uids = [value(r, "0020000E") for r in results]
    assert uids == [f"{ST3}.1", f"{ST3}.2", f"{ST1}.3", f"{ST1}.1", f"{ST1}.2"]
    # All Series results include the study attributes of Table 10.6.3-3 (10.6.3.3.2)
    for result in results:
        assert set(REQUIRED[Level.STUDY]) <= set(result)
    assert value(results[0], "00100010") == {"Alphabetic": "SMITH^JANE"}
    assert value(results[0], "00081190") == f"{BASE}/dicom-web/studies/{ST3}/series/{ST3}.1"
    mixed = await search(client, "/series", StudyDate="20240101-", Modality="CT")
    assert [value(r, "0020000E") for r in mixed] == [f"{ST3}.2"]


async def test_series_instances_in_instance_number_order(client):
    results = await search(client, f"/studies/{ST1}/series/{ST1}.1/instances")
    assert [value(r, "00200013") for r in results] == [1, 2, 10]
    for result in results:
        assert set(REQUIRED[Level.INSTANCE]) <= set(result)
        assert (value(result, "00280010"), value(result, "00280100")) == (4, 16)
        assert "00080061" not in result
    assert value(results[0], "00081190") == (
        f"{BASE}/dicom-web/studies/{ST1}/series/{ST1}.1/instances/{ST1}.1.1"
    )


async def test_study_instances_with_series_level_key(client):
    results = await search(client, f"/studies/{ST1}/instances", Modality="MR")
    assert [value(r, "00080018") for r in results] == [
        f"{ST1}.1.1",
        f"{ST1}.1.2",
        f"{ST1}.1.10",
        f"{ST1}.2.10",
    ]
    assert value(results[0], "00201209") == 3  # series attributes of Table 10.6.3-4
    assert value(results[0], "00200011") == 2


async def test_all_instances_relational(client):
    (result,) = await search(client, "/instances", SOPInstanceUID=f"{ST3}.2.10")
    assert value(result, "00100010") == {"Alphabetic": "SMITH^JANE"}  # study attributes
    assert value(result, "00080060") == "CT"  # series attributes
    localizers = await search(client, "/instances", ImageType="LOCALIZER", PatientID="P1")
    assert [value(r, "00080018") for r in localizers] == [f"{ST1}.1.2"]  # any value matches


# --- paging (PS3.18 8.3.4.4) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tag"),
    [("/studies", "0020000D"), ("/series", "0020000E"), ("/instances", "00080018")],
)
async def test_paging_neither_repeats_nor_skips(client, path, tag):
    everything = [value(r, tag) for r in await search(client, path)]
    for size in (1, 2, 3):
        pages = []
        for offset in range(0, len(everything) + size, size):
            pages += [value(r, tag) for r in await search(client, path, limit=size, offset=offset)]
        assert pages == everything


async def test_warning_when_the_server_maximum_cuts_the_page(database):
    await index(database, archive())
    async with serve(database, qido_max_limit=3) as client:
        response = await client.get("/studies")
        assert [value(r, "0020000D") for r in response.json()] == NEWEST_FIRST[:3]
        warning = response.headers["warning"]
        assert re.fullmatch(
            r'299 index\.test "There are 1 additional results that can be requested"', warning
        )
        over = await client.get("/studies", params={"limit": "50", "offset": "0"})
        assert len(over.json()) == 3 and "warning" in over.headers
        # the client's own smaller limit, or the last page: no warning
        for params in ({"limit": "2"}, {"offset": "1"}, {"PatientID": "P1"}):
            response = await client.get("/studies", params=params)
            assert "warning" not in response.headers, params


# --- errors and negotiation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "fragment"),
    [
        ("/studies", {"NoSuchKey": "1"}, "NoSuchKey"),
        ("/studies", {"Modality": "CT"}, "Modality"),
        ("/studies", {"includefield": "PatientsAge"}, "PatientsAge"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/studies", {"StudyDate": "yesterday"}, "StudyDate"),
        ("/series", {"SOPInstanceUID": "1.2"}, "SOPInstanceUID"),
        ("/studies/not-a-uid/series", {}, "StudyInstanceUID"),
    ],
)
async def test_bad_requests_are_400_naming_the_key(client, path, params, fragment):
    response = await client.get(path, params=params)
    assert response.status_code == 400
    assert fragment in response.text


@pytest.mark.parametrize(
    ("accept", "status", "media_type"),
    [
        (None, 200, "application/dicom+json"),
        ("*/*", 200, "application/dicom+json"),
        ("application/dicom+json", 200, "application/dicom+json"),
        ("application/json", 200, "application/json"),
        ("application/*;q=0.5", 200, "application/dicom+json"),
        ("application/dicom+xml", 406, None),
        ('multipart/related; type="application/dicom+xml"', 406, None),
        ("*/*, application/dicom+json;q=0, application/json;q=0", 406, None),
    ],
)
async def test_accept(client, accept, status, media_type):
    headers = {"Accept": accept} if accept else {}
    response = await client.get("/studies", headers=headers)
    assert response.status_code == status
    if media_type:
        assert response.headers["content-type"] == media_type


async def test_accept_query_parameter_overrides_the_header(client):
    response = await client.get(
        "/studies", params={"accept": "application/dicom+xml"}, headers={"Accept": "*/*"}
    )
    assert response.status_code == 406


async def test_accept_query_parameter_with_an_unescaped_plus(client):
    # "application/dicom+json" typed into a URL arrives as "application/dicom json"
    response = await client.get("/studies?accept=application/dicom+json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"


async def test_readiness(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
