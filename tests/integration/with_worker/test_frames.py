"""WADO-RS Retrieve Frames (PS3.18 10.4; media types 8.7.3.3, Tables 8.7.3-4/5) with a real
transcode worker, Redis, PostgreSQL and object folder (see :mod:`.frames_setup`).

Every corpus file of TransferSyntaxes/ and Formats/ that ingest stores, and the
multi-frame ones: frames as stored decode to pydicom's pixels of that frame; frames
converted to Explicit VR Little Endian are pydicom's decoded bytes; a frame of a
multi-frame object is one ranged read of just that frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.encaps import generate_frames

from tessera.retrieve.negotiation import compressed_media_type
from tessera.shared.dicomfile import parse_instance
from tessera.shared.errors import InvalidInstance
from tessera.shared.frameindex import frame_range
from tessera.shared.settings import Settings
from tessera.shared.storage import open_store
from tessera.transcode import cache as transcode_cache
from tests.support.corpus import CORPUS, EVRLE, JPEG, PDF, parts, store_files
from tests.support.frames import (
    IGNORE_SETEX,
    decode_part,
    decoded,
    frame_count,
    frame_pixels,
    read,
    stored_slice,
    transfer_syntax_of,
)
from tests.support.retrieve import CountingStore, counting

pytestmark = IGNORE_SETEX
Client = httpx.AsyncClient

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OCTET = 'multipart/related; type="application/octet-stream"'
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE = CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.1.dcm"
CINE = CORPUS / "Issue16.dcm"  # 34 JPEG frames, one fragment each
LENA = CORPUS / "LenaTwiceWithFragments.dcm"  # 2 JPEG frames of 68 fragments
SEG = CORPUS / "DicomSeg.dcm"  # 96 frames of 1-bit pixels
WINDOWS = CORPUS / "MultiframeWindowing.dcm"  # 4 native frames of 2x2
UNDECODABLE = {"1.2.840.10008.1.2.4.51.dcm"}  # 12-bit JPEG Extended: no installed decoder


def _stored_ok(path: Path) -> bool:
    try:
        return parse_instance(io.BytesIO(path.read_bytes())).pixel_data is not None
    except InvalidInstance:
        return False


CORPUS_FILES = [
    p
    for folder in ("TransferSyntaxes", "Formats")
    for p in sorted((CORPUS / folder).glob("*.dcm"))
    if _stored_ok(p)
]


async def get_frame(client: Client, url: str, accept: str | None) -> tuple[str, bytes]:
    headers = {} if accept is None else {"Accept": accept}
    r = await client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    ((h, body),) = await parts(r)
    assert r.headers["content-type"].startswith("multipart/related")
    return h["content-type"], body


@pytest.mark.parametrize("path", [*CORPUS_FILES, CINE, LENA, SEG, WINDOWS], ids=lambda p: p.name)
async def test_corpus_frames(retrieve, path):
    """The first and last frames as stored (OHIF's Accept), and converted to Explicit VR
    Little Endian (octet-stream without transfer-syntax)."""
    app, client = retrieve
    (stored,) = await store_files(app, [path])
    ds = read(path)
    last = frame_count(ds)
    for k in sorted({1, last}):
        content_type, body = await get_frame(client, f"{stored.url}/frames/{k}", OHIF)
        ts = transfer_syntax_of(content_type)
        # a compressed frame is labelled with its own type (PS3.18 Table 8.7.3-5)
        own = compressed_media_type(ts) or "application/octet-stream"
        assert content_type == f"{own}; transfer-syntax={ts}"
        if stored.ts == DEFLATED:  # no range in a deflated stream: decoded by transcode
            assert (ts, body) == (EVRLE, decoded(ds, k))
        elif ts == stored.ts and not ds.file_meta.TransferSyntaxUID.is_encapsulated:
            assert body == stored_slice(ds, k)
        else:
            assert ts == stored.ts
            frames = generate_frames(ds.PixelData, number_of_frames=last)
            assert body == list(frames)[k - 1]
            if path.name not in UNDECODABLE:
                assert np.array_equal(decode_part(ds, ts, body), frame_pixels(ds, k))
    if path in (LENA, SEG, WINDOWS):  # native already, or covered by CINE
        return
    r = await client.get(f"{stored.url}/frames/{last}", headers={"Accept": OCTET})
    if path.name in UNDECODABLE:
        assert r.status_code == 406 and "JPEG Extended" in r.text, r.text
        return
    assert r.status_code == 200, r.text
    ((h, body),) = await parts(r)
    assert h["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert body == decoded(ds, last)


ACCEPT_FORMS = [
    (OHIF, "application/octet-stream"),
    (f"{OCTET}; transfer-syntax=*", "application/octet-stream"),
    (f'{OCTET}; transfer-syntax="*"', "application/octet-stream"),
    (None, "image/jpeg"),
    ("*/*", "image/jpeg"),
    ("multipart/*", "image/jpeg"),
    ("multipart/related", "image/jpeg"),
    ('multipart/related; type="image/jpeg"', "image/jpeg"),
    ("multipart/related; type=image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", "image/jpeg"),
    (f'{OCTET}; q=0.5, multipart/related; type="image/jpeg"; q=0.9', "image/jpeg"),
    # no JPEG XL encoder: the next range (image/jls would be encoded, since issue 4)
    (f'multipart/related; type="image/jxl", {OHIF}; q=0.2', "application/octet-stream"),
]


async def test_accept_forms_for_a_jpeg_frame(retrieve):
    app, client = retrieve
    (jpeg,) = await store_files(app, [JPEG])
    expected = list(generate_frames(read(JPEG).PixelData, number_of_frames=1))
    for accept, part_type in ACCEPT_FORMS:
        headers = {} if accept is None else {"Accept": accept}
        r = await client.get(f"{jpeg.url}/frames/1", headers=headers)
        assert r.status_code == 200, (accept, r.text)
        assert r.headers["content-type"].startswith(f'multipart/related; type="{part_type}"')
        ((h, body),) = await parts(r)
        # the part is labelled with its own type (Table 8.7.3-5) whatever the multipart type
        assert h["content-type"] == f"image/jpeg; transfer-syntax={jpeg.ts}"
        assert h["content-location"] == f"http://testserver/dicom-web{jpeg.url}/frames/1"
        assert [body] == expected


async def test_accept_query_parameter_and_refusals(retrieve):
    app, client = retrieve
    jpeg, native = await store_files(app, [JPEG, NATIVE])
    r = await client.get(f"{jpeg.url}/frames/1", params={"accept": OHIF})
    assert r.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.4.50" in r.text[:400]
    for url, accept, words in [
        # media types and syntaxes transcode has no encoder for (JPEG XL, JPEG 2000 Part 2)
        (jpeg.url, 'multipart/related; type="image/jxl"', ["image/jxl", jpeg.ts]),
        (native.url, 'multipart/related; type="image/jpx"', ["image/jpx", EVRLE]),
        (jpeg.url, f"{OCTET}; transfer-syntax=1.2.840.10008.1.2.4.92", [jpeg.ts]),
        (jpeg.url, "image/jpeg", ["multipart/related"]),
        (jpeg.url, "application/dicom+json", ["octet-stream"]),
    ]:
        r = await client.get(f"{url}/frames/1", headers={"Accept": accept})
        assert r.status_code == 406, (accept, r.text)
        assert all(w in r.text for w in words), r.text


async def test_frame_numbers(retrieve):
    app, client = retrieve
    cine, pdf = await store_files(app, [CINE, PDF])
    ds = read(CINE)
    r = await client.get(f"{cine.url}/frames/3,1,3", headers={"Accept": OHIF})
    assert r.status_code == 200
    got = await parts(r)
    # in the order asked, a repeat once (PS3.18 frame-list: non-duplicate frame numbers)
    assert [h["content-location"].rsplit("/", 1)[1] for h, _ in got] == ["3", "1"]
    frames = list(generate_frames(ds.PixelData, number_of_frames=34))
    assert [body for _, body in got] == [frames[2], frames[0]]
    for frames_list, status, words in [
        ("0", 404, ["frame 0", "34 frames"]),
        ("1,35", 404, ["frame 35", "34 frames"]),
        ("1,a", 400, ["frame list"]),
        ("1,,2", 400, ["frame list"]),
        ("-1", 400, ["frame list"]),
    ]:
        r = await client.get(f"{cine.url}/frames/{frames_list}", headers={"Accept": OHIF})
        assert r.status_code == status, (frames_list, r.text)
        assert all(w in r.text for w in words), r.text
    r = await client.get(f"{pdf.url}/frames/1")
    assert r.status_code == 404 and "no pixel data" in r.text
    r = await client.get(f"{cine.url[:-3]}999/frames/1")
    assert r.status_code == 404


@pytest.mark.parametrize(("path", "frame"), [(CINE, 20), (LENA, 2), (SEG, 50), (WINDOWS, 3)])
async def test_a_frame_is_one_ranged_read_of_that_frame(retrieve, path, frame):
    app, client = retrieve
    (stored,) = await store_files(app, [path])
    store = counting(app)
    _, body = await get_frame(client, f"{stored.url}/frames/{frame}", OHIF)
    ds = read(path)
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        expected = list(generate_frames(ds.PixelData, number_of_frames=frame_count(ds)))
        assert body == expected[frame - 1]
    else:
        assert body == stored_slice(ds, frame)
    ((key, start, length),) = store.reads  # one read, of a range: the frame's
    assert key.endswith(".dcm") and start > 0 and length is not None
    assert len(body) <= length <= len(body) + 8 * 68  # with item headers for LENA's 68
    assert store.bytes_read == length < len(stored.data) / 2


@pytest.mark.parametrize(("path", "frame"), [(CORPUS / "Issue164.dcm", 1), (LENA, 2)])
async def test_a_decoded_frame_reads_the_attributes_and_that_frame_only(
    retrieve, monkeypatch, path, frame
):
    """Transcode decodes a frame from two ranged reads (the bytes before Pixel Data, the
    frame's fragments) that retrieve locates from the index, never the whole object."""
    app, client = retrieve
    (stored,) = await store_files(app, [path])
    opened: list[CountingStore] = []

    def counting_store(settings: Settings) -> CountingStore:
        opened.append(CountingStore(open_store(settings)))
        return opened[-1]

    monkeypatch.setattr(transcode_cache, "open_store", counting_store)  # the worker's stores
    transcode_cache.close_loops()  # opened again, counting, by the next task
    r = await client.get(f"{stored.url}/frames/{frame}", headers={"Accept": OCTET})
    assert r.status_code == 200, r.text
    ((h, body),) = await parts(r)
    assert h["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert body == decoded(read(path), frame)  # pydicom's decoding of the whole object
    reads = [(start, length) for s in opened for key, start, length in s.reads]
    assert len(reads) == 2 and all(length is not None for _, length in reads)
    read_bytes = sum(s.bytes_read for s in opened)
    print(f"{path.name}: frame {frame} decoded from {read_bytes} of {len(stored.data)} bytes")
    pixel = parse_instance(io.BytesIO(stored.data)).pixel_data_json()
    assert pixel is not None
    where = frame_range(pixel, frame)
    assert where is not None
    assert read_bytes == pixel["offset"] + where.length  # attributes + that frame
    assert read_bytes < len(stored.data) * 1.1 / frame_count(read(path))


@pytest.mark.parametrize(
    "path", [CINE, LENA, CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.5.dcm"], ids=lambda p: p.name
)
async def test_compressed_pixel_data_asked_as_octet_stream_is_decoded_ps3_18_8_7_3_3(
    retrieve, path
):
    """Bulk data of compressed Pixel Data without ``transfer-syntax``: the decoded value
    (Explicit VR Little Endian), the frames' decoded bytes one after the other; with
    ``transfer-syntax=*`` the stored items, labelled with their own media type."""
    app, client = retrieve
    (stored,) = await store_files(app, [path])
    ds = read(path)
    url = f"{stored.url}/bulk/7FE00010"
    r = await client.get(url, headers={"Accept": OCTET})
    assert r.status_code == 200, r.text
    assert r.headers["accept-ranges"] == "none"
    ((h, body),) = await parts(r)
    assert h["content-type"] == f"application/octet-stream; transfer-syntax={EVRLE}"
    assert body == b"".join(decoded(ds, k) for k in range(1, frame_count(ds) + 1))
    r = await client.get(url, headers={"Accept": OCTET + "; transfer-syntax=*"})
    ((h, _),) = await parts(r)
    assert h["content-type"] == (f"{compressed_media_type(stored.ts)}; transfer-syntax={stored.ts}")
