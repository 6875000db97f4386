"""WADO-URI (PS3.18 9): Retrieve DICOM Instance and Retrieve Rendered Instance, with a real
transcode worker, Redis, PostgreSQL and object folder; and ``/wado`` through the router."""

from __future__ import annotations

import io

import httpx
import numpy as np
from pydicom import dcmread

from tessera.router.app import create_app as create_router
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.settings import Settings
from tests.support.corpus import (
    CORPUS,
    EVRLE,
    IMPLICIT,
    JPEG,
    PDF,
    Stored,
    store_files,
)
from tests.support.rendering import (
    IGNORE_SETEX,
    image_of,
    pixels_of,
)
from tests.support.serving import serving

pytestmark = IGNORE_SETEX

CT = CORPUS / "2020-08-12-Christopher.dcm"
MULTIFRAME = CORPUS / "MultiframeWindowing.dcm"
JPX = "1.2.840.10008.1.2.4.92"


def wado(stored: Stored, **params: str) -> dict[str, str]:
    return {
        "requestType": "WADO",
        "studyUID": stored.study,
        "seriesUID": stored.series,
        "objectUID": stored.sop,
        **params,
    }


def read(data: bytes):
    with quiet_pydicom():
        return dcmread(io.BytesIO(data))


async def test_dicom_as_stored_when_the_transfer_syntax_matches(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])  # Explicit VR Little Endian
    for params in (wado(ct, contentType="application/dicom"), wado(ct, transferSyntax=EVRLE)):
        r = await client.get("/wado", params=params, headers={"Accept": "application/dicom"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        assert r.content == ct.data


async def test_dicom_defaults_to_explicit_vr_little_endian(retrieve):
    app, client = retrieve
    implicit, jpeg = await store_files(app, [IMPLICIT, JPEG])
    for stored in (implicit, jpeg):
        r = await client.get("/wado", params=wado(stored, contentType="application/dicom"))
        assert r.status_code == 200
        ds = read(r.content)
        assert ds.file_meta.TransferSyntaxUID == EVRLE  # PS3.18 9.4.2.4
        assert ds.SOPInstanceUID == stored.sop
        assert np.array_equal(ds.pixel_array, read(stored.data).pixel_array)
    asked = wado(jpeg, contentType="application/dicom", transferSyntax=jpeg.ts)
    r = await client.get("/wado", params=asked)
    assert r.content == jpeg.data


async def test_dicom_errors(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    dicom = {"contentType": "application/dicom"}
    # JPEG 2000 Part 2: no encoder (transcode makes .90/.91 since issue 4)
    r = await client.get("/wado", params=wado(ct, **dicom, transferSyntax=JPX))
    assert r.status_code == 406 and EVRLE in r.text
    r = await client.get("/wado", params=wado(ct, **dicom, transferSyntax="JPEG"))
    assert r.status_code == 400
    r = await client.get("/wado", params=wado(ct, **dicom, anonymize="yes"))
    assert r.status_code == 400 and "anonymize" in r.text


async def test_an_image_defaults_to_jpeg(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    for accept in (None, "*/*"):
        headers = {"Accept": accept} if accept else {}
        r = await client.get("/wado", params=wado(ct), headers=headers)
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        picture = image_of(r.content)
        assert (picture.format, picture.size) == ("JPEG", (512, 512))
    r = await client.get("/wado", params=wado(ct, contentType="image/jpg"))
    assert r.headers["content-type"] == "image/jpeg"


async def test_png_matches_the_corpus_and_wado_rs(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    r = await client.get("/wado", params=wado(ct, contentType="image/png"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    truth = pixels_of((CORPUS / "2020-08-12-Christopher.png").read_bytes())
    assert np.abs(pixels_of(r.content) - truth).max() <= 1
    rs = await client.get(ct.url + "/rendered", headers={"Accept": "image/png"})
    assert rs.content == r.content  # the same rendering, so the same cached object
    windowed = wado(ct, contentType="image/png", windowCenter="200", windowWidth="800")
    assert (await client.get("/wado", params=windowed)).content == r.content


async def test_size_region_and_quality(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    png = {"contentType": "image/png"}
    full = pixels_of((await client.get("/wado", params=wado(ct, **png))).content)
    r = await client.get("/wado", params=wado(ct, **png, rows="100", columns="50"))
    assert image_of(r.content).size == (50, 50)  # fits both, aspect kept
    r = await client.get("/wado", params=wado(ct, **png, region="0.5,0,1,0.25"))
    assert np.array_equal(pixels_of(r.content), full[:128, 256:])
    low = await client.get("/wado", params=wado(ct, imageQuality="10"))
    high = await client.get("/wado", params=wado(ct, imageQuality="95"))
    assert len(low.content) < len(high.content)


async def test_frame_number(retrieve):
    app, client = retrieve
    mf, ct = await store_files(app, [MULTIFRAME, CT])
    png = {"contentType": "image/png", "windowCenter": "127", "windowWidth": "256"}
    r = await client.get("/wado", params=wado(mf, **png, frameNumber="2"))
    assert r.status_code == 200
    assert pixels_of(r.content).tolist() == [[101, 117], [133, 149]]  # rescale +100
    for bad in (wado(mf, frameNumber="5"), wado(mf, frameNumber="x"), wado(ct, frameNumber="1")):
        assert (await client.get("/wado", params=bad)).status_code == 400  # PS3.18 9.5.2.1


async def test_pdf_and_request_errors(retrieve):
    app, client = retrieve
    ct, pdf = await store_files(app, [CT, PDF])
    r = await client.get("/wado", params=wado(pdf))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    r = await client.get("/wado", params=wado(pdf, contentType="image/jpeg"))
    assert r.status_code == 406
    for params in (
        {k: v for k, v in wado(ct).items() if k != "requestType"},
        wado(ct, requestType="WADO-RS"),
        {k: v for k, v in wado(ct).items() if k != "objectUID"},
        wado(ct, objectUID="not-a-uid"),
        wado(ct, windowCenter="40"),  # without windowWidth
        wado(ct, region="0,0,2,2"),
        wado(ct, rows="0"),
    ):
        assert (await client.get("/wado", params=params)).status_code == 400, params
    r = await client.get("/wado", params=wado(ct, objectUID="1.2.3.4"))
    assert r.status_code == 404


async def test_through_the_router(retrieve):
    app, _ = retrieve
    (ct,) = await store_files(app, [CT])
    async with serving(app, lifespan="off") as retrieve_url:  # the router connects over TCP
        router = create_router(Settings(retrieve_url=retrieve_url))
        async with (
            router.router.lifespan_context(router),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=router), base_url="http://router"
            ) as client,
        ):
            r = await client.get(
                "/dicom-web/wado", params=wado(ct, contentType="application/dicom")
            )
            assert r.status_code == 200 and r.content == ct.data
            missing = {k: v for k, v in wado(ct).items() if k != "studyUID"}
            assert (await client.get("/dicom-web/wado", params=missing)).status_code == 400
