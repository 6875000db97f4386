"""QIDO-RS fan-out of the router over three real index services (in process), each on its
own PostgreSQL database, against a fourth index holding everything (the oracle).

Every shard and the oracle run with a small server maximum (``qido_max_limit``), so the
PS3.18 8.3.4.4.1 Warning and pages deeper than one shard request are exercised too. A
shard that hangs or cannot be reached is left out with a Warning; none answering is 503.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
import httpx
import pytest
from pydicom.dataset import Dataset

from tessera.index.app import create_app as create_index
from tessera.router.app import create_app as create_router
from tessera.router.placement import place
from tessera.router.shards import Shard, ShardMap
from tessera.shared.messages import IndexInstance
from tessera.shared.settings import Settings
from tests.conftest import with_database
from tests.integration.qido_archive import MR, index, indexed

MAX = 5
NAMES = ("a", "b", "c")
PREFIX = "/dicom-web"


def _instance(n: int, k: int) -> IndexInstance:
    study = f"1.2.826.0.9.7.{n}"
    ds = Dataset()
    ds.SOPClassUID, ds.Modality = MR, "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, f"{study}.{k}"
    ds.SOPInstanceUID = f"{study}.{k}.1"
    ds.StudyDate, ds.StudyTime = ["20240101", "20240102", ""][n % 3], ["", "0900"][n % 2]
    ds.PatientName, ds.PatientID = f"Fan^Out{n % 2}", f"FAN{n % 2}"
    ds.SeriesNumber, ds.InstanceNumber = k, 1
    return indexed(ds)


INSTANCES = [_instance(n, k) for n in range(23) for k in (1, 2)]


class Hosts(httpx.AsyncBaseTransport):
    """Sends each request to the in-process app of its host; ``down`` hosts refuse,
    ``hung`` hosts never answer."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self.apps = apps
        self.down: set[str] = set()
        self.hung: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.hung:
            await asyncio.sleep(60)
        return await self.apps[host].handle_async_request(request)


async def _databases(postgres_dsn: str, template: str, count: int) -> list[str]:
    conn = await asyncpg.connect(postgres_dsn)
    names = [f"fan_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return names


@asynccontextmanager
async def _started(app) -> AsyncIterator[httpx.ASGITransport]:  # type: ignore[no-untyped-def]
    async with app.router.lifespan_context(app):
        yield httpx.ASGITransport(app=app)


@pytest.fixture(scope="module")
async def setup(postgres_dsn: str, template_database: str) -> AsyncIterator[tuple]:
    names = await _databases(postgres_dsn, template_database, 4)
    dsns = [with_database(postgres_dsn, n) for n in names]
    by_shard: dict[str, list[IndexInstance]] = {s: [] for s in NAMES}
    for inst in INSTANCES:
        by_shard[place(inst.study_instance_uid, NAMES)].append(inst)
    assert all(by_shard.values())
    for shard, dsn in zip(NAMES, dsns, strict=False):
        await index(dsn, by_shard[shard])
    await index(dsns[3], INSTANCES)
    async with AsyncExitStack() as stack:
        apps = {}
        for host, dsn in zip([*NAMES, "oracle"], dsns, strict=True):
            app = create_index(Settings(database_url=dsn, qido_max_limit=MAX))
            apps[host] = await stack.enter_async_context(_started(app))
        hosts = Hosts(apps)
        shards = ShardMap({s: Shard(s, f"http://{s}", f"http://{s}", f"http://{s}") for s in NAMES})
        settings = Settings(qido_max_limit=MAX, router_shard_timeout=0.5)
        router = create_router(settings, shards=shards, transport=hosts)
        await stack.enter_async_context(router.router.lifespan_context(router))
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=router), base_url="http://router" + PREFIX
        )
        oracle = httpx.AsyncClient(  # as the router would call it: URLs come out the same
            transport=apps["oracle"],
            base_url="http://router",
            headers={"X-Forwarded-Prefix": PREFIX},
        )
        stack.push_async_callback(client.aclose)
        stack.push_async_callback(oracle.aclose)
        yield client, oracle, hosts
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/studies", {}),
        ("/studies", {"includefield": "00201200,00201202,00201204"}),
        ("/series", {"PatientID": "FAN1"}),
        ("/instances", {}),
    ],
)
async def test_pages_and_limit_warnings_equal_one_index(setup, path: str, params: dict) -> None:
    client, oracle, _ = setup
    pages = [{}, {"offset": "3"}, {"offset": "12"}, {"offset": "40"}]
    pages += [{"limit": str(n), "offset": str(o)} for n in (2, 5, 9) for o in (0, 4, 7, 11)]
    for page in pages:
        query = {**params, **page}
        mine = await client.get(path, params=query)
        theirs = await oracle.get(path, params=query)
        assert mine.status_code == theirs.status_code == 200, mine.text
        assert mine.json() == theirs.json(), query
        # PS3.18 8.3.4.4.1: the same Warning, with the same count of remaining results
        assert mine.headers.get_list("warning") == theirs.headers.get_list("warning"), query


async def test_a_hung_or_unreachable_shard_is_left_out_with_a_warning(setup) -> None:
    client, oracle, hosts = setup
    everything = []
    for offset in range(0, len(INSTANCES), MAX):
        everything += (await oracle.get("/studies", params={"offset": str(offset)})).json()
    hosts.hung.add("b")
    hosts.down.add("c")
    try:
        r = await client.get("/studies")
    finally:
        hosts.hung.clear()
        hosts.down.clear()
    assert r.status_code == 200
    expected = [x for x in everything if place(x["0020000D"]["Value"][0], NAMES) == "a"]
    assert r.json() == expected[:MAX]
    warnings = r.headers.get_list("warning")
    assert any('shard b did not answer in time: its results are missing"' in w for w in warnings)
    assert any("shard c is unreachable" in w and "missing" in w for w in warnings)


async def test_no_shard_answering_is_503(setup) -> None:
    client, _, hosts = setup
    hosts.down.update(NAMES)
    try:
        r = await client.get("/studies")
    finally:
        hosts.down.clear()
    assert r.status_code == 503 and r.headers["retry-after"]


async def test_a_bad_query_is_the_shards_400(setup) -> None:
    client, oracle, _ = setup
    mine = await client.get("/studies", params={"limit": "x"})
    theirs = await oracle.get("/studies", params={"limit": "x"})
    assert mine.status_code == theirs.status_code == 400
