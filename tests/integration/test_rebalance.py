"""Rebalance jobs between two real shard stacks: every service of each shard as its own
process (ingest, index, index worker, retrieve), each shard with its own PostgreSQL
database, Redis database and S3 bucket, and the router registry in a third database.

Each test counts and hashes every instance on every shard before and after (the bytes
WADO-RS returns, as stored): none lost, none duplicated (each SOPInstanceUID on exactly
one shard, the one the registry places its study on), all retrievable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from pydicom.uid import generate_uid
from starlette.applications import Starlette

from tessera.local import child_kwargs
from tessera.local.processes import free_port
from tessera.router.placement import place
from tessera.router.proxy import Proxy, open_session
from tessera.router.rebalance import shardctl
from tessera.router.rebalance.api import routes as admin_routes
from tessera.router.rebalance.job import JobRunner, job_rows, progress, start_add, start_drain
from tessera.router.rebalance.move import TIMEOUT
from tessera.router.rebalance.worker import enqueue
from tessera.router.registry import Registry
from tessera.router.shards import Shard, ShardMap
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.http import make_app
from tessera.shared.index_internal import IndexInternalClient
from tessera.shared.settings import Settings
from tests.support.buckets import new_bucket
from tests.support.cluster import Cluster, quick_shard_settings
from tests.support.dicomgen import make_instance, multipart
from tests.support.inventory import ANY_TS, Inventory, inventory
from tests.support.servers import RedisDatabases, admin_sql, with_database

pytestmark = pytest.mark.slow
SERVICES = ("ingest", "index", "index-worker", "retrieve")


def start_shard(
    name: str, dsn: str, redis_url: str, s3_settings: dict[str, str], workdir: Path
) -> Cluster:
    """One shard (not started: :func:`start_services`), on a bucket of its own."""
    bucket = new_bucket(s3_settings, name)
    settings = quick_shard_settings(
        s3_settings, bucket, workdir, shard=name, database_url=dsn, redis_url=redis_url
    )
    (workdir / name).mkdir(exist_ok=True)
    return Cluster(settings, workdir / name)


def start_services(cluster: Cluster) -> None:
    for service in SERVICES:
        cluster.start(service)
    for service in SERVICES:
        cluster.wait_ready(service)


def shard_of(cluster: Cluster) -> Shard:
    s = cluster.settings
    return Shard(s.shard, s.ingest_url, s.index_url, s.retrieve_url)


@pytest.fixture(scope="module")
async def shard_dbs(postgres_dsn: str) -> AsyncIterator[list[str]]:
    names = [f"rb_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
        await apply_migrations(with_database(postgres_dsn, name))
    yield [with_database(postgres_dsn, n) for n in names]
    for name in names:
        await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def stacks(
    shard_dbs: list[str], rebalance_redis: str, s3_settings: dict[str, str]
) -> Iterator[dict[str, Cluster]]:
    workdir = Path(tempfile.mkdtemp(prefix="tessera-rebalance-"))
    started: dict[str, Cluster] = {}
    try:
        for i, dsn in enumerate(shard_dbs):
            name = f"s{i + 1}"
            started[name] = start_shard(name, dsn, rebalance_redis, s3_settings, workdir)
            start_services(started[name])
        yield started
    finally:
        for c in started.values():
            c.stop_all()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as c:
        yield c


@pytest.fixture
async def shards(stacks: dict[str, Cluster], http: httpx.AsyncClient) -> AsyncIterator[dict]:
    """The shard stacks, emptied after the test (with the internal DELETE)."""
    yield {name: shard_of(c) for name, c in stacks.items()}
    for c in stacks.values():
        r = await http.get(c.settings.index_url + "/internal/studies", params={"limit": 10000})
        for _, uid, _ in r.json()["studies"]:
            assert (await http.delete(f"{c.settings.index_url}/studies/{uid}")).status_code == 204


@pytest.fixture(scope="module")
def rebalance_redis(redis_databases: RedisDatabases) -> Iterator[str]:
    """One Redis database for the module's shards and the rebalance broker (queues and
    locks are named by shard)."""
    with redis_databases.lease() as url:
        yield url


@pytest.fixture
async def router_settings(postgres_dsn: str, redis_db: str) -> AsyncIterator[Settings]:
    """The router's settings; its rebalance broker on a database of the test's own."""
    name = f"router_{uuid.uuid4().hex[:12]}"
    await admin_sql(postgres_dsn, f'CREATE DATABASE "{name}"')
    broker = redis_db
    yield Settings(
        router_database_url=with_database(postgres_dsn, name),
        router_redis_url=broker,
        registry_poll=0.1,
        rebalance_concurrency=3,
        rebalance_batch_size=3,
    )
    await admin_sql(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def registry(router_settings: Settings) -> AsyncIterator[Registry]:
    reg = await Registry.connect(router_settings.router_database_url)
    yield reg
    await reg.close()


async def register(registry: Registry, shard: Shard, state: str = "active") -> None:
    await registry.add_shard(
        shard.name, shard.ingest_url, shard.index_url, shard.retrieve_url, state
    )


def uids_placed(n: int, shard: str, placement: list[str]) -> list[str]:
    """``n`` new StudyInstanceUIDs that rendezvous hashing gives ``shard`` among ``placement``."""
    out: list[str] = []
    while len(out) < n:
        if place(uid := generate_uid(), placement) == shard:
            out.append(uid)
    return out


async def store_studies(
    http: httpx.AsyncClient,
    where: dict[str, Shard],
    placement: list[str],
    n: int,
    uids: list[str] | None = None,
) -> list[str]:
    """``n`` studies (1-5 instances, one or two series) STOWed to their hashed shard
    (``uids`` first, then new ones); their StudyInstanceUIDs."""
    stored = []
    for i in range(n):
        study = uids[i] if uids and i < len(uids) else generate_uid()
        stored.append(study)
        series = [generate_uid() for _ in range(1 + i % 2)]
        files = [
            make_instance(
                study=study,
                series=series[k % len(series)],
                instance_number=k + 1,
                patient_id=f"P{i % 4}",
                size=16 + 8 * (k % 3),
            )
            for k in range(1 + i % 5)
        ]
        shard = where[place(study, placement)]
        body, ctype = multipart(files)
        r = await http.post(
            shard.ingest_url + "/studies", content=body, headers={"Content-Type": ctype}
        )
        assert r.status_code == 200, r.text
    return stored


async def owners(registry: Registry) -> ShardMap:
    return ShardMap.from_rows(await registry.shards(), await registry.overrides())


def same_instances(before: Inventory, after: Inventory) -> None:
    assert len(after) == len(before)
    assert {s: (st, h) for s, (_, st, h) in after.items()} == {
        s: (st, h) for s, (_, st, h) in before.items()
    }


async def test_add_shard_moves_its_studies(shards, registry, router_settings, http):
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    studies = await store_studies(http, shards, ["s1"], 24)
    before = await inventory(http, [s1, s2])
    assert {shard for shard, _, _ in before.values()} == {"s1"}
    # labels (README "Security") move with their study
    for n, study in enumerate(studies):
        index = IndexInternalClient(http, s1.index_url)
        assert await index.set_labels(study, [f"ward-{n % 3}", "research"]) is not None

    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)
    assert await JobRunner(router_settings, registry, http).run(job_id) == "done"

    after = await inventory(http, [s1, s2])
    same_instances(before, after)
    placed = await owners(registry)
    for n, study in enumerate(studies):
        owner = s2 if placed.owner(study) == "s2" else s1
        labels = await IndexInternalClient(http, owner.index_url).labels(study)
        assert labels == sorted([f"ward-{n % 3}", "research"]), (study, owner.name)
    smap = await owners(registry)
    assert smap.placement == ("s1", "s2") and smap.next_placement is None
    assert smap.overrides == {}  # every move released its pin
    for sop, (shard, study, _) in after.items():
        assert smap.owner(study) == shard, sop
    moved = [s for s, (shard, _, _) in after.items() if shard == "s2"]
    assert moved and len(moved) < len(after)
    (row,) = await job_rows(registry, job_id)
    p = progress(row)
    assert p["state"] == "done" and p["error"] is None
    assert p["moved"] == p["total"] == len(moved)
    assert p["studies"]["done"] == p["studies"]["total"] == len({after[s][1] for s in moved})
    assert p["bytes"] > 0 and p["rate"] > 0 and p["eta"] == 0.0
    # the target answers QIDO-RS for a moved study with the right counts
    study = after[moved[0]][1]
    r = await http.get(s2.index_url + "/studies", params={"StudyInstanceUID": study})
    n = sum(1 for _, st, _ in after.values() if st == study)
    assert r.json()[0]["00201208"]["Value"] == [n]
    gone = await http.get(s1.index_url + "/studies", params={"StudyInstanceUID": study})
    assert gone.status_code == 204  # no match (PS3.18 8.3.4.4.1)


async def test_drain_empties_and_removes_the_shard(shards, registry, router_settings, http):
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    await register(registry, s2)
    await store_studies(http, shards, ["s1", "s2"], 16)
    before = await inventory(http, [s1, s2])
    assert {shard for shard, _, _ in before.values()} == {"s1", "s2"}

    job_id = await start_drain(registry, "s2")
    assert await JobRunner(router_settings, registry, http).run(job_id) == "done"

    after = await inventory(http, [s1, s2])
    same_instances(before, after)
    assert {shard for shard, _, _ in after.values()} == {"s1"}
    assert (await registry.shard("s2")).state == "removed"  # type: ignore[union-attr]
    smap = await owners(registry)
    assert smap.placement == ("s1",) and "s2" not in smap.shards and smap.overrides == {}


async def test_conflicting_object_on_target_keeps_the_study_on_its_source(
    shards, registry, router_settings, http
):
    """A SOPInstanceUID the target already holds with other bytes: the study is not
    moved (the job fails naming it), stays pinned to its source and readable there."""
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    study = next(u for u in (generate_uid() for _ in range(100)) if place(u, ["s1", "s2"]) == "s2")
    sop = generate_uid()
    for shard, name in ((s1, "Source^Bytes"), (s2, "Other^Bytes")):
        body, ctype = multipart([make_instance(study=study, sop=sop, patient_name=name)])
        r = await http.post(
            shard.ingest_url + "/studies", content=body, headers={"Content-Type": ctype}
        )
        assert r.status_code == 200, r.text

    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)
    assert await JobRunner(router_settings, registry, http).run(job_id) == "failed"
    (row,) = await job_rows(registry, job_id)
    assert row["failed_studies"] == 1 and "other bytes" in row["error"]
    smap = await owners(registry)
    assert smap.owner(study) == "s1" and study not in smap.locked
    r = await http.get(f"{s1.retrieve_url}/studies/{study}", headers={"Accept": ANY_TS})
    assert r.status_code == 200 and b"Source^Bytes" in r.content


async def test_worker_killed_mid_move_resumes(shards, registry, router_settings, http, tmp_path):
    """The Celery worker (``python -m tessera.router.rebalance``) is SIGKILLed in the
    middle of the job; a new worker resumes it: same count-and-hash result."""
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    await store_studies(http, shards, ["s1"], 30)
    before = await inventory(http, [s1, s2])
    settings = Settings(
        **{
            **router_settings.__dict__,
            "rebalance_concurrency": 1,
            "registry_poll": 0.2,
            "rebalance_switch_studies": 3,  # done_studies grows 3 at a time
        }
    )
    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)

    def worker() -> subprocess.Popen[bytes]:
        return start_worker(settings, tmp_path / "worker.log")

    proc = worker()
    enqueue(settings, job_id)
    deadline = time.monotonic() + 90
    while True:
        (row,) = await job_rows(registry, job_id)
        if row["done_studies"] >= 3:
            break
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
        await asyncio.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (row,) = await job_rows(registry, job_id)
    assert row["state"] == "moving" and row["done_studies"] < row["total_studies"]

    proc = worker()  # resumes the unfinished job when it is ready
    try:
        deadline = time.monotonic() + 120
        while (row := (await job_rows(registry, job_id))[0])["state"] == "moving":
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert row["state"] == "done", (row["error"], (tmp_path / "worker.log").read_text())
    after = await inventory(http, [s1, s2])
    same_instances(before, after)
    smap = await owners(registry)
    assert smap.overrides == {} and not smap.locked
    for shard, study, _ in after.values():
        assert smap.owner(study) == shard
    assert row["moved_instances"] == sum(1 for shard, _, _ in after.values() if shard == "s2")


# --- batches: locks and releases of many studies at once ------------------------------------


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m tessera.router.rebalance`` (the Celery worker), logging to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tessera.router.rebalance"],
            env={**os.environ, **settings.env()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **child_kwargs(signal.SIGTERM),  # type: ignore[arg-type]
        )


class CountingRegistry(Registry):
    """The registry, recording each batch the job locks and releases (one call each)."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry.pool)
        self.locked_batches: list[list[str]] = []
        self.released_batches: list[list[str]] = []

    async def set_locked_many(self, study_uids: Iterable[str], locked: bool) -> set[str]:
        uids = list(study_uids)
        if locked:
            self.locked_batches.append(uids)
        return await super().set_locked_many(uids, locked)

    async def release_many(self, study_uids: Iterable[str]) -> None:
        uids = list(study_uids)
        if uids:
            self.released_batches.append(uids)
        await super().release_many(uids)


async def test_lock_and_release_many_in_one_transaction(shards, registry):
    """Each override changed by a batch call takes a seq of its own (routers fetch them
    incrementally); a released or unknown study is not locked; unlocking is idempotent."""
    await register(registry, shards["s1"])
    a, b, c = (generate_uid() for _ in range(3))
    await registry.pin([a, b, c], "s1")
    _, _, seq = await registry.changes_since(0)
    assert await registry.set_locked_many([a, b, "1.2.3.unknown"], True) == {a, b}
    _, changed, seq2 = await registry.changes_since(seq)
    assert [(o.study_instance_uid, o.locked) for o in changed] in (
        [(a, True), (b, True)],
        [(b, True), (a, True)],
    )
    assert len({o.seq for o in changed}) == 2 and seq2 == max(o.seq for o in changed)
    assert (await owners(registry)).locked == {a, b}

    await registry.release_many([a, c])
    _, changed, _ = await registry.changes_since(seq2)
    assert {(o.study_instance_uid, o.released, o.locked) for o in changed} == {
        (a, True, False),
        (c, True, False),
    }
    assert await registry.set_locked_many([a, b], True) == {b}  # a is released: not locked
    assert await registry.set_locked_many([a, b], False) == {b}
    assert await registry.set_locked_many([b], False) == {b}
    smap = await owners(registry)
    assert smap.locked == frozenset() and smap.overrides == {b: "s1"}


async def test_studies_are_locked_and_released_in_batches(shards, registry, router_settings, http):
    """Eight moving studies, batches of at most three: every study locked and released
    once, in fewer transactions than studies, and the waits paid once per batch."""
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    moving = uids_placed(8, "s2", ["s1", "s2"])
    staying = uids_placed(4, "s1", ["s1", "s2"])
    await store_studies(http, shards, ["s1"], 12, uids=moving + staying)
    before = await inventory(http, [s1, s2])
    settings = Settings(
        **{**router_settings.__dict__, "registry_poll": 0.25, "rebalance_switch_studies": 3}
    )
    counting = CountingRegistry(registry)
    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)
    assert await JobRunner(settings, counting, http).run(job_id) == "done"

    same_instances(before, await inventory(http, [s1, s2]))
    locked = [u for batch in counting.locked_batches for u in batch]
    released = [u for batch in counting.released_batches for u in batch]
    assert sorted(locked) == sorted(released) == sorted(moving)
    assert all(len(batch) <= 3 for batch in counting.locked_batches)
    assert len(counting.locked_batches) < len(moving)
    (row,) = await job_rows(registry, job_id)
    assert row["done_studies"] == len(moving) and row["failed_studies"] == 0
    smap = await owners(registry)
    assert smap.overrides == {} and all(smap.owner(u) == "s2" for u in moving)


async def test_a_study_failing_under_its_lock_stays_while_its_batch_moves(
    shards, registry, router_settings, http
):
    """While a batch is locked, one of its studies gets a SOPInstanceUID whose bytes
    differ on the source and the target: its last copy fails, so it alone is unlocked,
    recorded as failed and kept (whole) on its source; the rest of the batch moves."""
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    moving = uids_placed(5, "s2", ["s1", "s2"])
    await store_studies(http, shards, ["s1"], 5, uids=moving)
    victim, sop = moving[2], generate_uid()

    class Conflicting(CountingRegistry):
        injected = False

        async def set_locked_many(self, study_uids: Iterable[str], locked: bool) -> set[str]:
            live = await super().set_locked_many(study_uids, locked)
            # under load the studies may be switched in several batches: the first one
            # that locks the victim is the one it must fail in
            if locked and victim in live and not self.injected:
                self.injected = True
                for shard, name in ((s1, "Source^Bytes"), (s2, "Other^Bytes")):
                    body, ctype = multipart(
                        [make_instance(study=victim, sop=sop, patient_name=name)]
                    )
                    r = await http.post(
                        shard.ingest_url + "/studies",
                        content=body,
                        headers={"Content-Type": ctype},
                    )
                    assert r.status_code == 200, r.text
            return live

    settings = Settings(**{**router_settings.__dict__, "rebalance_switch_studies": 10})
    conflicting = Conflicting(registry)
    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)
    assert await JobRunner(settings, conflicting, http).run(job_id) == "failed"

    assert conflicting.injected and any(victim in b for b in conflicting.locked_batches)
    (row,) = await job_rows(registry, job_id)
    assert row["failed_studies"] == 1 and row["done_studies"] == len(moving) - 1
    assert "other bytes" in row["error"]
    smap = await owners(registry)
    assert smap.overrides == {victim: "s1"} and smap.locked == frozenset()
    for study in moving:
        listed = {}
        for shard in (s1, s2):
            r = await http.get(f"{shard.index_url}/internal/studies/{study}/instances")
            listed[shard.name] = (
                {i["sop"] for i in r.json()["instances"]} if r.status_code == 200 else set()
            )
        if study == victim:  # whole on its source, the conflicting instance with it
            assert sop in listed["s1"] and len(listed["s1"]) >= 2
            r = await http.get(f"{s1.retrieve_url}/studies/{study}", headers={"Accept": ANY_TS})
            assert r.status_code == 200 and b"Source^Bytes" in r.content
        else:
            assert listed["s1"] == set() and listed["s2"], study
            assert smap.owner(study) == "s2"


async def test_worker_killed_while_a_batch_is_locked_resumes(
    shards, registry, router_settings, http, tmp_path
):
    """SIGKILL of the worker while a batch is locked leaves the locks in the registry
    (routers would answer 503 for those studies); the resumed job lifts them, moves
    the batch and every other study: same count-and-hash result, no lock left."""
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    await store_studies(http, shards, ["s1"], 20)
    before = await inventory(http, [s1, s2])
    settings = Settings(
        **{
            **router_settings.__dict__,
            "rebalance_concurrency": 2,
            "registry_poll": 0.5,  # each batch stays locked at least 1 s
            "rebalance_switch_studies": 4,
        }
    )
    job_id = await start_add(registry, "s2", s2.ingest_url, s2.index_url, s2.retrieve_url)
    log_path = tmp_path / "worker.log"
    proc = start_worker(settings, log_path)
    enqueue(settings, job_id)
    deadline = time.monotonic() + 90
    while not (held := (await owners(registry)).locked):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        await asyncio.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (await owners(registry)).locked >= held  # the crash left them locked
    states = await registry.pool.fetch(
        "SELECT state FROM rebalance_study WHERE job_id = $1"
        " AND study_instance_uid = ANY($2::text[])",
        job_id,
        list(held),
    )
    assert {r["state"] for r in states} <= {"copied", "switched"}

    proc = start_worker(settings, log_path)  # resumes the unfinished job when it is ready
    try:
        deadline = time.monotonic() + 120
        while (row := (await job_rows(registry, job_id))[0])["state"] == "moving":
            assert time.monotonic() < deadline, log_path.read_text()
            await asyncio.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert row["state"] == "done", (row["error"], log_path.read_text())
    after = await inventory(http, [s1, s2])
    same_instances(before, after)
    smap = await owners(registry)
    assert smap.overrides == {} and not smap.locked
    for shard, study, _ in after.values():
        assert smap.owner(study) == shard
    assert set(held) <= {study for shard, study, _ in after.values() if shard == "s2"}
    assert row["moved_instances"] == sum(1 for shard, _, _ in after.values() if shard == "s2")
    assert row["done_studies"] == row["total_studies"]


# --- the admin API and the shardctl CLI ------------------------------------------------------


@contextlib.contextmanager
def admin_server(settings: Settings, queued: list[int]) -> Iterator[str]:
    """The admin routes in a uvicorn server on a thread (its own loop and registry pool);
    jobs are queued into ``queued`` instead of a broker. Yields the base URL."""
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        holder["registry"] = await Registry.connect(settings.router_database_url)
        session = holder["session"] = open_session()  # the router's client, as in app.py
        yield
        await session.close()
        await holder["registry"].close()

    async def probe(base_url: str) -> str:
        return await Proxy(holder["session"], "").probe(base_url, 3.0)

    routes = admin_routes(
        lambda: holder["registry"], settings, lambda _, job: queued.append(job), probe=probe
    )
    app = make_app(routes, lifespan=lifespan)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def test_admin_api_and_cli(shards, registry, router_settings, http, capsys):
    s1, s2 = shards["s1"], shards["s2"]
    await register(registry, s1)
    # some of them move when s2 joins: random UIDs alone left none to move 1 time in 64
    moving = uids_placed(2, "s2", ["s1", "s2"])
    await store_studies(http, shards, ["s1"], 6, uids=moving)
    queued: list[int] = []
    with admin_server(router_settings, queued) as url:
        async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as api:
            r = await api.post("/admin/shards", json={"name": "s2"})
            assert r.status_code == 400 and "ingest_url" in r.text
            dead = {"name": "s2", "ingest_url": "http://127.0.0.1:9", "index_url": s2.index_url}
            r = await api.post("/admin/shards", json={**dead, "retrieve_url": s2.retrieve_url})
            assert r.status_code == 400 and "does not answer" in r.text
            assert await registry.shard("s2") is None  # nothing registered
            body = {
                "name": "s2",
                "ingest_url": s2.ingest_url,
                "index_url": s2.index_url,
                "retrieve_url": s2.retrieve_url,
            }
            r = await api.post("/admin/shards", json=body)
            assert r.status_code == 202, r.text
            job = r.json()
            assert r.headers["location"] == f"/admin/rebalance/{job['id']}"
            assert job["state"] == "pending" and queued == [job["id"]]
            assert (await api.post("/admin/shards", json=body)).status_code == 409
            assert (await api.post("/admin/shards/s1/drain")).status_code == 409  # one at a time
            assert (await api.get("/admin/rebalance/999")).status_code == 404
            shard_rows = (await api.get("/admin/shards")).json()
            assert [(s["name"], s["state"]) for s in shard_rows] == [
                ("s1", "active"),
                ("s2", "joining"),
            ]

            runner = asyncio.create_task(JobRunner(router_settings, registry, http).run(job["id"]))
            code = await asyncio.to_thread(
                shardctl.main, ["--router", url, "status", str(job["id"]), "--follow"]
            )
            assert code == 0 and await runner == "done"
            lines = capsys.readouterr().err.strip().splitlines()  # not a TTY: plain lines
            assert lines[-1].startswith(f"job {job['id']} add s2: done")
            done = (await api.get(f"/admin/rebalance/{job['id']}")).json()
            assert done["moved"] == done["total"] > 0 and done["eta"] == 0.0
            assert f"{done['total']}/{done['total']} instances" in lines[-1]

            r = await api.post("/admin/shards/s2/drain")
            assert r.status_code == 202, r.text
            drain = r.json()
            assert await JobRunner(router_settings, registry, http).run(drain["id"]) == "done"
            assert await asyncio.to_thread(shardctl.main, ["--router", url, "status"]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith(f"job {drain['id']} drain s2: done")
            assert (await api.post("/admin/shards/s1/drain")).status_code == 409  # the last one
