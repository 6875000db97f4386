"""HTTP Range on WADO-RS bulk data (RFC 9110 14; PS3.18 2016b 6.5.5.2.1: "the server shall
return only the specified bytes of the bulk data object") against a real PostgreSQL and a
local object folder: ranges count bytes of the value, the multipart/related wrapping
stays, and only the asked bytes are read from storage.
"""

from __future__ import annotations

import dataclasses
import io

import httpx
import pytest
from pydicom import dcmread

from tessera.index.writer import index_instances
from tessera.retrieve.context import Context
from tessera.shared.dicomjson import quiet_pydicom
from tests.support.corpus import (
    FLAIR,
    FRAGMENTS,
    JPEG,
    PDF,
    Stored,
    describe,
    parts,
    store_files,
)
from tests.support.retrieve import counting

ANY_TS = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def pixel_value(s: Stored) -> bytes:
    with quiet_pydicom():
        return bytes(dcmread(io.BytesIO(s.data)).PixelData)


async def get(client: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    return await client.get(url, headers={"Accept": ANY_TS, **headers})


async def test_native_pixel_data_single_range_reads_only_those_bytes(client, app):
    (s,) = await store_files(app, FLAIR[:1])
    value = pixel_value(s)
    url = s.url + "/bulk/7FE00010"
    whole = await get(client, url)
    assert whole.status_code == 200, whole.text
    assert whole.headers["accept-ranges"] == "bytes"
    etag = whole.headers["etag"]
    assert etag.startswith('"') and "private" in whole.headers["cache-control"]
    ((h, body),) = await parts(whole)
    assert body == value and "content-range" not in h

    store = counting(app)
    n = len(value)
    for field, (a, b) in [
        ("bytes=10-19", (10, 19)),
        ("bytes=100-", (100, n - 1)),
        ("bytes=-16", (n - 16, n - 1)),
        (f"bytes={n - 5}-{n + 1000}", (n - 5, n - 1)),  # last-pos clipped to the end
    ]:
        store.reads.clear()
        store.bytes_read = 0
        r = await get(client, url, Range=field)
        assert r.status_code == 206, (field, r.text)
        assert r.headers["content-range"] == f"bytes {a}-{b}/{n}"
        assert r.headers["content-type"].startswith(
            'multipart/related; type="application/octet-stream"'
        )
        assert (r.headers["etag"], r.headers["accept-ranges"]) == (etag, "bytes")
        ((h, body),) = await parts(r)
        assert body == value[a : b + 1]
        assert h["content-range"] == f"bytes {a}-{b}/{n}"
        assert h["content-location"] == f"http://testserver/dicom-web{url}"
        ((_key, _start, length),) = store.reads  # one ranged read of just those bytes
        assert length == b - a + 1 == store.bytes_read < len(s.data)


async def test_several_ranges_are_parts_in_order(client, app):
    (s,) = await store_files(app, FLAIR[:1])
    value = pixel_value(s)
    n = len(value)
    r = await get(client, s.url + "/bulk/7FE00010", Range="bytes=1000-1099, 0-9")
    assert r.status_code == 206, r.text
    assert "content-range" not in r.headers  # each part has its own
    got = await parts(r)
    assert [h["content-range"] for h, _ in got] == [f"bytes 1000-1099/{n}", f"bytes 0-9/{n}"]
    assert [body for _, body in got] == [value[1000:1100], value[0:10]]
    # overlapping ranges are coalesced (RFC 9110 14.2)
    r = await get(client, s.url + "/bulk/7FE00010", Range="bytes=50-99,0-59")
    ((h, body),) = await parts(r)
    assert (r.status_code, h["content-range"], body) == (206, f"bytes 0-99/{n}", value[:100])


async def test_unsatisfiable_malformed_and_if_range(client, app):
    (s,) = await store_files(app, FLAIR[:1])
    value = pixel_value(s)
    n = len(value)
    url = s.url + "/bulk/7FE00010"
    r = await get(client, url, Range=f"bytes={n}-")
    assert r.status_code == 416, r.text
    assert r.headers["content-range"] == f"bytes */{n}"
    assert str(n) in r.text
    for malformed in ["bytes=20-10", "bytes=x-1", "pages=1-2", "bytes="]:
        r = await get(client, url, Range=malformed)
        assert r.status_code == 200, malformed
        assert [b for _, b in await parts(r)] == [value]
    etag = r.headers["etag"]
    r = await get(client, url, Range="bytes=0-3", **{"If-Range": etag})
    assert r.status_code == 206 and [b for _, b in await parts(r)] == [value[:4]]
    for stale in ['"stale"', f"W/{etag}", "Wed, 21 Oct 2015 07:28:00 GMT"]:
        r = await get(client, url, Range="bytes=0-3", **{"If-Range": stale})
        assert r.status_code == 200, stale
        assert [b for _, b in await parts(r)] == [value]
    r = await get(client, url, Range="bytes=0-3", **{"If-None-Match": etag})
    assert r.status_code == 304 and r.headers["etag"] == etag


@pytest.mark.parametrize("path", [JPEG, FRAGMENTS])
async def test_encapsulated_value_ranges(client, app, path):
    (s,) = await store_files(app, [path])
    value = pixel_value(s)  # the items, without the delimiter
    n = len(value)
    url = s.url + "/bulk/7FE00010"
    r = await get(client, url)
    assert r.headers["accept-ranges"] == "bytes"
    assert [b for _, b in await parts(r)] == [value]
    store = counting(app)
    r = await get(client, url, Range="bytes=-100")
    assert r.status_code == 206, r.text
    assert r.headers["content-range"] == f"bytes {n - 100}-{n - 1}/{n}"
    ((h, body),) = await parts(r)
    assert body == value[-100:]
    assert h["content-type"].endswith(f"transfer-syntax={s.ts}")
    assert store.bytes_read == 100


async def test_encapsulated_value_of_unknown_length_is_sent_whole(client, app):
    """No frame index (a row indexed before it): the value's end is not known without
    reading it, so Range is ignored (RFC 9110 14.2 allows it) and ``Accept-Ranges: none``."""
    stored, inst = describe(JPEG)
    assert inst.pixel_data is not None
    pixel = {k: v for k, v in inst.pixel_data.items() if k != "frames"}
    ctx: Context = app.state.retrieve
    await ctx.store.put_bytes(inst.storage_key, stored.data)
    await index_instances(ctx.pool, [dataclasses.replace(inst, pixel_data=pixel)])
    r = await get(client, stored.url + "/bulk/7FE00010", Range="bytes=0-9")
    assert r.status_code == 200, r.text
    assert r.headers["accept-ranges"] == "none"
    assert [b for _, b in await parts(r)] == [pixel_value(stored)]


async def test_value_read_with_pydicom_is_cut(client, app):
    (s,) = await store_files(app, [PDF])
    with quiet_pydicom():
        document = bytes(dcmread(io.BytesIO(s.data))[0x00420011].value)
    url = s.url + "/bulk/00420011"
    r = await get(client, url, Range="bytes=0-4")
    assert r.status_code == 206, r.text
    ((h, body),) = await parts(r)
    assert body == document[:5] == b"%PDF-"
    assert h["content-range"] == f"bytes 0-4/{len(document)}"
    r = await get(client, url, Range=f"bytes={len(document)}-")
    assert r.status_code == 416


async def test_same_tag_same_bytes(client, app):
    """A strong tag names the same bytes: the boundary is derived from it."""
    (s,) = await store_files(app, FLAIR[:1])
    a, b = [await get(client, s.url + "/bulk/7FE00010") for _ in range(2)]
    assert a.headers["etag"] == b.headers["etag"]
    assert a.content == b.content
