"""The router in front of stand-in shard services, all served by uvicorn in this process.

The stand-ins are small Starlette apps on free loopback ports that record what reaches
them; the real ingest/index/retrieve behind the router are tested end to end elsewhere.
Streaming is shown without timing: the far side waits for the first chunk to arrive
before the near side sends the rest, which would deadlock (and time out) if the router
held a body.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client import REGISTRY
from pydicom.uid import generate_uid
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tessera.router.app import create_app
from tessera.router.placement import place
from tessera.router.shards import Shard, ShardMap
from tessera.shared.settings import Settings
from tests.support.serving import closed_port_url, serving

PREFIX = "/dicom-web"
ORIGIN = "https://viewer.example.org"
MIB = 1024 * 1024
STEP = 10.0  # seconds any one wait may take before the test fails instead of hanging

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
INSTANCE = "1.2.826.0.1.3680043.8.498.3"


# --- stand-in shard services -------------------------------------------------------------


@dataclass
class Seen:
    """One request as a stand-in received it."""

    method: str
    raw_path: bytes
    query_string: bytes
    headers: list[tuple[str, str]]
    size: int = 0
    sha256: str = ""
    disconnected: bool = False

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


@dataclass
class StandIn:
    """A stand-in shard service.

    POST/PUT: reads the body as a stream and answers its size and SHA-256; an upload
    cut short sets ``aborted``. GET .../big: streams ``big_size`` bytes, pausing after
    the first chunk until ``release`` is set. GET .../endless: streams until the client
    goes away, then sets ``closed``. Any other GET: echoes the request as JSON with a
    set of DICOMweb response headers (``?status=`` chooses the status code).
    """

    name: str
    seen: list[Seen] = field(default_factory=list)
    first_chunk: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: asyncio.Event = field(default_factory=asyncio.Event)
    big_size: int = 20 * MIB

    def app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return PlainTextResponse("ok\n")

        async def anything(request: Request) -> Response:
            seen = Seen(
                request.method,
                request.scope["raw_path"],
                request.scope["query_string"],
                [(k.decode(), v.decode()) for k, v in request.headers.raw],
            )
            self.seen.append(seen)
            if request.method in ("POST", "PUT"):
                digest = hashlib.sha256()
                try:
                    async for chunk in request.stream():
                        if chunk:
                            self.first_chunk.set()
                        digest.update(chunk)
                        seen.size += len(chunk)
                except ClientDisconnect:
                    seen.disconnected = True
                    self.aborted.set()
                    return Response(status_code=400)
                seen.sha256 = digest.hexdigest()
                return Response(
                    json.dumps({"service": self.name, "size": seen.size, "sha256": seen.sha256}),
                    media_type="application/dicom+json",
                )
            if request.url.path.endswith("/big"):
                return StreamingResponse(self._big(), media_type="application/octet-stream")
            if request.url.path.endswith("/endless"):
                return StreamingResponse(self._endless(), media_type="application/octet-stream")
            echo = {"service": self.name, "path": request.scope["raw_path"].decode()}
            response = Response(
                json.dumps(echo),
                status_code=int(request.query_params.get("status", "200")),
                media_type="application/dicom+json",
                headers={"ETag": '"v1"', "Content-Location": f"/studies/{STUDY}"},
            )
            response.headers.append("Warning", '299 tessera "first warning"')
            response.headers.append("Warning", '299 tessera "second warning"')
            response.headers.append("Keep-Alive", "timeout=99")
            return response

        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", healthz),
                Route("/{path:path}", anything, methods=methods),
            ]
        )

    async def _big(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(big_chunks(self.big_size)):
            yield chunk
            if i == 0:
                async with asyncio.timeout(STEP):
                    await self.release.wait()

    async def _endless(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"\0" * 65536
                await asyncio.sleep(0.001)
        finally:
            self.closed.set()


def big_chunks(size: int, seed: int = 7) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in 1 MiB chunks, the same for the same seed."""
    rng = random.Random(seed)
    while size > 0:
        n = min(MIB, size)
        yield rng.randbytes(n)
        size -= n


def big_digest(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in big_chunks(size):
        digest.update(chunk)
    return digest.hexdigest()


# --- fixtures -----------------------------------------------------------------------------


@dataclass
class Cluster:
    router: str
    ingest: StandIn
    index: StandIn
    retrieve: StandIn
    urls: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.router + PREFIX, timeout=STEP)

    def reset(self) -> None:
        for stand_in in (self.ingest, self.index, self.retrieve):
            stand_in.seen.clear()
            stand_in.first_chunk.clear()
            stand_in.release.clear()
            stand_in.closed.clear()
            stand_in.aborted.clear()


@pytest.fixture(scope="module")
async def running() -> AsyncIterator[Cluster]:
    ingest, index, retrieve = StandIn("ingest"), StandIn("index"), StandIn("retrieve")
    async with (
        serving(ingest.app()) as ingest_url,
        serving(index.app()) as index_url,
        serving(retrieve.app()) as retrieve_url,
    ):
        settings = Settings(
            ingest_url=ingest_url,
            index_url=index_url,
            retrieve_url=retrieve_url,
            cors_origins=(ORIGIN,),
        )
        async with serving(create_app(settings)) as router_url:
            urls = {"ingest": ingest_url, "index": index_url, "retrieve": retrieve_url}
            yield Cluster(router_url, ingest, index, retrieve, urls)


@pytest.fixture
def cluster(running: Cluster) -> Cluster:
    running.reset()
    return running


@pytest.fixture(scope="module")
async def router_without_shards() -> AsyncIterator[str]:
    down = closed_port_url()
    settings = Settings(ingest_url=down, index_url=down, retrieve_url=down)
    async with serving(create_app(settings)) as url:
        yield url


# --- routing -------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/studies", "ingest"),
    ("POST", f"/studies/{STUDY}", "ingest"),
    ("GET", "/studies", "index"),
    ("GET", "/series", "index"),
    ("GET", "/instances", "index"),
    ("GET", f"/studies/{STUDY}/series", "index"),
    ("GET", f"/studies/{STUDY}/instances", "index"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances", "index"),
    ("GET", f"/studies/{STUDY}", "retrieve"),
    ("GET", f"/studies/{STUDY}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/rendered", "retrieve"),
    ("GET", f"/studies/{STUDY}/thumbnail", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/metadata", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/frames/1,2,3", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/rendered", "retrieve"),
    ("GET", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}/bulk/7FE00010", "retrieve"),
    ("DELETE", f"/studies/{STUDY}", "index"),
    ("DELETE", f"/studies/{STUDY}/series/{SERIES}", "index"),
    ("DELETE", f"/studies/{STUDY}/series/{SERIES}/instances/{INSTANCE}", "index"),
]


@pytest.mark.parametrize(("method", "path", "service"), ROUTES)
async def test_each_transaction_goes_to_its_service(
    cluster: Cluster, method: str, path: str, service: str
) -> None:
    async with cluster.client() as client:
        content = b"\x00" * 16 if method == "POST" else None
        r = await client.request(method, path, content=content)
    assert r.status_code == 200, r.text
    assert r.json()["service"] == service
    stand_in = getattr(cluster, service)
    assert [s.raw_path for s in stand_in.seen] == [path.encode()]
    others = {"ingest", "index", "retrieve"} - {service}
    assert all(not getattr(cluster, other).seen for other in others)


async def test_a_path_that_is_not_a_study_uid_is_refused_at_the_router(cluster: Cluster) -> None:
    async with cluster.client() as client:
        r = await client.get("/studies/not-a-uid/series")
    assert r.status_code == 400
    assert not cluster.index.seen and not cluster.retrieve.seen


async def test_unrouted_method_is_405(cluster: Cluster) -> None:
    async with cluster.client() as client:
        r = await client.put(f"/studies/{STUDY}/series", content=b"x")
    assert r.status_code == 405


# --- bodies --------------------------------------------------------------------------------


async def _upload(stand_in: StandIn, size: int) -> AsyncIterator[bytes]:
    """The body in 1 MiB chunks; the rest only after the shard has seen the first."""
    for i, chunk in enumerate(big_chunks(size)):
        yield chunk
        if i == 0:
            async with asyncio.timeout(STEP):
                await stand_in.first_chunk.wait()


async def test_a_50_mib_stow_streams_up_unchanged(cluster: Cluster) -> None:
    size = 50 * MIB
    headers = {
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0',
        "Content-Length": str(size),
    }
    async with cluster.client() as client:
        r = await client.post("/studies", content=_upload(cluster.ingest, size), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"service": "ingest", "size": size, "sha256": big_digest(size)}
    (seen,) = cluster.ingest.seen
    assert seen.header("content-length") == [str(size)]
    assert seen.header("content-type") == [headers["Content-Type"]]
    assert seen.header("transfer-encoding") == []


async def test_a_chunked_stow_streams_up_chunked(cluster: Cluster) -> None:
    size = 5 * MIB + 123
    async with cluster.client() as client:
        r = await client.post(f"/studies/{STUDY}", content=_upload(cluster.ingest, size))
    assert r.json() == {"service": "ingest", "size": size, "sha256": big_digest(size)}
    (seen,) = cluster.ingest.seen
    assert seen.header("transfer-encoding") == ["chunked"]
    assert seen.header("content-length") == []


async def test_an_upload_the_client_abandons_is_abandoned_upstream(cluster: Cluster) -> None:
    host, port = cluster.router.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {PREFIX}/studies HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {10 * MIB}\r\n\r\n"
    )
    writer.write(head.encode() + b"x" * MIB)
    await writer.drain()
    async with asyncio.timeout(STEP):
        await cluster.ingest.first_chunk.wait()
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(STEP):
        await cluster.ingest.aborted.wait()
    assert cluster.ingest.seen[0].disconnected
    assert cluster.ingest.seen[0].size < 10 * MIB  # never presented as a whole body
    async with cluster.client() as client:
        assert (await client.get("/studies")).status_code == 200


async def test_a_response_streams_down_as_the_shard_writes_it(cluster: Cluster) -> None:
    size = cluster.retrieve.big_size
    digest, received = hashlib.sha256(), 0
    async with (
        cluster.client() as client,
        client.stream("GET", f"/studies/{STUDY}/series/{SERIES}/big") as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/octet-stream"
        async with asyncio.timeout(STEP):
            async for chunk in r.aiter_raw():
                digest.update(chunk)
                received += len(chunk)
                cluster.retrieve.release.set()  # only now does the shard send the rest
    assert received == size
    assert digest.hexdigest() == big_digest(size)


async def test_a_client_that_goes_away_closes_the_shard_response(cluster: Cluster) -> None:
    async with (
        cluster.client() as client,
        client.stream("GET", f"/studies/{STUDY}/endless") as r,
    ):
        async for _ in r.aiter_raw():
            break
        await asyncio.sleep(0.3)  # the router blocks writing to us, with more to send
    async with asyncio.timeout(STEP):
        await cluster.retrieve.closed.wait()


# --- headers and query strings -------------------------------------------------------------


async def test_request_headers_are_forwarded_and_x_forwarded_set(cluster: Cluster) -> None:
    headers = {
        "Host": "pacs.example.org:8443",
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        "Authorization": "Bearer t0ken",
        "Range": "bytes=0-99",
        "If-None-Match": '"v0"',
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "for this connection only",
        "Forwarded": "host=evil.example;proto=https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-For": "10.1.2.3",
        "X-Tessera-Move": "shard-9",  # only the rebalance marks a move (change feed)
    }
    async with cluster.client() as client:
        r = await client.get(f"/studies/{STUDY}/series/{SERIES}", headers=headers)
    assert r.status_code == 200
    (seen,) = cluster.retrieve.seen
    for name in ("Accept", "Range", "If-None-Match"):
        assert seen.header(name.lower()) == [headers[name]]
    # the client's credential stays at the router (the shards get the router's own)
    assert seen.header("authorization") == []
    assert seen.header("x-forwarded-proto") == ["http"]
    assert seen.header("x-forwarded-host") == ["pacs.example.org:8443"]
    assert seen.header("x-forwarded-prefix") == [PREFIX]
    assert seen.header("x-forwarded-for") == ["10.1.2.3"]
    assert seen.header("x-hop") == []
    assert seen.header("x-tessera-move") == []
    assert seen.header("forwarded") == []
    assert seen.header("host") != ["pacs.example.org:8443"]


async def test_x_forwarded_for_is_the_client_when_it_sent_none(cluster: Cluster) -> None:
    async with cluster.client() as client:
        await client.get("/studies")
    (seen,) = cluster.index.seen
    assert seen.header("x-forwarded-for") == ["127.0.0.1"]
    assert seen.header("x-forwarded-host") == [client.base_url.netloc.decode()]


async def test_response_status_and_headers_come_back(cluster: Cluster) -> None:
    async with cluster.client() as client:
        r = await client.get(f"/studies/{STUDY}/metadata", params={"status": "206"})
    assert r.status_code == 206
    assert r.headers["content-type"] == "application/dicom+json"
    assert r.headers["etag"] == '"v1"'
    assert r.headers["content-location"] == f"/studies/{STUDY}"
    assert r.headers.get_list("warning") == [
        '299 tessera "first warning"',
        '299 tessera "second warning"',
    ]
    assert "keep-alive" not in r.headers  # hop-by-hop
    assert len(r.headers.get_list("date")) == 1
    assert len(r.headers.get_list("server")) == 1


async def test_the_router_adds_no_request_headers_of_its_own(cluster: Cluster) -> None:
    # no User-Agent, Accept, Accept-Encoding (the shard would compress for a client that
    # never asked) or Content-Type of the router's HTTP client
    async with cluster.client() as client:
        for name in ("user-agent", "accept", "accept-encoding"):
            del client.headers[name]
        await client.post(f"/studies/{STUDY}", content=b"\0" * 16)
        await client.get(f"/studies/{STUDY}/metadata")
    for seen in (*cluster.ingest.seen, *cluster.retrieve.seen):
        names = {name for name, _ in seen.headers}
        assert not names & {"user-agent", "accept", "accept-encoding", "content-type", "cookie"}


async def test_head_is_answered_with_the_shards_headers_and_no_body(cluster: Cluster) -> None:
    cluster.retrieve.release.set()  # the stand-in writes its whole body; no one reads it
    async with cluster.client() as client:
        small = await client.head(f"/studies/{STUDY}/metadata")
        big = await client.head(f"/studies/{STUDY}/series/{SERIES}/big")
        after = await client.get(f"/studies/{STUDY}/metadata")  # the pool is still good
    assert small.status_code == 200 and small.content == b""
    assert small.headers["etag"] == '"v1"'
    assert big.status_code == 200 and big.content == b""
    assert big.headers["content-type"] == "application/octet-stream"
    assert [s.method for s in cluster.retrieve.seen] == ["HEAD", "HEAD", "GET"]
    assert after.json()["service"] == "retrieve"


async def test_shard_latency_is_observed_by_service_and_status(cluster: Cluster) -> None:
    name = "tessera_router_upstream_duration_seconds_count"

    def count(service: str, status: str) -> float:
        labels = {"upstream": cluster.urls[service], "status": status}
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = count("retrieve", "206"), count("index", "200")
    async with cluster.client() as client:
        await client.get(f"/studies/{STUDY}/metadata", params={"status": "206"})
        await client.get(f"/studies/{STUDY}/series/{SERIES}/metadata", params={"status": "206"})
        await client.get("/studies")
    assert (count("retrieve", "206"), count("index", "200")) == (before[0] + 2, before[1] + 1)


@pytest.mark.parametrize(
    "query",
    [
        b"includefield=a%2Cb",
        b"PatientName=A*&PatientName=B%5E&limit=10&offset=20",
        b"00100020=x%20y&fuzzymatching=true&includefield=00081030&includefield=all",
        b"StudyDate=20200101-20201231&ModalitiesInStudy=CT%5CMR",
    ],
)
async def test_query_strings_pass_unchanged(cluster: Cluster, query: bytes) -> None:
    async with cluster.client() as client:
        url = client.base_url.copy_with(raw_path=f"{PREFIX}/studies?".encode() + query)
        r = await client.get(url)
    assert r.status_code == 200
    (seen,) = cluster.index.seen
    assert seen.raw_path == b"/studies"
    assert seen.query_string == query


# --- shard down ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/studies"), ("POST", "/studies"), ("GET", f"/studies/{STUDY}/metadata")],
)
async def test_a_shard_that_is_down_is_503_with_retry_after(
    router_without_shards: str, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=router_without_shards + PREFIX, timeout=STEP) as c:
        r = await c.request(method, path, content=b"body" if method == "POST" else None)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0


async def test_readyz_asks_every_shard_service(
    cluster: Cluster, router_without_shards: str
) -> None:
    async with httpx.AsyncClient(timeout=STEP) as client:
        up = await client.get(cluster.router + "/readyz")
        down = await client.get(router_without_shards + "/readyz")
        alive = await client.get(router_without_shards + "/healthz")
    assert up.status_code == 200
    assert up.json() == {
        "status": "ready",
        "shard-0.ingest": "ok",
        "shard-0.index": "ok",
        "shard-0.retrieve": "ok",
    }
    assert down.status_code == 503
    assert "shard-0.ingest" in down.json()["error"]
    assert alive.status_code == 200


# --- CORS ----------------------------------------------------------------------------------


async def test_cors_preflight_is_answered_by_the_router(cluster: Cluster) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, range, if-none-match",
    }
    async with cluster.client() as client:
        r = await client.options("/studies", headers=headers)
        refused = await client.options("/studies", headers={**headers, "Origin": "https://x.io"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "accept", "content-type", "range", "if-none-match"} <= allowed
    assert refused.status_code == 400
    assert not (cluster.ingest.seen or cluster.index.seen or cluster.retrieve.seen)


async def test_cors_exposes_the_dicomweb_response_headers(cluster: Cluster) -> None:
    async with cluster.client() as client:
        r = await client.get("/studies", headers={"Origin": ORIGIN})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"warning", "etag", "content-location", "content-type", "content-length"} <= exposed


@pytest.mark.parametrize(("method", "path", "service"), ROUTES)
async def test_every_dicomweb_route_answers_preflight_without_auth(
    cluster: Cluster, method: str, path: str, service: str
) -> None:
    # what a viewer on another origin sends before a request with Authorization and a
    # non-safelisted Accept (OHIF's quoted multipart Accept for frames)
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, accept, content-type",
    }
    async with cluster.client() as client:
        r = await client.options(path, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert method in r.headers["access-control-allow-methods"]
    assert not (cluster.ingest.seen or cluster.index.seen or cluster.retrieve.seen)


@pytest.mark.parametrize(("method", "path", "service"), ROUTES)
async def test_retrieve_responses_carry_a_resource_policy(
    cluster: Cluster, method: str, path: str, service: str
) -> None:
    # a cross-origin-isolated viewer (COEP require-corp) loads <img> thumbnails from us
    async with cluster.client() as client:
        r = await client.request(method, path, content=b"\0" if method == "POST" else None)
    policy = r.headers.get("cross-origin-resource-policy")
    assert policy == ("cross-origin" if service == "retrieve" else None)


async def test_without_cors_origins_resources_stay_same_origin() -> None:
    stand_in = StandIn("retrieve")
    async with serving(stand_in.app()) as url:
        settings = Settings(ingest_url=url, index_url=url, retrieve_url=url, cors_origins=())
        async with serving(create_app(settings)) as router_url:
            async with httpx.AsyncClient(base_url=router_url + PREFIX, timeout=STEP) as client:
                r = await client.get(f"/studies/{STUDY}/series/{SERIES}/thumbnail")
    assert r.headers["cross-origin-resource-policy"] == "same-origin"


async def test_a_delete_of_a_study_a_rebalance_moves_is_503_until_it_is_moved() -> None:
    """Issue 13: a delete racing a study's copy to its new shard could leave the copy
    there; while a transition will place a study elsewhere, or its move holds it locked,
    its DELETE is 503 + Retry-After; a study that stays put is deleted as usual."""
    index = StandIn("index")
    async with serving(index.app()) as index_url:
        down = closed_port_url()
        names = ("a", "b")
        shards = {n: Shard(n, down, index_url, down) for n in names}
        uids = [generate_uid() for _ in range(64)]
        moving = next(u for u in uids if place(u, ("a",)) != place(u, names))
        staying = next(u for u in uids if place(u, ("a",)) == place(u, names))
        joining = ShardMap(shards, placement=("a",), next_placement=names)
        locked = ShardMap(
            shards, overrides={staying: "a"}, locked=frozenset({staying}), placement=("a",)
        )
        for shard_map, study, expected in (
            (joining, moving, 503),
            (joining, staying, 200),
            (locked, staying, 503),
        ):
            async with serving(create_app(Settings(), shards=shard_map)) as router:
                async with httpx.AsyncClient(base_url=router + PREFIX, timeout=STEP) as client:
                    r = await client.delete(f"/studies/{study}/series/{SERIES}")
            assert r.status_code == expected, r.text
            if expected == 503:
                assert int(r.headers["retry-after"]) > 0
                assert "being moved" in r.text
    assert len(index.seen) == 1 and index.seen[0].method == "DELETE"
