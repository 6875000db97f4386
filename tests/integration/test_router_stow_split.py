"""The router's STOW-RS split (PS3.18 10.5) over stand-in ingest services on loopback TCP.

Three stand-ins (uvicorn in this process, reached through the router's aiohttp session)
read each request as the real ingest does (:func:`tessera.shared.multipart.read_parts`)
and answer a PS3.18 10.5.3 response for the parts they got; they record the request
headers and each part's SHA-256. The merge itself is tested in
``tests/unit/test_router_stow_merge.py``; real shards behind the router in
``tests/e2e/test_federation.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydicom.uid import generate_uid
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tessera.router.app import create_app
from tessera.router.placement import place
from tessera.router.shards import Shard, ShardMap
from tessera.shared.multipart import read_parts
from tessera.shared.settings import Settings
from tessera.shared.status import FailureReason
from tessera.shared.uids import read_uids
from tests.support.dicomgen import make_instance, multipart
from tests.support.serving import closed_port_url, serving

PREFIX = "/dicom-web"
NAMES = ("a", "b", "c")
MIB = 1024 * 1024
STEP = 30.0
# what the ingest service expects (PS3.18 10.5.1.1): the router's own boundary, a token
CONTENT_TYPE = re.compile(r'^multipart/related; type="application/dicom"; boundary=[0-9a-f]{32}$')
LATENCY = "tessera_router_upstream_duration_seconds_count"


@dataclass
class Received:
    """One request as a stand-in ingest read it."""

    headers: dict[str, str]
    parts: list[tuple[str, str]]  # (SOPInstanceUID, SHA-256 of the part)


@dataclass
class Ingest:
    """A stand-in ingest service: reads every part, then answers them all stored (200,
    a Warning), or, when ``body`` is set, answers ``status`` with that body."""

    name: str
    url: str = ""
    received: list[Received] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None

    def app(self) -> Starlette:
        async def healthz(request: Request) -> Response:
            return PlainTextResponse("ok\n")

        async def store(request: Request) -> Response:
            got = Received(dict(request.headers), [])
            self.received.append(got)
            reader = read_parts(
                request.stream(),
                request.headers.get("content-type", ""),
                spool_threshold=MIB,
                max_part_size=1 << 30,
                max_total_size=1 << 32,
            )
            referenced, studies = [], set()
            async for part in reader:
                with part:
                    study, sop_class, sop = read_uids(part.file)
                    digest = hashlib.file_digest(part.file, "sha256").hexdigest()
                got.parts.append((sop or "", digest))
                studies.add(study)
                referenced.append(
                    {
                        "00081150": {"vr": "UI", "Value": [sop_class]},
                        "00081155": {"vr": "UI", "Value": [sop]},
                    }
                )
            if self.body is not None:
                return Response(self.body, self.status, media_type="application/dicom+json")
            retrieve = {"vr": "UR"}
            if len(studies) == 1:
                retrieve["Value"] = [f"{self.url}/studies/{studies.pop()}"]
            answer = {"00081190": retrieve, "00081199": {"vr": "SQ", "Value": referenced}}
            response = JSONResponse(answer, media_type="application/dicom+json")
            response.headers.append("Warning", f'299 {self.name} "stored by {self.name}"')
            return response

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Route("/readyz", healthz),
                Route("/studies", store, methods=["POST"]),
            ]
        )


@dataclass
class Split:
    router: str
    ingests: dict[str, Ingest]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.router + PREFIX, timeout=STEP)


def _router(ingests: dict[str, str]) -> Starlette:
    down = closed_port_url()  # the split asks only the ingest services
    shards = ShardMap({n: Shard(n, url, down, down) for n, url in ingests.items()})
    return create_app(Settings(spool_threshold=MIB), shards=shards)


@pytest.fixture(scope="module")
async def running() -> AsyncIterator[Split]:
    ingests = {n: Ingest(n) for n in NAMES}
    async with AsyncExitStack() as stack:
        for ingest in ingests.values():
            ingest.url = await stack.enter_async_context(serving(ingest.app()))
        router = await stack.enter_async_context(
            serving(_router({n: i.url for n, i in ingests.items()}))
        )
        yield Split(router, ingests)


@pytest.fixture
def split(running: Split) -> Split:
    for ingest in running.ingests.values():
        ingest.received.clear()
        ingest.status, ingest.body = 200, None
    return running


def study_on(shard: str, names: tuple[str, ...] = NAMES) -> str:
    """A new StudyInstanceUID that the rendezvous hash places on ``shard``."""
    while place(study := generate_uid(), names) != shard:
        pass
    return study


def read_uids_of(file: bytes) -> str:
    """The SOPInstanceUID of a PS3.10 file."""
    sop = read_uids(io.BytesIO(file))[2]
    assert sop is not None
    return sop


def sop_of(item: dict[str, Any]) -> str:
    return item["00081155"]["Value"][0]


def count(upstream: str, status: str) -> float:
    labels = {"upstream": upstream, "status": status}
    return REGISTRY.get_sample_value(LATENCY, labels) or 0.0


# --- the split -----------------------------------------------------------------------------


async def test_a_mixed_request_goes_to_each_owner_and_comes_back_in_request_order(
    split: Split,
) -> None:
    studies = {n: study_on(n) for n in NAMES}
    order = ["b", "a", "c", "a", "b", "c"]
    files = [make_instance(studies[n], sop=generate_uid()) for n in order]
    sops = [read_uids_of(f) for f in files]
    body, content_type = multipart(files)
    before = {n: count(i.url, "200") for n, i in split.ingests.items()}
    async with split.client() as client:
        r = await client.post(
            "/studies",
            content=body,
            headers={
                "Content-Type": content_type,
                "Authorization": "Bearer token-1",
                "Accept": "application/dicom+json",
                "Accept-Encoding": "gzip",
            },
        )
    assert r.status_code == 200, r.text
    # PS3.18 10.5.3: one ReferencedSOPSequence, in the order of the request's parts
    assert [sop_of(i) for i in r.json()["00081199"]["Value"]] == sops
    assert "Value" not in r.json()["00081190"]  # three studies: no one RetrieveURL
    assert sorted(r.headers.get_list("warning")) == [f'299 {n} "stored by {n}"' for n in NAMES]
    host = split.router.removeprefix("http://")
    for name, ingest in split.ingests.items():
        (got,) = ingest.received
        mine = [k for k, n in enumerate(order) if n == name]
        assert got.parts == [(sops[k], hashlib.sha256(files[k]).hexdigest()) for k in mine]
        assert CONTENT_TYPE.fullmatch(got.headers["content-type"]), got.headers
        assert got.headers["transfer-encoding"] == "chunked"  # written as it is sent
        assert "authorization" not in got.headers  # the client's token stays at the router
        assert got.headers["accept"] == "application/dicom+json"
        assert got.headers["accept-encoding"] == "identity"  # the router reads the answer
        assert got.headers["x-forwarded-proto"] == "http"
        assert got.headers["x-forwarded-host"] == host
        assert got.headers["x-forwarded-prefix"] == PREFIX
        assert got.headers["x-forwarded-for"] == "127.0.0.1"
        assert count(ingest.url, "200") == before[name] + 1  # upstream latency observed


async def test_one_study_gets_its_retrieve_url(split: Split) -> None:
    study = study_on("c")
    files = [make_instance(study) for _ in range(3)]
    body, content_type = multipart(files)
    async with split.client() as client:
        r = await client.post("/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 200, r.text
    url = split.ingests["c"].url
    assert r.json()["00081190"] == {"vr": "UR", "Value": [f"{url}/studies/{study}"]}
    assert [len(i.received) for i in split.ingests.values()] == [0, 0, 1]


async def test_a_big_part_streams_from_its_spool_file_in_bounded_memory(split: Split) -> None:
    """A 40 MB instance is spooled to disk by the router and sent to its shard from
    there: Python allocations in this process (router, stand-ins, client) stay far
    below its size."""
    big = make_instance(study_on("a"), size=4500)  # 4500 x 4500 x 16 bit: 40.5 MB
    small = make_instance(study_on("b"))
    body, content_type = multipart([big, small])
    del big

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), MIB):
            yield body[start : start + MIB]
            await asyncio.sleep(0)

    tracemalloc.start()
    try:
        async with split.client() as client:
            r = await client.post(
                "/studies", content=chunks(), headers={"Content-Type": content_type}
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 200, r.text
    assert len(r.json()["00081199"]["Value"]) == 2
    assert sum(len(i.received) for i in split.ingests.values()) == 2
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB"


# --- shards that fail ----------------------------------------------------------------------


async def test_a_failing_shard_fails_its_parts_with_0110_and_the_others_are_stored(
    split: Split,
) -> None:
    """PS3.18 Table 10.5.3-1: 202 when some failed; each part of the shard that gave
    no answer is a FailedSOPSequence item, Failure Reason 0x0110 (Table I.2-2)."""
    split.ingests["b"].status, split.ingests["b"].body = 500, b"internal error"
    split.ingests["c"].status, split.ingests["c"].body = 200, b'[{"0008'  # malformed
    files = [make_instance(study_on(n)) for n in ("a", "b", "c")]
    sops = [read_uids_of(f) for f in files]
    body, content_type = multipart(files)
    async with split.client() as client:
        r = await client.post("/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 202, r.text
    assert [sop_of(i) for i in r.json()["00081199"]["Value"]] == sops[:1]
    failed = r.json()["00081198"]["Value"]
    assert [sop_of(i) for i in failed] == sops[1:]
    assert {i["00081197"]["Value"][0] for i in failed} == {FailureReason.PROCESSING_FAILURE}
    comments = [i["00000902"]["Value"][0] for i in failed]
    assert "HTTP 500 from shard b" in comments[0]
    assert "malformed" in comments[1] and "shard c" in comments[1]


async def test_a_request_every_shard_refuses_is_their_answer(split: Split) -> None:
    refusal = json.dumps({"error": "too large"}).encode()
    for ingest in split.ingests.values():
        ingest.status, ingest.body = 413, refusal
    files = [make_instance(study_on(n)) for n in NAMES]
    body, content_type = multipart(files)
    async with split.client() as client:
        r = await client.post("/studies", content=body, headers={"Content-Type": content_type})
    assert r.status_code == 413
    assert r.content == refusal
    assert r.headers["content-type"] == "application/dicom+json"


async def test_an_unreachable_shard_fails_its_parts_and_all_down_is_503(split: Split) -> None:
    up = split.ingests["a"]
    down = closed_port_url()
    names = ("a", "z")
    shards = ShardMap({"a": Shard("a", up.url, down, down), "z": Shard("z", down, down, down)})
    files = [make_instance(study_on(n, names)) for n in names]
    sops = [read_uids_of(f) for f in files]
    body, content_type = multipart(files)
    only_down, only_down_type = multipart(files[1:])
    async with serving(create_app(Settings(), shards=shards)) as router:
        async with httpx.AsyncClient(base_url=router + PREFIX, timeout=STEP) as client:
            r = await client.post("/studies", content=body, headers={"Content-Type": content_type})
            all_down = await client.post(
                "/studies", content=only_down, headers={"Content-Type": only_down_type}
            )
    assert r.status_code == 202, r.text
    assert [sop_of(i) for i in r.json()["00081199"]["Value"]] == sops[:1]
    (failed,) = r.json()["00081198"]["Value"]
    assert sop_of(failed) == sops[1]
    assert failed["00081197"]["Value"] == [FailureReason.PROCESSING_FAILURE]
    assert "shard z unreachable" in failed["00000902"]["Value"][0]
    assert all_down.status_code == 503
    assert int(all_down.headers["retry-after"]) > 0
