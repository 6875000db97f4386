"""QIDO-RS on a real PostgreSQL, through the index app (PS3.18 10.6, PS3.4 C.2.2.2): the
archive of :mod:`tests.support.qido_archive`. More in test_qido_*.py: matching rules,
required attributes, character sets, paging, extra attributes.
"""

from __future__ import annotations

import re

import pytest

from tessera.shared.qido.params import Level
from tessera.shared.qido.result import REQUIRED
from tests.support.qido_archive import (
    BASE,
    MR,
    NEWEST_FIRST,
    ST1,
    ST2,
    ST3,
    archive,
    index,
    make_instance,
    search,
    serve,
    value,
)

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


async def test_no_match_is_204_without_a_body_ps3_18_8_3_4_4_1(client):
    response = await client.get("/studies", params={"PatientID": "nobody"})
    assert (response.status_code, response.content) == (204, b"")
    assert "content-type" not in response.headers


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


async def test_instance_results_and_bulk_data(database):
    # PS3.18 10.6.3.3.3: bulk data is not a search result; a BulkDataURI inside a
    # sequence item is returned absolute
    inst = make_instance(ST1, f"{ST1}.1", f"{ST1}.1.1", modality="MR", series_number="2", number=1)
    prefix = f"/studies/{ST1}/series/{ST1}.1/instances/{ST1}.1.1/bulk"
    icon = {"7FE00010": {"vr": "OW", "BulkDataURI": f"{prefix}/00880200/0/7FE00010"}}
    inst.metadata["00880200"] = {"vr": "SQ", "Value": [icon]}  # IconImageSequence
    inst.metadata["00420011"] = {"vr": "OB", "BulkDataURI": f"{prefix}/00420011"}
    inst.metadata["7FE00010"] = {"vr": "OW", "BulkDataURI": f"{prefix}/7FE00010"}
    inst.metadata["00204000"] = {"vr": "LT", "Value": ["padded\u0000"]}  # NUL: cleaned
    await index(database, [inst])
    async with serve(database) as client:
        path = f"/studies/{ST1}/series/{ST1}.1/instances"
        (result,) = await search(client, path, includefield="all")
        nested = result["00880200"]["Value"][0]["7FE00010"]["BulkDataURI"]
        assert nested == f"{BASE}/dicom-web{prefix}/00880200/0/7FE00010"
        assert "7FE00010" not in result and "00420011" not in result
        assert value(result, "00204000") == "padded"
        assert value(result, "00280010") == 4
        assert list(result) == sorted(result)
        (plain,) = await search(client, path)
        assert "00880200" not in plain and "00080008" not in plain


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


async def test_a_nul_in_a_value_is_400(client):
    """Issue 15: a NUL (``%00``) reached PostgreSQL and answered 500."""
    r = await client.get("/studies", params={"PatientName": "a\x00b"})
    assert r.status_code == 400 and "NUL" in r.text
