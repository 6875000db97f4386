"""WADO-RS retrieve (PS3.18 10.4) against a real PostgreSQL and a local object folder.

Real files from the corpus are stored under their content keys and indexed with the
index writer; requests go through httpx's ASGI transport; multipart responses are read
back with the shared multipart reader.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom import dcmread
from starlette.applications import Starlette

from tessera.retrieve.context import Context
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.storage import LocalStore
from tests.support.corpus import (
    EPI,
    EVRLE,
    FLAIR,
    FRAGMENTS,
    IMPLICIT,
    J2K,
    JPEG,
    OVERLAY,
    PDF,
    Stored,
    by_number,
    parts,
    store_files,
)

ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@pytest.fixture
async def brainix(app: Starlette) -> list[Stored]:
    return await store_files(app, FLAIR + EPI)


# --- instances ------------------------------------------------------------------------------


async def test_instance_is_returned_byte_for_byte(client, brainix):
    inst = brainix[0]
    r = await client.get(inst.url, headers={"Accept": ANY_TS})
    assert r.status_code == 200, r.text
    ctype = r.headers["content-type"]
    assert ctype.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = ctype.rsplit("boundary=", 1)[1].encode()
    body = r.content
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    head = body[: body.index(b"\r\n\r\n") + 4]
    assert b"\n" not in head.replace(b"\r\n", b"")  # CRLF only
    ((headers, data),) = await parts(r)
    assert data == inst.data
    assert headers["content-type"] == f"application/dicom; transfer-syntax={EVRLE}"
    assert headers["content-location"] == "http://testserver/dicom-web" + inst.url


async def test_series_in_instance_number_order(client, brainix):
    flair = brainix[:3]
    r = await client.get(f"/studies/{flair[0].study}/series/{flair[0].series}")
    assert r.status_code == 200, r.text
    got = await parts(r)
    assert [data for _, data in got] == [s.data for s in by_number(flair)]
    assert all(h["content-type"].endswith(f"transfer-syntax={EVRLE}") for h, _ in got)


async def test_study_orders_series_then_instances(client, brainix):
    r = await client.get(f"/studies/{brainix[0].study}", headers={"Accept": ANY_TS})
    assert r.status_code == 200, r.text
    expected = by_number(brainix[:3]) + by_number(brainix[3:])  # series 401, then 501
    got = await parts(r)
    assert [data for _, data in got] == [s.data for s in expected]
    assert [h["content-location"].rsplit("/", 1)[1] for h, _ in got] == [s.sop for s in expected]


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "multipart/*",
        "multipart/related",
        'multipart/related; type="application/dicom"',  # absent: Explicit VR LE requested
        "multipart/related; type=application/dicom",  # unquoted, as OHIF sends it
        f"multipart/related; type=application/dicom; transfer-syntax={EVRLE}",
        'multipart/related;type="application/dicom";transfer-syntax=*',
        f"application/dicom+json, {ANY_TS}; q=0.5",
        'application/dicom, multipart/related; type="application/dicom"; q=0.2',
        # JPEG 2000 Part 2 preferred, but there is no encoder for it: as stored
        f'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.92,'
        f" {ANY_TS}; q=0.9",
    ],
)
async def test_accept_variants(client, brainix, accept):
    headers = {} if accept is None else {"Accept": accept}
    r = await client.get(brainix[0].url, headers=headers)
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    assert data == brainix[0].data
    assert h["content-type"] == f"application/dicom; transfer-syntax={EVRLE}"


async def test_accept_query_parameter_replaces_header(client, brainix):
    r = await client.get(
        brainix[0].url, params={"accept": ANY_TS}, headers={"Accept": "application/dicom+json"}
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("accept", "reason"),
    [
        ("application/dicom", "multipart/related"),
        ("application/dicom+json", "transfer-syntax=*"),
        ("image/jpeg", "transfer-syntax=*"),
        (  # JPEG 2000 Part 2: transcode has no encoder for it
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.92',
            f"1.2.840.10008.1.2.4.92; the instance is stored as {EVRLE}",
        ),
        ('multipart/related; type="application/octet-stream"', "transfer-syntax=*"),
        (f"*/*, {ANY_TS}; q=0", f"stored as {EVRLE}"),
        ("*/*; q=0", "allows no representation"),
    ],
)
async def test_unacceptable_accept_is_406_with_reason(client, brainix, accept, reason):
    r = await client.get(brainix[0].url, headers={"Accept": accept})
    assert r.status_code == 406
    assert reason in r.text


async def test_compressed_instance_as_stored_or_406(client, app):
    (jpeg,) = await store_files(app, [JPEG])
    r = await client.get(jpeg.url, headers={"Accept": ANY_TS})
    assert r.status_code == 200
    ((h, data),) = await parts(r)
    assert data == jpeg.data
    assert h["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"
    # JPEG 2000 Part 2: no encoder (JPEG 2000 .90/.91 are made since issue 4)
    asked = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.92'
    r = await client.get(jpeg.url, headers={"Accept": asked})
    assert r.status_code == 406
    assert "1.2.840.10008.1.2.4.92" in r.text and "1.2.840.10008.1.2.4.50" in r.text


async def test_implicit_vr_file_without_meta_as_stored(client, app):
    (implicit,) = await store_files(app, [IMPLICIT])
    r = await client.get(implicit.url, headers={"Accept": "*/*"})
    ((h, data),) = await parts(r)
    assert data == implicit.data
    assert h["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2"


# --- 404 / 400 ------------------------------------------------------------------------------


async def test_not_found_names_the_missing_level(client, app, brainix):
    (other,) = await store_files(app, [JPEG])  # another study
    s = brainix[0]
    cases = {
        "/studies/1.2.3": "study 1.2.3 not found",
        f"/studies/{s.study}/series/1.2.3": f"series 1.2.3 not found in study {s.study}",
        f"/studies/{s.study}/series/{other.series}": f"series {other.series} not found",
        f"/studies/{s.study}/series/{s.series}/instances/1.2.3": "instance 1.2.3 not found",
        f"/studies/{s.study}/series/{s.series}/instances/{brainix[3].sop}": "not found",
        f"/studies/{other.study}/series/{s.series}/metadata": f"series {s.series} not found",
        "/studies/1.2.3/metadata": "study 1.2.3 not found",
    }
    for url, reason in cases.items():
        r = await client.get(url)
        assert r.status_code == 404, url
        assert reason in r.text, (url, r.text)


async def test_malformed_uid_is_400(client):
    r = await client.get("/studies/1.2.abc")
    assert r.status_code == 400


# --- metadata -------------------------------------------------------------------------------


async def stored_metadata(app: Starlette, study: str) -> list[str]:
    ctx: Context = app.state.retrieve
    rows = await ctx.pool.fetch(
        """SELECT i.metadata FROM instance i JOIN series se ON se.pk = i.series_pk
           JOIN study st ON st.pk = se.study_pk WHERE st.study_instance_uid = $1
           ORDER BY se.series_number::int, i.instance_number_int""",
        study,
    )
    return [r[0] for r in rows]


async def test_study_metadata_is_the_stored_json_with_absolute_bulkdata_uris(client, app, brainix):
    study = brainix[0].study
    r = await client.get(f"/studies/{study}/metadata")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    texts = await stored_metadata(app, study)
    base = "http://testserver/dicom-web"
    expected = "[" + ",".join(
        t.replace('"BulkDataURI":"/', f'"BulkDataURI":"{base}/') for t in texts
    )
    assert r.content == (expected + "]").encode()
    docs = r.json()
    assert [d["00080018"]["Value"][0] for d in docs] == [
        s.sop for s in by_number(brainix[:3]) + by_number(brainix[3:])
    ]
    inst = by_number(brainix[:3])[0]
    assert docs[0]["7FE00010"]["BulkDataURI"] == f"{base}{inst.url}/bulk/7FE00010"


@pytest.mark.parametrize(
    ("headers", "base"),
    [
        (
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "pacs.example.org",
                "X-Forwarded-Prefix": "/dw",
            },
            "https://pacs.example.org/dw",
        ),
        ({"Forwarded": 'for=10.0.0.1;proto=https;host="viewer.example:8443"'}, None),
    ],
)
async def test_metadata_honours_forwarded_headers(client, brainix, headers, base):
    base = base or "https://viewer.example:8443/dicom-web"
    s = brainix[0]
    r = await client.get(s.url + "/metadata", headers=headers)
    assert r.status_code == 200, r.text
    (doc,) = r.json()
    assert doc["7FE00010"]["BulkDataURI"] == f"{base}{s.url}/bulk/7FE00010"


async def test_series_metadata(client, brainix):
    s = brainix[3]
    r = await client.get(f"/studies/{s.study}/series/{s.series}/metadata")
    assert [d["00080018"]["Value"][0] for d in r.json()] == [x.sop for x in by_number(brainix[3:])]


@pytest.mark.parametrize(
    ("accept", "status", "ctype"),
    [
        ("application/dicom+json", 200, "application/dicom+json"),
        ("application/json", 200, "application/json"),
        ("application/*", 200, "application/dicom+json"),
        ("text/html, */*;q=0.1", 200, "application/dicom+json"),
        ('multipart/related; type="application/dicom+xml"', 406, "not supported"),
        ("application/dicom+xml", 406, "not supported"),
        ("application/dicom", 406, "application/dicom+json only"),
        ("*/*, application/dicom+json; q=0", 406, "application/dicom+json only"),
    ],
)
async def test_metadata_accept(client, brainix, accept, status, ctype):
    r = await client.get(brainix[0].url + "/metadata", headers={"Accept": accept})
    assert r.status_code == status
    if status == 200:
        assert r.headers["content-type"] == ctype
    else:
        assert ctype in r.text


# --- bulk data ------------------------------------------------------------------------------


async def test_pixel_data_bulk_is_the_stored_value(client, brainix):
    s = brainix[0]
    with quiet_pydicom():
        pixels = dcmread(io.BytesIO(s.data)).PixelData
    r = await client.get(s.url + "/bulk/7FE00010")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"; boundary='
    )
    ((h, data),) = await parts(r)
    assert data == pixels
    assert h["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert h["content-location"] == f"http://testserver/dicom-web{s.url}/bulk/7FE00010"


@pytest.mark.parametrize("path", [JPEG, FRAGMENTS])
async def test_encapsulated_pixel_data_bulk(client, app, path):
    (s,) = await store_files(app, [path])
    url = s.url + "/bulk/7FE00010"
    octets = "multipart/related; type=application/octet-stream"
    r = await client.get(url, headers={"Accept": octets + "; transfer-syntax=*"})
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    # as stored: labelled with its own media type (PS3.18 Table 8.7.3-5)
    assert h["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    with quiet_pydicom():
        value = dcmread(io.BytesIO(s.data)).PixelData  # the items, without the delimiter
    assert data == value


@pytest.mark.parametrize(
    ("path", "tag"),
    [(PDF, "00420011"), (OVERLAY, "60003000"), (J2K, "00431029")],
)
async def test_other_bulk_values_read_with_pydicom(client, app, path, tag):
    (s,) = await store_files(app, [path])
    r = await client.get(s.url + "/metadata")
    (doc,) = r.json()
    uri = doc[tag]["BulkDataURI"]
    r = await client.get(uri.removeprefix("http://testserver/dicom-web"))
    assert r.status_code == 200, r.text
    ((h, data),) = await parts(r)
    with quiet_pydicom():
        expected = dcmread(io.BytesIO(s.data), force=True)[int(tag, 16)].value
    assert data == expected
    assert h["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"


async def test_bulk_unknown_tag_is_404(client, brainix):
    r = await client.get(brainix[0].url + "/bulk/00420011")
    assert r.status_code == 404
    r = await client.get(brainix[0].url + "/bulk/not-a-tag")
    assert r.status_code == 404


# --- probes and streaming -------------------------------------------------------------------


async def test_readiness_checks_database_and_storage(client):
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "database": "ok", "storage": "ok"}


class CountingStore(LocalStore):
    """A real local store that counts the streams it has opened and has open."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened = self.open_streams = 0

    async def stream(self, key, start=0, length=None, chunk_size=64 * 1024):
        self.opened += 1
        self.open_streams += 1
        try:
            async for block in super().stream(key, start, length, chunk_size):
                yield block
        finally:
            self.open_streams -= 1


async def test_client_disconnect_closes_storage_streams(app, brainix, tmp_path):
    ctx: Context = app.state.retrieve
    store = CountingStore(tmp_path / "objects")
    app.state.retrieve = replace(ctx, store=store)
    sent: list[dict] = []
    gone = asyncio.Event()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if len(sent) == 3:  # start, first part's head, first chunk: the client goes away
            gone.set()
            await asyncio.sleep(0.2)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/studies/{brainix[0].study}",
        "raw_path": f"/studies/{brainix[0].study}".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "state": {},
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert sent[-1].get("more_body", True)  # the body was cut short
    assert 1 < store.opened < len(brainix)  # the first part and some look-ahead
    assert store.open_streams == 0
