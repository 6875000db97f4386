"""QIDO-RS fan-out of the router over three real index services (served by uvicorn in
this process, reached over TCP by the router's aiohttp session), each on its own
PostgreSQL database, against a fourth index holding everything (the oracle).

Every shard and the oracle run with a small server maximum (``qido_max_limit``), so the
PS3.18 8.3.4.4.1 Warning and pages deeper than one shard request are exercised too. A
shard that hangs, cannot be reached or answers malformed JSON is left out with a
Warning; none answering is 503.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl

import asyncpg
import httpx
import pytest
from pydicom.dataset import Dataset
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.index.app import create_app as create_index
from tessera.router import qido_fanout
from tessera.router.app import create_app as create_router
from tessera.router.placement import place
from tessera.router.shards import Shard, ShardMap
from tessera.shared.http import DICOM_JSON
from tessera.shared.messages import IndexInstance
from tessera.shared.settings import Settings
from tests.support.qido_archive import MR, index, indexed
from tests.support.servers import with_database
from tests.support.serving import closed_port_url, serving

MAX = 5
NAMES = ("a", "b", "c")
PREFIX = "/dicom-web"
ROUTER = "http://router"


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


class Hosts:
    """What the shards' index services do: ``hung`` ones never answer, ``garbled`` ones
    answer a truncated JSON array; ``asked`` logs the shard and query of each request.
    (A shard that cannot be reached is one the router knows at a closed port.)"""

    def __init__(self) -> None:
        self.hung: set[str] = set()
        self.garbled: set[str] = set()
        self.asked: list[tuple[str, dict[str, str]]] = []

    def app(self, name: str, app: ASGIApp) -> ASGIApp:
        async def shard(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
                self.asked.append((name, dict(query)))
                if name in self.hung:
                    await asyncio.sleep(60)
                if name in self.garbled:
                    junk = Response(b'[{"0020000D": {"vr": "UI", "Val', media_type=DICOM_JSON)
                    return await junk(scope, receive, send)
            await app(scope, receive, send)

        return shard


async def _databases(postgres_dsn: str, template: str, count: int) -> list[str]:
    conn = await asyncpg.connect(postgres_dsn)
    names = [f"fan_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    return names


def _router(urls: dict[str, str]) -> Starlette:
    shards = ShardMap({s: Shard(s, url, url, url) for s, url in urls.items()})
    return create_router(Settings(qido_max_limit=MAX, router_shard_timeout=0.5), shards=shards)


@asynccontextmanager
async def _client(router: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with router.router.lifespan_context(router):
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url=ROUTER + PREFIX) as client:
            yield client


@dataclass
class Setup:
    client: httpx.AsyncClient  # the router in front of the three shards
    oracle: httpx.AsyncClient  # one index service holding everything
    hosts: Hosts
    urls: dict[str, str]


@pytest.fixture(scope="module")
async def setup(postgres_dsn: str, template_database: str) -> AsyncIterator[Setup]:
    names = await _databases(postgres_dsn, template_database, 4)
    dsns = [with_database(postgres_dsn, n) for n in names]
    by_shard: dict[str, list[IndexInstance]] = {s: [] for s in NAMES}
    for inst in INSTANCES:
        by_shard[place(inst.study_instance_uid, NAMES)].append(inst)
    assert all(by_shard.values())
    for shard, dsn in zip(NAMES, dsns, strict=False):
        await index(dsn, by_shard[shard])
    await index(dsns[3], INSTANCES)
    hosts = Hosts()
    async with AsyncExitStack() as stack:
        urls = {}
        for name, dsn in zip(NAMES, dsns, strict=False):
            app = create_index(Settings(database_url=dsn, qido_max_limit=MAX))
            urls[name] = await stack.enter_async_context(serving(hosts.app(name, app)))
        everything = create_index(Settings(database_url=dsns[3], qido_max_limit=MAX))
        await stack.enter_async_context(everything.router.lifespan_context(everything))
        client = await stack.enter_async_context(_client(_router(urls)))
        oracle = httpx.AsyncClient(  # as the router would call it: URLs come out the same
            transport=httpx.ASGITransport(app=everything),
            base_url=ROUTER,
            headers={"X-Forwarded-Prefix": PREFIX},
        )
        stack.push_async_callback(oracle.aclose)
        yield Setup(client, oracle, hosts, urls)
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
async def test_pages_and_limit_warnings_equal_one_index(
    setup: Setup, path: str, params: dict
) -> None:
    client, oracle = setup.client, setup.oracle
    pages = [{}, {"offset": "3"}, {"offset": "12"}, {"offset": "40"}]
    pages += [{"limit": str(n), "offset": str(o)} for n in (2, 5, 9) for o in (0, 4, 7, 11)]
    for page in pages:
        query = {**params, **page}
        mine = await client.get(path, params=query)
        theirs = await oracle.get(path, params=query)
        assert mine.status_code == theirs.status_code, mine.text
        assert mine.status_code in (200, 204), mine.text  # 204: none (PS3.18 8.3.4.4.1)
        assert results(mine) == results(theirs), query
        # PS3.18 8.3.4.4.1: the same Warning, with the same count of remaining results
        assert mine.headers.get_list("warning") == theirs.headers.get_list("warning"), query


@pytest.mark.parametrize(
    ("path", "params"),
    [("/studies", {}), ("/series", {"PatientID": "FAN1"}), ("/instances", {})],
)
async def test_shards_asked_one_result_first_are_asked_again_until_the_page_is_known(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, path: str, params: dict
) -> None:
    """The first request asks each shard its share only (here: 1); a shard is asked
    again, from where it stopped, while its next results may belong in the page."""
    client, oracle, hosts = setup.client, setup.oracle, setup.hosts
    monkeypatch.setattr(qido_fanout, "share", lambda need, shards: 1)
    for limit, offset in [(2, 0), (4, 0), (4, 3), (3, 10), (4, 40)]:
        query = {**params, "limit": str(limit), "offset": str(offset)}
        hosts.asked.clear()
        mine = await client.get(path, params=query)
        theirs = await oracle.get(path, params=query)
        assert mine.status_code in (200, 204), mine.text
        assert results(mine) == results(theirs), query
        assert mine.headers.get_list("warning") == theirs.headers.get_list("warning") == []
        assert len(hosts.asked) > len(NAMES)  # one result of each is never the page
        first = [q for _, q in hosts.asked[: len(NAMES)]]
        assert all(q["limit"] == "1" and q["offset"] == "0" for q in first)
        for host in NAMES:  # each request goes on from the shard's previous one
            asked = [q for h, q in hosts.asked if h == host]
            starts = [int(q["offset"]) for q in asked]
            ends = [int(q["offset"]) + int(q["limit"]) for q in asked]
            assert starts == [0, *ends[:-1]]


async def _everything(oracle: httpx.AsyncClient) -> list[dict]:
    found = []
    for offset in range(0, len(INSTANCES), MAX):
        found += results(await oracle.get("/studies", params={"offset": str(offset)}))
    return found


async def test_a_shard_answering_malformed_json_is_left_out_with_a_warning(
    setup: Setup,
) -> None:
    setup.hosts.garbled.add("a")
    try:
        r = await setup.client.get("/studies", params={"limit": "4"})
    finally:
        setup.hosts.garbled.clear()
    assert r.status_code == 200
    everything = await _everything(setup.oracle)
    assert (
        results(r) == [x for x in everything if place(x["0020000D"]["Value"][0], NAMES) != "a"][:4]
    )
    warnings = r.headers.get_list("warning")
    assert any("shard a answered malformed DICOM JSON" in w for w in warnings), warnings


async def test_a_hung_or_unreachable_shard_is_left_out_with_a_warning(setup: Setup) -> None:
    everything = await _everything(setup.oracle)
    setup.hosts.hung.add("b")
    try:
        async with _client(_router({**setup.urls, "c": closed_port_url()})) as client:
            r = await client.get("/studies")
    finally:
        setup.hosts.hung.clear()
    assert r.status_code == 200
    expected = [x for x in everything if place(x["0020000D"]["Value"][0], NAMES) == "a"]
    assert results(r) == expected[:MAX]
    warnings = r.headers.get_list("warning")
    assert any('shard b did not answer in time: its results are missing"' in w for w in warnings)
    assert any("shard c is unreachable" in w and "missing" in w for w in warnings)


async def test_no_shard_answering_is_503() -> None:
    async with _client(_router({s: closed_port_url() for s in NAMES})) as client:
        r = await client.get("/studies")
    assert r.status_code == 503 and r.headers["retry-after"]


async def test_a_bad_query_is_the_shards_400(setup: Setup) -> None:
    mine = await setup.client.get("/studies", params={"limit": "x"})
    theirs = await setup.oracle.get("/studies", params={"limit": "x"})
    assert mine.status_code == theirs.status_code == 400
    assert mine.headers["content-type"] == theirs.headers["content-type"]
    assert mine.content == theirs.content


def results(response: httpx.Response) -> list[dict]:
    """A search's results: none for 204 (PS3.18 8.3.4.4.1), else the JSON array."""
    if response.status_code == 204:
        assert response.content == b""
        return []
    return response.json()  # type: ignore[no-any-return]
