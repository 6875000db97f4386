"""The metrics middleware and ``/metrics`` of :func:`tessera.shared.http.make_app`.

Counters are process-wide (prometheus_client's default registry), so each test reads a
sample before and after and checks the difference, on routes of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from tessera.shared import metrics
from tessera.shared.errors import NotFound
from tessera.shared.http import make_app


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _requests(method: str, route: str, status: str) -> float:
    return _value("tessera_http_requests_total", method=method, route=route, status=status)


def _client(app: Starlette, raise_errors: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def _prefix() -> str:
    return "/t" + uuid.uuid4().hex[:8]


async def _hello(request: Request) -> Response:
    return PlainTextResponse("hello " + request.path_params.get("study", ""))


async def _missing(request: Request) -> Response:
    raise NotFound("no such study")


async def _crash(request: Request) -> Response:
    raise RuntimeError("boom")


async def test_requests_are_counted_by_route_template_not_raw_path() -> None:
    p = _prefix()
    template = p + "/studies/{study}"
    app = make_app([Route(template, _hello)])
    before = _requests("GET", template, "200")
    seconds_before = _value(
        "tessera_http_request_duration_seconds_count", method="GET", route=template, status="200"
    )
    async with _client(app) as client:
        for uid in ("1.2.3", "1.2.4", "1.2.5"):
            assert (await client.get(f"{p}/studies/{uid}")).status_code == 200
        exposed = (await client.get("/metrics")).text
    assert _requests("GET", template, "200") - before == 3
    count = _value(
        "tessera_http_request_duration_seconds_count", method="GET", route=template, status="200"
    )
    assert count - seconds_before == 3
    # no series carries a UID
    assert "1.2.3" not in exposed and template in exposed


async def test_unmatched_paths_share_one_label_and_odd_methods_are_other() -> None:
    app = make_app([Route(_prefix() + "/x", _hello)])
    before = _requests("GET", "unmatched", "404")
    other = _requests("OTHER", "unmatched", "404")
    async with _client(app) as client:
        await client.get("/nowhere/" + uuid.uuid4().hex)
        await client.get("/elsewhere/" + uuid.uuid4().hex)
        await client.request("BREW", "/pot/" + uuid.uuid4().hex)
    assert _requests("GET", "unmatched", "404") - before == 2
    assert _requests("OTHER", "unmatched", "404") - other == 1


async def test_error_statuses_are_recorded() -> None:
    p = _prefix()
    app = make_app([Route(p + "/missing", _missing), Route(p + "/crash", _crash)])
    async with _client(app, raise_errors=False) as client:
        assert (await client.get(p + "/missing")).status_code == 404
        assert (await client.get(p + "/crash")).status_code == 500
        assert (await client.post(p + "/missing")).status_code == 405
    assert _requests("GET", p + "/missing", "404") == 1
    assert _requests("GET", p + "/crash", "500") == 1
    assert _requests("POST", p + "/missing", "405") == 1


async def test_streamed_body_passes_through_chunk_by_chunk_and_is_counted() -> None:
    """Each chunk reaches the server before the next one is produced: nothing buffers."""
    p = _prefix()
    delivered: list[bytes] = []
    produced_after: list[list[bytes]] = []

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(4):
            produced_after.append(list(delivered))
            yield bytes([65 + i]) * 1000

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    app = make_app([Route(p + "/stream", stream)])

    scope = {
        "type": "http",
        "method": "GET",
        "path": p + "/stream",
        "raw_path": (p + "/stream").encode(),
        "root_path": "",
        "scheme": "http",
        "query_string": b"",
        "headers": [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }

    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays: never disconnects
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            delivered.append(message["body"])

    before = _value("tessera_http_response_bytes_total", method="GET", route=p + "/stream")
    await app(scope, receive, send)
    assert [len(c) for c in delivered] == [1000] * 4
    # the k-th chunk was produced when exactly the k chunks before it had been delivered
    assert [len(seen) for seen in produced_after] == [0, 1, 2, 3]
    sent = _value("tessera_http_response_bytes_total", method="GET", route=p + "/stream")
    assert sent - before == 4000
    assert _requests("GET", p + "/stream", "200") == 1


async def test_metrics_endpoint_is_prometheus_text_with_scrape_time_families() -> None:
    name = "tessera_test_depth_" + uuid.uuid4().hex[:6]

    async def scrape() -> Iterable[Metric]:
        family = GaugeMetricFamily(name, "a depth read at scrape time", labels=["shard"])
        family.add_metric(["s1"], 7)
        return [family]

    app = make_app([], scrape=scrape)
    async with _client(app) as client:
        await client.get("/healthz")
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST  # Prometheus text format
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    assert families[name].samples[0].value == 7
    assert families[name].samples[0].labels == {"shard": "s1"}
    assert "tessera_http_requests" in families  # counters lose _total in the family name
    assert "tessera_http_request_duration_seconds" in families


async def test_metrics_answer_even_when_the_scrape_hook_fails() -> None:
    async def scrape() -> Iterable[Metric]:
        raise ConnectionError("redis is away")

    async with _client(make_app([], scrape=scrape)) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert "tessera_http_requests" in answer.text


def test_stow_failure_reasons_are_named() -> None:
    before = _value("tessera_ingest_instances_total", outcome="failed", reason="cannot_understand")
    metrics.count_stow_failure(0xC000)
    after = _value("tessera_ingest_instances_total", outcome="failed", reason="cannot_understand")
    assert after - before == 1
    metrics.count_stow_failure(0xC999)  # not in the table: its hex code
    assert _value("tessera_ingest_instances_total", outcome="failed", reason="C999") >= 1
