"""Three shards behind one router (issue 6), as real processes, against a one-shard oracle.

The same instances are stored through the federation's router and through a single-shard
deployment (``single_shard``: one shard stack, its router without registry); every
answer of the router must equal the single shard's, apart from the host in URLs: STOW-RS
responses (PS3.18 10.5.3), every page of QIDO-RS searches (PS3.18 10.6, paging 8.3.4.4)
and WADO-RS bytes (10.4). Then shards are stopped: a search answers from the others with
a Warning, a retrieve of the missing shard's study is 503 with Retry-After, and all is
well once it is back.
"""

from __future__ import annotations

import json
import re
import uuid
from io import BytesIO
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tessera.router.placement import place
from tests.support.dicomgen import make_instance, multipart, split_multipart
from tests.support.shards import Federation

pytestmark = pytest.mark.e2e

SHARDS = ("shard-0", "shard-1", "shard-2")
ALL_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
PATIENT = f"FED-{uuid.uuid4().hex[:8]}"
# (StudyDate, StudyTime) of each study: several alike, so the UIDs decide the order
WHEN = [("20240101", "120000")] * 6 + [("20240102", "")] * 3 + [("", "")] * 3
WHEN += [("20240101", "1200"), ("20240101", "120000.5"), ("20231231", "235959")]


def _instance(study: str, series: str, when: tuple[str, str], number: int) -> bytes:
    ds = pydicom.dcmread(
        BytesIO(make_instance(study, series, patient_id=PATIENT, instance_number=number))
    )
    ds.StudyDate, ds.StudyTime = when
    ds.SeriesNumber = number % 2 + 1
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _study_on(shard: str) -> str:
    while place(uid := generate_uid(), SHARDS) != shard:
        pass
    return uid


def _dataset() -> list[tuple[str, str, str, bytes]]:
    """(study, series, sop, file) of 15 studies, 2 series x 1-2 instances each."""
    items = []
    for n, when in enumerate(WHEN):
        # the first studies go one to each shard, so every shard holds some (random UIDs
        # alone left one empty about once in 150 runs)
        study = _study_on(SHARDS[n]) if n < len(SHARDS) else generate_uid()
        for s in range(2):
            series = generate_uid()
            for k in range(1 + (n + s) % 2):
                data = _instance(study, series, when, k + 1)
                sop = pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID
                items.append((study, series, sop, data))
    return items


DATA = _dataset()


def _public(doc: Any, base: str) -> Any:
    """``doc`` with the router's base URL replaced, to compare two deployments."""
    return json.loads(json.dumps(doc).replace(base, "BASE"))


async def _stow(base: str, parts: list[bytes]) -> httpx.Response:
    body, ctype = multipart(parts)
    async with httpx.AsyncClient(timeout=120) as http:
        return await http.post(f"{base}/studies", content=body, headers={"Content-Type": ctype})


@pytest.fixture(scope="module")
async def stored(federation: Federation, single_shard: Federation) -> dict[str, Any]:
    """The data set stored through both, in one mixed request each (plus a bad part)."""
    parts = [d for *_, d in DATA] + [b"this is not a DICOM file"]
    mine = await _stow(federation.base_url, parts)
    theirs = await _stow(single_shard.base_url, parts)
    return {"federated": mine, "single": theirs}


async def test_stow_of_many_studies_matches_one_server_and_lands_on_hashed_shards(
    stored: dict[str, httpx.Response], federation: Federation, single_shard: Federation
) -> None:
    mine, theirs = stored["federated"], stored["single"]
    assert mine.status_code == theirs.status_code == 202  # the bad part failed (0xC000)
    assert _public(mine.json(), federation.base_url) == _public(
        theirs.json(), single_shard.base_url
    )
    expected: dict[str, set[str]] = {name: set() for name in SHARDS}
    for study, *_ in DATA:
        expected[place(study, SHARDS)].add(study)
    assert all(expected.values()), "the data set should reach every shard"
    for name in SHARDS:
        async with federation.shard_client(name) as index:
            r = await index.get("/studies", params={"PatientID": PATIENT})
        assert {x["0020000D"]["Value"][0] for x in r.json()} == expected[name]


SEARCHES = [
    ("/studies", {}),
    ("/studies", {"StudyDate": "20240101"}),
    ("/studies", {"includefield": "00201200,00201202,00201204,00081030"}),
    ("/series", {}),
    ("/instances", {"StudyDate": "20240101-"}),
]


@pytest.mark.parametrize(("path", "params"), SEARCHES)
async def test_qido_pages_over_three_shards_equal_one_shard(
    stored: dict, federation: Federation, single_shard: Federation, path: str, params: dict
) -> None:
    query = {"PatientID": PATIENT, **params}
    async with (
        httpx.AsyncClient(base_url=federation.base_url, timeout=60) as mine,
        httpx.AsyncClient(base_url=single_shard.base_url, timeout=60) as theirs,
    ):
        whole = (await theirs.get(path, params=query)).json()
        assert len(whole) >= 8
        for limit in (1, 4, 7):
            for offset in range(0, len(whole) + limit, limit):
                page = {**query, "limit": str(limit), "offset": str(offset)}
                a = await mine.get(path, params=page)
                b = await theirs.get(path, params=page)
                assert a.status_code == b.status_code, a.text
                assert a.status_code in (200, 204), a.text  # 204: past the end
                assert "warning" not in a.headers
                assert _public(a.json() if a.content else [], federation.base_url) == _public(
                    b.json() if b.content else [], single_shard.base_url
                ), (path, page)
        assert _public((await mine.get(path, params=query)).json(), federation.base_url) == (
            _public(whole, single_shard.base_url)
        )


async def test_wado_through_the_router_is_byte_identical(
    stored: dict, federation: Federation
) -> None:
    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
        for study, series, sop, data in DATA[:: max(1, len(DATA) // 6)]:
            url = f"/studies/{study}/series/{series}/instances/{sop}"
            r = await http.get(url, headers={"Accept": ALL_TS})
            assert r.status_code == 200, r.text
            ((_, payload),) = split_multipart(r.content, r.headers["content-type"])
            assert payload == data
            uri = await http.get(
                "/wado",
                params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                        "objectUID": sop, "contentType": "application/dicom"},
            )  # fmt: skip
            assert uri.status_code == 200 and uri.content == data


def _owner_of_some_study() -> tuple[str, str, str, str]:
    study, series, sop, _ = DATA[0]
    return place(study, SHARDS), study, series, sop


async def test_a_stopped_index_leaves_its_results_out_with_a_warning(
    stored: dict, federation: Federation
) -> None:
    down, *_ = _owner_of_some_study()
    others = {s for s, *_ in DATA if place(s, SHARDS) != down}
    stack = federation.stacks[down]
    stack.stop("index")
    try:
        async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
            r = await http.get("/studies", params={"PatientID": PATIENT})
        assert r.status_code == 200
        assert {x["0020000D"]["Value"][0] for x in r.json()} == others
        warnings = r.headers.get_list("warning")
        assert any(
            re.fullmatch(rf'299 \S+ "shard {down} .*: its results are missing"', w)
            for w in warnings
        ), warnings
    finally:
        stack.restart("index")
    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
        r = await http.get("/studies", params={"PatientID": PATIENT})
    assert r.status_code == 200 and "warning" not in r.headers
    assert len(r.json()) == len(WHEN)


async def test_a_stopped_retrieve_is_503_with_retry_after_until_it_is_back(
    stored: dict, federation: Federation
) -> None:
    down, study, series, sop = _owner_of_some_study()
    stack = federation.stacks[down]
    url = f"/studies/{study}/series/{series}/instances/{sop}"
    stack.stop("retrieve")
    try:
        async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
            r = await http.get(url, headers={"Accept": ALL_TS})
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) > 0
    finally:
        stack.restart("retrieve")
    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
        r = await http.get(url, headers={"Accept": ALL_TS})
    assert r.status_code == 200


async def test_store_to_a_named_study_goes_to_its_owner_and_waits_while_it_is_locked(
    federation: Federation,
) -> None:
    """POST /studies/{study} streams to the owner; a study whose move is ending (locked
    in the registry, seen by the router's next poll) is 503 + Retry-After until released."""
    import asyncio

    from tessera.router.registry import Registry

    study = generate_uid()
    owner = place(study, SHARDS)
    body, ctype = multipart([make_instance(study, patient_id=PATIENT + "-L")])
    headers = {"Content-Type": ctype}
    registry = await Registry.connect(federation.router_dsn, migrate=False)
    try:
        await registry.pin([study], owner)
        await registry.set_locked(study, True)
        await asyncio.sleep(1.0)  # registry_poll is 0.2 s
        async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as http:
            r = await http.post(f"/studies/{study}", content=body, headers=headers)
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
            r = await http.post("/studies", content=body, headers=headers)
            assert r.status_code == 503
            await registry.set_locked(study, False)
            await registry.release(study)
            await asyncio.sleep(1.0)
            r = await http.post(f"/studies/{study}", content=body, headers=headers)
            assert r.status_code == 200, r.text
    finally:
        await registry.close()
    async with federation.shard_client(owner) as index:
        r = await index.get("/studies", params={"StudyInstanceUID": study})
    assert len(r.json()) == 1
