"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3-4, rendering 8.3.5), with
a real transcode worker, Redis, PostgreSQL and object folder (see :mod:`.rendering_setup`).

Expected images come from the corpus where it has them (PNGs rendered by Orthanc, the
source of the corpus) and otherwise from the formulas of PS3.3 applied with pydicom.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.pixels import apply_color_lut, convert_color_space, pixel_array
from pydicom.uid import generate_uid

from tessera.shared.dicomjson import quiet_pydicom
from tests.support.corpus import CORPUS, FLAIR, PDF, by_number, parts, store_files
from tests.support.deep import nested
from tests.support.rendering import (
    IGNORE_SETEX,
    RenderCount,
    image_of,
    pixels_of,
    psnr,
    retrieve_settings,
    started,
)

pytestmark = IGNORE_SETEX

CT = CORPUS / "2020-08-12-Christopher.dcm"  # MONOCHROME2, rescale -1024, window 200/800
COLOR = CORPUS / "ColorTestMalaterre.dcm"  # RGB, Implicit VR
MLUT = CORPUS / "KarstenHilbertRF.dcm"  # Modality LUT Sequence
SIGNED = CORPUS / "SignedCT.dcm"
PALETTE = CORPUS / "Implicit-vr-us-palette.dcm"
YBR = CORPUS / "Issue19.dcm"  # YBR_FULL, native
YBR_JPEG = CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.4.50.dcm"  # YBR_FULL_422
MULTIFRAME = CORPUS / "MultiframeWindowing.dcm"  # 4 frames of 2x2, per-frame rescale
NO_PIXELS = CORPUS / "Issue22-NoPixelData.dcm"
PNG, JPEG = "image/png", "image/jpeg"


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> RenderCount:
    return RenderCount(monkeypatch)


async def get_image(client: httpx.AsyncClient, url: str, accept: str = PNG, **params: str):
    r = await client.get(url, headers={"Accept": accept}, params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == accept
    return r


async def test_color_image_equals_the_corpus_png(retrieve):
    app, client = retrieve
    (color,) = await store_files(app, [COLOR])
    r = await get_image(client, color.url + "/rendered")
    truth = pixels_of((CORPUS / "ColorTestMalaterre.png").read_bytes())
    assert np.array_equal(pixels_of(r.content), truth)


async def test_ct_with_its_own_window_matches_the_corpus_png(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    default = pixels_of((await get_image(client, ct.url + "/rendered")).content)
    truth = pixels_of((CORPUS / "2020-08-12-Christopher.png").read_bytes())
    assert default.shape == truth.shape == (512, 512)
    assert np.abs(default - truth).max() <= 1  # Orthanc truncates where we round
    assert psnr(default, truth) >= 40
    # the corpus PNG is the instance's own window, 200/800 linear (orthanc-tests
    # test_compare_wado_uri_and_rs), after its rescale
    asked = await get_image(client, ct.url + "/rendered", window="200,800,linear")
    assert np.array_equal(pixels_of(asked.content), default)


async def test_modality_lut_sequence_matches_the_corpus_png(retrieve):
    app, client = retrieve
    (rf,) = await store_files(app, [MLUT])
    r = await get_image(client, rf.url + "/rendered")
    truth = pixels_of((CORPUS / "Formats/KarstenHilbertRF.png").read_bytes())
    assert np.array_equal(pixels_of(r.content), truth)


async def test_jpeg_is_the_default_and_cacheable(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    r = await client.get(ct.url + "/rendered", headers={"Accept": "*/*"})
    assert r.status_code == 200 and r.headers["content-type"] == JPEG
    picture = image_of(r.content)
    assert (picture.format, picture.mode, picture.size) == ("JPEG", "L", (512, 512))
    assert r.headers["cache-control"] == "private, max-age=86400"
    # sent whole with its length, so the router reads it whole too (a retrieve killed
    # mid-answer is a 503 there, not a cut connection)
    assert int(r.headers["content-length"]) == len(r.content)
    again = await client.get(
        ct.url + "/rendered", headers={"Accept": JPEG, "If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304 and not again.content
    png = await get_image(client, ct.url + "/rendered")
    assert png.headers["etag"] != r.headers["etag"]


def ct_as_monochrome1(folder: Path) -> Path:
    with quiet_pydicom():
        ds = dcmread(CT)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / "mono1.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


async def test_monochrome1_is_inverted(retrieve, tmp_path):
    app, client = retrieve
    ct, mono1 = await store_files(app, [CT, ct_as_monochrome1(tmp_path)])
    normal = pixels_of((await get_image(client, ct.url + "/rendered")).content)
    inverted = pixels_of((await get_image(client, mono1.url + "/rendered")).content)
    assert np.array_equal(inverted, 255 - normal)


def linear(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 onto 0..255."""
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    return np.clip(np.where(x <= c - 0.5 - (w - 1) / 2, 0, y), 0, 255)


async def test_signed_ct_is_rescaled_then_windowed(retrieve):
    app, client = retrieve
    (ct,) = await store_files(app, [SIGNED])
    with quiet_pydicom():
        ds = dcmread(SIGNED)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert ds.pixel_array.min() < 0  # signed stored values
    expected = np.rint(linear(hu, float(ds.WindowCenter), float(ds.WindowWidth)))
    got = pixels_of((await get_image(client, ct.url + "/rendered")).content)
    assert np.abs(got - expected).max() <= 1


async def test_palette_color_goes_through_its_palette(retrieve):
    app, client = retrieve
    (palette,) = await store_files(app, [PALETTE])
    with quiet_pydicom():
        ds = dcmread(PALETTE)
        rgb = apply_color_lut(ds.pixel_array, ds)  # 16-bit entries
    expected = np.rint(rgb / 257.0)
    got = pixels_of((await get_image(client, palette.url + "/rendered")).content)
    assert got.shape == (600, 800, 3)
    assert np.abs(got - expected).max() <= 1


async def test_ybr_is_converted_to_rgb(retrieve):
    app, client = retrieve
    ybr, jpeg = await store_files(app, [YBR, YBR_JPEG])
    with quiet_pydicom():
        expected = convert_color_space(pixel_array(YBR, raw=True), "YBR_FULL", "RGB")
        decoded = pixel_array(YBR_JPEG)  # the JPEG decoder's own YCbCr -> RGB
    got = pixels_of((await get_image(client, ybr.url + "/rendered")).content)
    assert np.abs(got - expected).max() <= 1
    got = pixels_of((await get_image(client, jpeg.url + "/rendered")).content)
    assert got.shape == decoded.shape and np.abs(got - decoded).max() <= 1


async def test_frames_of_a_multiframe_instance(retrieve):
    app, client = retrieve
    (mf,) = await store_files(app, [MULTIFRAME])
    # per-frame rescale (PS3.3 C.7.6.16.2.9): frame 2 adds 100, frame 3 doubles
    for frame, stored_to_value in ((1, lambda v: v), (2, lambda v: v + 100), (3, lambda v: 2 * v)):
        r = await get_image(client, mf.url + f"/frames/{frame}/rendered", window="127,256,linear")
        values = stored_to_value(np.array([[0, 16], [32, 48]], dtype=np.float64))
        assert np.abs(pixels_of(r.content) - linear(values, 127, 256)).max() <= 1
    r = await client.get(mf.url + "/frames/1,3/rendered", headers={"Accept": PNG})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith('multipart/related; type="image/png"')
    got = await parts(r)
    assert [h["content-location"] for h, _ in got] == [
        f"http://testserver/dicom-web{mf.url}/frames/{n}/rendered" for n in (1, 3)
    ]
    assert all(image_of(body).size == (2, 2) for _, body in got)
    assert (await client.get(mf.url + "/frames/5/rendered")).status_code == 404
    assert (await client.get(mf.url + "/frames/0/rendered")).status_code == 400


async def test_series_and_study_rendered_are_multipart(retrieve):
    app, client = retrieve
    flair = by_number(await store_files(app, FLAIR))
    series = f"/studies/{flair[0].study}/series/{flair[0].series}"
    for url in (series + "/rendered", f"/studies/{flair[0].study}/rendered"):
        r = await client.get(url)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith('multipart/related; type="image/jpeg"')
        got = await parts(r)
        assert [h["content-location"] for h, _ in got] == [
            f"http://testserver/dicom-web{f.url}/rendered" for f in flair
        ]
        assert all(image_of(body).format == "JPEG" for _, body in got)


async def test_thumbnails(retrieve):
    app, client = retrieve
    flair = by_number(await store_files(app, FLAIR))  # 288 x 288, 3 instances
    series = f"/studies/{flair[0].study}/series/{flair[0].series}"
    thumb = await client.get(series + "/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == JPEG
    assert image_of(thumb.content).size == (128, 128)
    middle = await client.get(flair[1].url + "/thumbnail")  # the representative instance
    assert middle.content == thumb.content
    study = await client.get(f"/studies/{flair[0].study}/thumbnail")
    assert study.content == thumb.content
    small = await get_image(client, series + "/thumbnail", viewport="64,32")
    assert image_of(small.content).size == (32, 32)  # fits, aspect kept


async def test_pdf_is_returned_as_pdf(retrieve):
    app, client = retrieve
    (pdf,) = await store_files(app, [PDF])
    with quiet_pydicom():
        document = bytes(dcmread(PDF).EncapsulatedDocument)
    for accept in ("application/pdf", "*/*"):
        r = await client.get(pdf.url + "/rendered", headers={"Accept": accept})
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
        assert r.content.startswith(b"%PDF") and document.startswith(r.content)
    r = await client.get(pdf.url + "/rendered", headers={"Accept": JPEG})
    assert r.status_code == 406 and "application/pdf" in r.text
    assert (await client.get(pdf.url + "/thumbnail")).status_code == 406


async def test_errors(retrieve):
    app, client = retrieve
    ct, empty = await store_files(app, [CT, NO_PIXELS])
    r = await client.get(empty.url + "/rendered")
    assert r.status_code == 406 and "non-image" in r.text
    r = await client.get(ct.url + "/rendered", headers={"Accept": "image/webp"})
    assert r.status_code == 406 and "image/jpeg" in r.text
    missing = ct.url.rsplit("/", 1)[0] + "/1.2.3.4"
    assert (await client.get(missing + "/rendered")).status_code == 404
    assert (await client.get(f"/studies/{ct.study}/series/1.2.3/thumbnail")).status_code == 404
    for query in ("window=1,2", "viewport=0,10", "quality=101", "window=40,400,gamma"):
        r = await client.get(ct.url + "/rendered?" + query)
        assert r.status_code == 400, query


async def test_a_rendering_is_made_once_then_served_from_storage(
    retrieve, renders, database, worker
):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    first = await get_image(client, ct.url + "/rendered", viewport="100,100", quality="50")
    assert renders.calls == 1
    again = await client.get(
        ct.url + "/rendered",
        params={"quality": "50", "viewport": "100,100"},
        headers={"Accept": PNG},
    )
    assert again.content == first.content and renders.calls == 1
    # a retrieve that reaches no worker at all still answers, from storage alone
    offline = retrieve_settings(
        database, worker, redis_url="redis://127.0.0.1:9/0", transcode_timeout=1.0
    )
    async for _, other in started(offline):
        r = await get_image(other, ct.url + "/rendered", viewport="100,100", quality="50")
        assert r.content == first.content
        r = await other.get(ct.url + "/rendered", params={"window": "1,1234,linear"})
        assert r.status_code == 503  # not made yet


async def test_identical_concurrent_requests_render_once(retrieve, renders, database, worker):
    app, client = retrieve
    (ct,) = await store_files(app, [CT])
    async for _, other in started(retrieve_settings(database, worker)):  # another process
        asked = [
            c.get(ct.url + "/rendered", params={"window": "40,400,sigmoid"})
            for c in (client, other) * 3
        ]
        answers = await asyncio.gather(*asked)
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert renders.calls == 1


async def test_deeply_nested_sequences_render_and_past_the_limit_say_why(
    retrieve, tmp_path: Path
) -> None:
    """Issue 15: a data set nested deep enough to pass ingest but not the decoder under
    the worker's deeper stack answered 500. The worker decodes what ingest accepts; and
    what it cannot decode (the recursion limit lowered here to force it) is a 406 that
    says why, not a 500."""
    app, client = retrieve
    path = tmp_path / "deep.dcm"
    path.write_bytes(nested(150))
    (deep,) = await store_files(app, [path])
    assert (await client.get(f"{deep.url}/metadata")).status_code == 200
    r = await client.get(f"{deep.url}/rendered", headers={"Accept": PNG})
    assert r.status_code == 200, r.text
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(450)
    try:
        r = await client.get(f"{deep.url}/frames/1/rendered", headers={"Accept": JPEG})
    finally:
        sys.setrecursionlimit(limit)
    assert r.status_code == 406, (r.status_code, r.text[:200])
    assert "nested too deeply" in r.text


@pytest.fixture
def lane_jobs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The storage keys the render lane's threads answered for (tessera.transcode.lane)."""
    from tessera.transcode import lane

    answered: list[str] = []
    original = lane.answer

    def counting(settings, job, reply):  # type: ignore[no-untyped-def]
        answered.append(job.request.storage_key)
        return original(settings, job, reply)

    monkeypatch.setattr(lane, "answer", counting)
    return answered


async def test_a_first_rendering_of_an_uncompressed_image_takes_the_lane_not_celery(
    retrieve, renders, lane_jobs
):
    """Issue 12 (tessera.shared.transcode.lane): no Celery round trip for a native image;
    a compressed one (a decoder runs) is a Celery task, as every conversion is."""
    app, client = retrieve
    ct, ybr_jpeg = await store_files(app, [CT, YBR_JPEG])
    first = await get_image(client, ct.url + "/rendered", window="40,401,linear")
    assert len(lane_jobs) == 1 and renders.calls == 1
    # the lane answered the rendering itself and stored it after: asked again, it is
    # the same bytes, not rendered again
    again = await get_image(client, ct.url + "/rendered", window="40,401,linear")
    assert again.content == first.content and renders.calls == 1
    # a multipart answer takes the same way
    laned = len(lane_jobs)
    r = await client.get(
        ct.url + "/rendered",
        headers={"Accept": f'multipart/related; type="{PNG}"'},
        params={"window": "40,403,linear"},
    )
    assert r.status_code == 200, r.text
    assert renders.calls == 2 and len(lane_jobs) == laned + 1
    assert r.content.count(b"\x89PNG") == 1
    await get_image(client, ybr_jpeg.url + "/rendered", viewport="61,61")
    assert renders.calls == 3 and len(lane_jobs) == laned + 1  # compressed: through Celery
    # the lane's answers for what cannot be rendered are the Celery path's
    r = await client.get(ct.url + "/frames/2/rendered")
    assert r.status_code == 404  # one frame only: refused before transcode is asked


async def test_without_the_lane_the_same_rendering_goes_through_celery(
    database, worker, renders, lane_jobs
):
    async for app, client in started(retrieve_settings(database, worker, transcode_lane=False)):
        (ct,) = await store_files(app, [CT])
        r = await get_image(client, ct.url + "/rendered", window="40,402,linear")
        assert image_of(r.content).size == (512, 512)
    assert lane_jobs == [] and renders.calls == 1
