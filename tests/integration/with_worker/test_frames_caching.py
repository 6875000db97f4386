"""ETag, If-None-Match → 304 and Cache-Control on frames, metadata and instances (see
tessera.retrieve.caching), and frames of rows indexed before the frame index existed —
with a real transcode worker, Redis, PostgreSQL and object folder."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace

import httpx

from tessera.index.writer import index_instances
from tessera.retrieve.context import Context
from tessera.shared.storage import derived_frame_key, instance_key, open_store
from tessera.shared.transcode import FrameRequest
from tessera.shared.transcode.client import TranscodeClient
from tessera.transcode import frames as frames_task
from tests.support.corpus import CORPUS, EVRLE, FLAIR, describe, parts, store_files
from tests.support.frames import (
    IGNORE_SETEX,
    decoded,
    read,
    transfer_syntax_of,
)
from tests.support.rendering import retrieve_settings, started

pytestmark = IGNORE_SETEX
Client = httpx.AsyncClient

OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
CINE = CORPUS / "Issue16.dcm"  # 34 JPEG frames


async def revalidate(client: Client, url: str, accept: str | None = None) -> httpx.Response:
    """GET ``url``, then again with its ETag: the second answer."""
    headers = {} if accept is None else {"Accept": accept}
    first = await client.get(url, headers=headers)
    assert first.status_code == 200, first.text
    etag = first.headers["etag"]
    assert etag.startswith('W/"')
    assert first.headers["vary"] == "Accept"
    second = await client.get(url, headers=headers | {"If-None-Match": etag})
    assert second.status_code == 304, second.text
    assert second.content == b""
    assert second.headers["etag"] == etag
    assert second.headers["cache-control"] == first.headers["cache-control"]
    return first


async def test_frames_revalidate_with_304(retrieve):
    app, client = retrieve
    (cine,) = await store_files(app, [CINE])
    url = f"{cine.url}/frames/2,4"
    first = await revalidate(client, url, OHIF)
    assert first.headers["cache-control"] == "private, max-age=86400"
    # another representation or frame list is another entity
    for other_url, accept in [
        (url, 'multipart/related; type="image/jpeg"'),
        (f"{cine.url}/frames/4,2", OHIF),
    ]:
        r = await client.get(
            other_url, headers={"Accept": accept, "If-None-Match": first.headers["etag"]}
        )
        assert r.status_code == 200 and r.headers["etag"] != first.headers["etag"]
    r = await client.get(url, headers={"Accept": OHIF, "If-None-Match": '"x", *'})
    assert r.status_code == 304


async def test_a_304_reads_no_storage(retrieve):
    app, client = retrieve
    (cine,) = await store_files(app, [CINE])
    url = f"{cine.url}/frames/1"
    etag = (await client.get(url, headers={"Accept": OHIF})).headers["etag"]
    ctx: Context = app.state.retrieve
    await ctx.store.delete(await _key(ctx, cine.sop))
    r = await client.get(url, headers={"Accept": OHIF, "If-None-Match": etag})
    assert r.status_code == 304
    r = await client.get(url, headers={"Accept": OHIF})
    assert r.status_code == 500  # without the validator the missing object shows


async def _key(ctx: Context, sop: str) -> str:
    key = await ctx.pool.fetchval("SELECT storage_key FROM instance WHERE sop_instance_uid=$1", sop)
    assert isinstance(key, str)
    return key


async def test_series_metadata_etag_follows_its_members(retrieve):
    app, client = retrieve
    first_two = await store_files(app, FLAIR[:2])
    series_url = f"/studies/{first_two[0].study}/series/{first_two[0].series}"
    before = await revalidate(client, series_url + "/metadata")
    assert before.headers["cache-control"] == "private, max-age=10"
    instance = await revalidate(client, first_two[0].url + "/metadata")
    assert instance.headers["cache-control"] == "private, max-age=86400"
    await store_files(app, FLAIR[2:])  # the series gains an instance
    r = await client.get(
        series_url + "/metadata", headers={"If-None-Match": before.headers["etag"]}
    )
    assert r.status_code == 200 and len(r.json()) == 3
    assert r.headers["etag"] != before.headers["etag"]
    r = await client.get(
        first_two[0].url + "/metadata", headers={"If-None-Match": instance.headers["etag"]}
    )
    assert r.status_code == 304  # the instance itself did not change
    # the absolute BulkDataURIs depend on the host the client used
    r = await client.get(
        first_two[0].url + "/metadata",
        headers={"If-None-Match": instance.headers["etag"], "X-Forwarded-Host": "elsewhere"},
    )
    assert r.status_code == 200 and "//elsewhere/" in r.text


async def test_instances_and_series_revalidate(retrieve):
    app, client = retrieve
    stored = await store_files(app, FLAIR)
    dicom = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    r = await revalidate(client, stored[0].url, dicom)
    assert r.headers["cache-control"] == "private, max-age=86400"
    r = await revalidate(client, f"/studies/{stored[0].study}/series/{stored[0].series}", dicom)
    assert r.headers["cache-control"] == "private, max-age=10"
    r = await revalidate(client, f"/studies/{stored[0].study}")
    assert r.headers["cache-control"] == "private, max-age=10"


async def test_replace_policy_revalidates_every_time(database, worker):
    settings = replace(retrieve_settings(database, worker), duplicate_policy="replace")
    async for app, client in started(settings):
        (cine,) = await store_files(app, [CINE])
        r = await revalidate(client, f"{cine.url}/frames/1", OHIF)
        assert r.headers["cache-control"] == "private, no-cache"


async def test_rows_without_a_frame_index_are_served_by_decoding(retrieve):
    """A row indexed before the frame index existed: its frames come from transcode."""
    app, client = retrieve
    stored, inst = describe(CINE)
    assert inst.pixel_data is not None
    legacy = {k: inst.pixel_data[k] for k in ("offset", "length", "vr", "encapsulated")}
    ctx: Context = app.state.retrieve
    await ctx.store.put_bytes(inst.storage_key, stored.data)
    (outcome,) = await index_instances(ctx.pool, [replace(inst, pixel_data=legacy)])
    assert outcome.outcome == "stored"
    r = await client.get(f"{stored.url}/frames/34", headers={"Accept": OHIF})
    assert r.status_code == 200, r.text
    ((h, body),) = await parts(r)
    assert transfer_syntax_of(h["content-type"]) == EVRLE
    assert body == decoded(read(CINE), 34)


async def test_identical_frame_decodes_run_once(worker, monkeypatch):
    """Two identical frame tasks at once decode once (the Redis lock); a third finds the
    stored frame (the cache). Sent by name, as retrieve sends them."""
    calls = []

    def counted(data: bytes, frame_number: int, target_ts: str, frames: int | None = None) -> bytes:
        calls.append(frame_number)
        time.sleep(0.5)  # long enough for the second task to wait on the lock
        return original(data, frame_number, target_ts, frames)

    original = frames_task.frame_in  # what the task converts every frame with
    monkeypatch.setattr(frames_task, "frame_in", counted)
    data = CINE.read_bytes()
    key = instance_key(hashlib.sha256(data).hexdigest())
    store = open_store(worker)
    await store.put_bytes(key, data)
    await store.delete(derived_frame_key(key, 7, EVRLE))
    sender = TranscodeClient(worker)
    request = FrameRequest(key, 7, EVRLE)
    try:
        keys = await asyncio.gather(sender.key_of(request), sender.key_of(request))
        assert keys == [derived_frame_key(key, 7, EVRLE)] * 2
        assert await sender.key_of(request) == keys[0]
        assert await store.get_bytes(keys[0]) == decoded(read(CINE), 7)
    finally:
        sender.close()
        await store.close()
    assert calls == [7]
