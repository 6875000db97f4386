"""Add a fourth shard to a running three-shard federation (issue 6) while it serves.

Three shards behind a router with its registry, all real processes. A writer keeps
storing through the router (new studies, and more instances into existing ones) and a
reader keeps searching (QIDO-RS) and retrieving (WADO-RS) instances it knows are stored,
while a rebalance job moves to the new shard the studies rendezvous hashing now gives
it. Every read must succeed throughout. Afterwards every instance on every shard is
counted and hashed: none lost, none duplicated (each SOPInstanceUID on exactly one
shard, the one the registry places its study on), all retrievable through the router.
The move's speed (instances/s) is printed, for the report.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import httpx
import pytest
from pydicom.uid import generate_uid

from tessera.router.rebalance.job import JobRunner, job_rows, progress, start_add
from tessera.router.rebalance.move import TIMEOUT
from tessera.router.registry import Registry
from tessera.router.shards import ShardMap
from tessera.shared.settings import Settings
from tests.support.dicomgen import make_instance, multipart, split_multipart
from tests.support.inventory import inventory
from tests.support.shards import Federation

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
SEED_STUDIES = 90
Stored = dict[str, tuple[str, str, str]]  # SOPInstanceUID -> (study, series, sha256)


class Load:
    """The writer and the reader, and what they saw."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.stored: Stored = {}
        self.studies: dict[str, list[str]] = {}  # study -> its series
        self.write_failures: list[str] = []
        self.read_failures: list[str] = []
        self.retried = 0  # STOWs answered 503 (study locked for a moment), then re-sent
        self.longest_locked = 0.0  # seconds from a STOW's first 503 to its success
        self.reads = 0
        self.deleted: dict[str, str] = {}  # SOPInstanceUID -> study, by deleter()
        self.events: list[dict] = []  # the change feed, as feed() read it
        self.running = True
        self.feeding = True
        self.rng = random.Random(6)

    async def store(self, study: str, series: str, n: int = 1, size: int = 64) -> None:
        files = [
            make_instance(study=study, series=series, instance_number=k + 1, size=size)
            for k in range(n)
        ]
        body, ctype = multipart(files)
        first_503 = None
        for _ in range(50):
            r = await self.client.post("/studies", content=body, headers={"Content-Type": ctype})
            if r.status_code != 503:
                break
            self.retried += 1
            first_503 = first_503 or time.monotonic()
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 4)
        if first_503 is not None:
            self.longest_locked = max(self.longest_locked, time.monotonic() - first_503)
        if r.status_code != 200:
            self.write_failures.append(f"STOW {study}: {r.status_code} {r.text[:200]}")
            return
        for item in r.json()["00081199"]["Value"]:
            sop = item["00081155"]["Value"][0]
            data = next(f for f in files if sop.encode() in f)
            self.stored[sop] = (study, series, hashlib.sha256(data).hexdigest())
        self.studies.setdefault(study, []).append(series)

    async def seed(self, count: int) -> None:
        for i in range(count):
            study = generate_uid()
            await self.store(study, generate_uid(), n=1 + i % 4, size=64 + 32 * (i % 3))

    async def writer(self) -> None:
        while self.running:
            if self.rng.random() < 0.4 or not self.studies:
                await self.store(generate_uid(), generate_uid(), n=2)
            else:  # one more instance in an existing study, maybe one being moved
                study = self.rng.choice(list(self.studies))
                await self.store(study, self.rng.choice(self.studies[study]))

    async def deleter(self) -> None:
        """Stores a study of its own now and then and deletes it (again after 503, when a
        transition would move it)."""
        while self.running:
            study, series = generate_uid(), generate_uid()
            files = [make_instance(study=study, series=series, size=32)]
            body, ctype = multipart(files)
            r = await self.client.post("/studies", content=body, headers={"Content-Type": ctype})
            if r.status_code != 200:
                self.write_failures.append(f"STOW {study}: {r.status_code}")
                continue
            sop = r.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
            for _ in range(100):
                r = await self.client.delete(f"/studies/{study}")
                if r.status_code != 503:
                    break
                await asyncio.sleep(0.2)
            if r.status_code != 204:
                self.write_failures.append(f"DELETE {study}: {r.status_code} {r.text[:100]}")
            else:
                self.deleted[sop] = study
            await asyncio.sleep(0.3)

    async def feed(self, cursor: str) -> None:
        """Reads the change feed in pages of 7 all along, and to its end afterwards."""
        while True:
            r = await self.client.get("/changefeed", params={"cursor": cursor, "limit": "7"})
            if r.status_code != 200:
                self.read_failures.append(f"feed: {r.status_code} {r.text[:100]}")
                await asyncio.sleep(0.5)
                continue
            page = r.json()
            self.events += page["events"]
            cursor = page["cursor"]
            if not self.feeding and not page["more"]:
                return
            if not page["events"]:
                await asyncio.sleep(0.2)

    async def reader(self) -> None:
        while self.running:
            sop = self.rng.choice(list(self.stored))
            study, series, sha = self.stored[sop]
            try:
                r = await self.client.get(f"/studies/{study}/series/{series}/instances")
                if r.status_code != 200 or sop not in r.text:
                    self.read_failures.append(f"QIDO {sop}: {r.status_code} {r.text[:100]}")
                url = f"/studies/{study}/series/{series}/instances/{sop}"
                r = await self.client.get(url, headers={"Accept": ANY_TS})
                if r.status_code != 200:
                    self.read_failures.append(f"WADO {sop}: {r.status_code} {r.text[:100]}")
                else:
                    ((_, data),) = split_multipart(r.content, r.headers["content-type"])
                    if hashlib.sha256(data).hexdigest() != sha:
                        self.read_failures.append(f"WADO {sop}: other bytes")
            except httpx.HTTPError as e:
                self.read_failures.append(f"{sop}: {type(e).__name__} {e}")
            self.reads += 1


async def test_add_a_fourth_shard_under_load(federation: Federation) -> None:
    fed = federation
    async with httpx.AsyncClient(base_url=fed.base_url, timeout=60) as client:
        load = Load(client)
        await load.seed(SEED_STUDIES)
        assert not load.write_failures, load.write_failures[:3]

        new = await fed.add_stack("shard-3")
        registry = await Registry.connect(fed.router_dsn)
        settings = Settings(
            router_database_url=fed.router_dsn,
            registry_poll=fed.router.settings.registry_poll,  # type: ignore[union-attr]
            rebalance_concurrency=8,
        )
        start = (await client.get("/changefeed/latest")).json()["cursor"]
        seeded = set(load.stored)  # stored before the feed's start
        feed = asyncio.create_task(load.feed(start))
        tasks = [
            asyncio.create_task(load.writer()),
            asyncio.create_task(load.deleter()),
        ] + [asyncio.create_task(load.reader()) for _ in range(2)]
        try:
            await asyncio.sleep(1.0)
            job_id = await start_add(
                registry, new.name, new.ingest_url, new.index_url, new.retrieve_url
            )
            async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
                started = time.monotonic()
                state = await JobRunner(settings, registry, http).run(job_id)
                wall = time.monotonic() - started
            await asyncio.sleep(1.0)  # reads and writes go on once the job is over
        finally:
            load.running = False
            await asyncio.gather(*tasks)
            load.feeding = False  # what was written is committed: read to the end
            await feed
        (row,) = await job_rows(registry, job_id)
        p = progress(row)
        print(
            f"\nrebalance: {p['moved']} instances ({p['bytes']} bytes) of "
            f"{p['studies']['done']} studies moved in {p['elapsed']:.1f} s of copying "
            f"({p['rate']:.1f} instances/s; whole job {wall:.1f} s); "
            f"{load.reads} reads and {len(load.stored)} stored instances meanwhile, "
            f"{load.retried} STOWs retried after 503 (the longest wait {load.longest_locked:.1f} s)"
        )
        assert state == "done", p
        assert load.read_failures == [], load.read_failures[:5]
        assert load.write_failures == [], load.write_failures[:5]
        assert p["moved"] > 0 and p["studies"]["failed"] == 0
        # studies are locked a batch at a time, never across a whole copy: a STOW waits
        # for about lock_wait (2 polls) plus the batch's last copies
        assert load.longest_locked < 5.0

        shards = [s for s in fed.stacks.values()]
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            found = await inventory(http, shards)  # also: no SOPInstanceUID on two shards
        smap = ShardMap.from_rows(await registry.shards(), await registry.overrides())
        await registry.close()
        assert smap.placement == ("shard-0", "shard-1", "shard-2", "shard-3")
        assert smap.overrides == {} and smap.next_placement is None
        # none lost: every acknowledged instance is there, with its bytes, on its owner
        assert set(found) == set(load.stored)
        for sop, (study, _, sha) in load.stored.items():
            shard, where, got = found[sop]
            assert (where, got) == (study, sha), sop
            assert shard == smap.owner(study), sop
        assert any(shard == "shard-3" for shard, _, _ in found.values())
        check_feed(load, found, seeded)
        # all retrievable through the router, study by study
        for study in {s for s, _, _ in load.stored.values()}:
            r = await client.get(f"/studies/{study}", headers={"Accept": ANY_TS})
            assert r.status_code == 200, r.text
            got = {
                h["content-location"].rsplit("/", 1)[1]: hashlib.sha256(d).hexdigest()
                for h, d in split_multipart(r.content, r.headers["content-type"])
            }
            assert got == {s: sha for s, (st, _, sha) in load.stored.items() if st == study}


def check_feed(load: Load, found: dict[str, tuple[str, str, str]], seeded: set[str]) -> None:
    """The change feed read in small pages during the load, the deletes and the move:
    every event once, each shard's in order; each stored instance created once and, if
    its study moved, a "move" to the shard it is on now, never a delete; each deleted
    one created then deleted (issue 13)."""
    seen = [(e["shard"], e["seq"]) for e in load.events]
    assert len(seen) == len(set(seen)), "an event came twice"
    last: dict[str, int] = {}
    for shard, seq in seen:
        assert seq > last.get(shard, 0), f"{shard} out of order at {seq}"
        last[shard] = seq
    actions: dict[str, list[tuple[str, str]]] = {}
    for e in load.events:
        actions.setdefault(e["instance"], []).append((e["action"], e["shard"]))
    for sop in set(load.stored) - seeded:
        kinds = [a for a, _ in actions[sop]]
        assert kinds[0] == "create" and kinds.count("create") == 1, (sop, kinds)
        assert "delete" not in kinds, (sop, kinds)
        if "move" in kinds:
            assert actions[sop][-1] == ("move", found[sop][0]), (sop, actions[sop])
    moved = [sop for sop, a in actions.items() if ("move", "shard-3") in a]
    assert moved, "no move event"
    for sop in seeded:  # a move, if their study moved, and nothing else
        expected = [("move", "shard-3")] if found[sop][0] == "shard-3" else []
        assert actions.get(sop, []) == expected, (sop, actions.get(sop))
    for sop in load.deleted:
        assert [a for a, _ in actions[sop]] == ["create", "delete"], (sop, actions[sop])
    assert not set(load.deleted) & set(found)
