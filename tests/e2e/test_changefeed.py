"""The change feed (issue 13) through the router, on one shard and on three: a reader
paging with a small limit from ``/changefeed/latest`` sees every create and delete of
what it stored and deleted exactly once, each instance's in the order they happened;
a long poll answers as soon as something is committed."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart
from tests.support.shards import Federation

pytestmark = pytest.mark.e2e


async def stow(client: httpx.AsyncClient, files: list[bytes]) -> None:
    body, ctype = multipart(files)
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


async def read_all(client: httpx.AsyncClient, cursor: str, limit: int) -> tuple[list[dict], str]:
    events: list[dict] = []
    while True:
        r = await client.get("/changefeed", params={"cursor": cursor, "limit": str(limit)})
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["events"]) <= limit
        events += page["events"]
        cursor = page["cursor"]
        if not page["more"]:
            return events, cursor


async def check_feed(client: httpx.AsyncClient) -> None:
    r = await client.get("/changefeed/latest")
    assert r.status_code == 200, r.text
    start = r.json()["cursor"]

    studies = [generate_uid() for _ in range(4)]
    keys = [(study, generate_uid()) for study in studies for _ in range(3)]  # (study, sop)
    data = {key: make_instance(study=key[0], sop=key[1]) for key in keys}
    await stow(client, list(data.values()))
    (a, a_sop), *_ = [k for k in data if k[0] == studies[0]]
    r = await client.get(f"/studies/{a}/instances", params={"SOPInstanceUID": a_sop})
    a_series = r.json()[0]["0020000E"]["Value"][0]
    gone = await client.delete(f"/studies/{a}/series/{a_series}/instances/{a_sop}")
    assert gone.status_code == 204, gone.text
    await stow(client, [data[(a, a_sop)]])  # stored again
    assert (await client.delete(f"/studies/{studies[1]}")).status_code == 204

    events, end = await read_all(client, start, limit=2)
    mine = [e for e in events if e["study"] in studies]
    seen = [(e["shard"], e["seq"]) for e in events]
    assert len(seen) == len(set(seen)), "an event came twice"
    by_sop: dict[str, list[str]] = defaultdict(list)
    for e in mine:
        by_sop[e["instance"]].append(e["action"])
    assert by_sop[a_sop] == ["create", "delete", "create"]
    for study, sop in data:
        if sop == a_sop:
            continue
        expected = ["create", "delete"] if study == studies[1] else ["create"]
        assert by_sop[sop] == expected, (sop, by_sop[sop])
    assert len(mine) == len(data) + 2 + 3

    # nothing new: an empty page, the same position; a long poll waits for the next one
    r = await client.get("/changefeed", params={"cursor": end})
    assert r.json()["events"] == [] and not r.json()["more"]
    new_study = generate_uid()

    async def later() -> None:
        await asyncio.sleep(1.5)
        await stow(client, [make_instance(study=new_study)])

    began = time.monotonic()
    store = asyncio.create_task(later())
    r = await client.get("/changefeed", params={"cursor": end, "timeout": "30"}, timeout=60)
    waited = time.monotonic() - began
    await store
    assert r.status_code == 200, r.text
    assert [e["study"] for e in r.json()["events"]] == [new_study]
    assert 1.0 < waited < 20, waited

    bad = await client.get("/changefeed", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400


async def test_the_change_feed_on_one_shard(cluster: Cluster, client: httpx.AsyncClient) -> None:
    await check_feed(client)


async def test_the_change_feed_across_three_shards(federation: Federation) -> None:
    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as client:
        await check_feed(client)
        latest = (await client.get("/changefeed/latest")).json()["latest"]
        assert set(latest) == {"shard-0", "shard-1", "shard-2"}
