"""Prometheus metrics: the HTTP middleware every service runs, ``/metrics``, and the
service counters (ingest, index worker, transcode, router).

Metrics are process-wide by nature (one scrape answers for the whole process), so they
live in prometheus_client's default registry, the one global of this library. A process
whose work happens in forked children (the transcode worker's Celery prefork pool) sets
``PROMETHEUS_MULTIPROC_DIR`` before prometheus_client is first imported: children then
write their samples to files there and ``/metrics`` in the parent sums them
(:func:`scrape_registry`).

Labels are bounded: the route label is the route's *template* (``/studies/{study}``),
never the raw path, the method is one of the HTTP methods or ``OTHER``, and a path no
route matches is ``unmatched``; a UID in a label would make one time series per study.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# Seconds: from a QIDO answered from the index in milliseconds to a multi-gigabyte
# WADO-RS study or STOW-RS upload that streams for minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
UNMATCHED = "unmatched"

# --- every HTTP service (MetricsMiddleware) --------------------------------------------------
HTTP_REQUESTS = Counter(
    "tessera_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tessera_http_request_duration_seconds",
    "Time from the request to the last byte of the response",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_SENT_BYTES = Counter(
    "tessera_http_response_bytes",
    "Response body bytes sent (retrieve: the bytes of WADO-RS/WADO-URI answers)",
    ["method", "route"],
)

# --- ingest (STOW-RS, PS3.18 10.5) ------------------------------------------------------------
INGEST_STORED_BYTES = Counter(
    "tessera_ingest_stored_bytes", "Bytes of new objects written to object storage"
)
INGEST_INSTANCES = Counter(
    "tessera_ingest_instances",
    "STOW-RS instances by outcome: stored/unchanged/replaced, or failed with its "
    "Failure Reason (PS3.18 Table I.2-2)",
    ["outcome", "reason"],
)

# --- index worker ---------------------------------------------------------------------------
INDEX_JOBS = Counter(
    "tessera_index_jobs",
    "Index jobs acknowledged: processed (their outcomes replied to ingest) or unreadable",
    ["result"],
)
INDEX_BATCH_LATENCY = Histogram(
    "tessera_index_batch_duration_seconds",
    "Time to commit one batch of index jobs and reply to them",
    buckets=LATENCY_BUCKETS,
)

# --- sweeper (tessera.index.sweeper) ----------------------------------------------------------
SWEEPER_OBJECTS = Counter(
    "tessera_sweeper_objects",
    "Objects the sweeper found unreferenced (orphan instance objects, derived caches of "
    "no instance, temporaries of interrupted writes), by what was done: removed, or "
    "would_remove in a dry run",
    ["kind", "action"],
)
SWEEPER_PASSES = Counter("tessera_sweeper_passes", "Sweeper passes completed")

# --- transcode worker (Celery task signals; samples written by the prefork children) -------
TRANSCODE_TASKS = Counter(
    "tessera_transcode_tasks", "Transcode tasks finished, by task name and state", ["task", "state"]
)
TRANSCODE_TASK_LATENCY = Histogram(
    "tessera_transcode_task_duration_seconds",
    "Run time of a transcode task in its worker process",
    ["task"],
    buckets=LATENCY_BUCKETS,
)

# --- router ---------------------------------------------------------------------------------
ROUTER_UPSTREAM_LATENCY = Histogram(
    "tessera_router_upstream_duration_seconds",
    "Time until a shard service's response headers arrive, by shard service",
    ["upstream", "status"],
    buckets=LATENCY_BUCKETS,
)


def observe_upstream(origin: str, status: int, seconds: float) -> None:
    """A shard service at ``origin`` (``http://host:port``) answered ``status`` after
    ``seconds`` (until its response headers arrived). The origin is bounded by the
    number of shard services, and names the shard in the host of a deployment."""
    ROUTER_UPSTREAM_LATENCY.labels(origin, str(status)).observe(seconds)


def count_stow_failure(reason: int) -> None:
    """One STOW-RS instance failed with Failure Reason ``reason`` (PS3.18 Table I.2-2)."""
    from tessera.shared.status import FailureReason

    try:
        name = FailureReason(reason).name.lower()
    except ValueError:
        name = f"{reason:04X}"
    INGEST_INSTANCES.labels("failed", name).inc()


def count_stored(outcome: str) -> None:
    """One STOW-RS instance is in the index: ``stored``, ``unchanged`` or ``replaced``."""
    INGEST_INSTANCES.labels(outcome, "").inc()


def route_template(scope: Scope) -> str:
    """The template of the route that handled ``scope`` (Starlette records it in
    ``scope["route"]``), ``unmatched`` when none did."""
    route = scope.get("route")
    if route is None:  # Starlette before it recorded the route: find it again
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if candidate.matches(scope)[0] != Match.NONE:
                route = candidate
                break
    if isinstance(route, Mount):
        return route.path + "/{path:path}"
    if isinstance(route, Route):
        return route.path
    return UNMATCHED


class MetricsMiddleware:
    """Counts requests and observes their latency by method, route template and status.

    Pure ASGI: the response's messages pass through as they come (a streamed WADO-RS
    study is never held), the middleware only notes the status and adds up body sizes.
    The latency runs until the app returns, that is until the last byte was handed to
    the server, or until the client went away.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding
        sent = 0

        async def observing_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            route = route_template(scope)
            code = str(status)
            HTTP_REQUESTS.labels(method, route, code).inc()
            HTTP_LATENCY.labels(method, route, code).observe(time.perf_counter() - start)
            if sent:
                HTTP_SENT_BYTES.labels(method, route).inc(sent)


def multiprocess_dir() -> str | None:
    """The folder of multiprocess samples when this process uses that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def scrape_registry() -> CollectorRegistry:
    """What ``/metrics`` exposes: the default registry, or in multiprocess mode a
    registry summing the samples every process of this worker wrote."""
    folder = multiprocess_dir()
    if folder is None:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return registry


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


# Metric families computed when scraped (a queue's length, read from Redis then)
Scrape = Callable[[], Awaitable[Iterable[Metric]]]


def exposition(extra: Iterable[Metric] = ()) -> bytes:
    """The Prometheus text exposition of this process, plus ``extra`` families."""
    body = generate_latest(scrape_registry())
    families = list(extra)
    if families:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        body += generate_latest(registry)
    return body


def metrics_route(scrape: Scrape | None = None) -> Route:
    """``GET /metrics`` in the Prometheus text exposition format."""

    async def metrics(request: Request) -> Response:
        extra: Iterable[Metric] = ()
        if scrape is not None:
            try:
                extra = await scrape()
            except Exception as e:  # Redis away: still expose the process's own metrics
                log.warning("scrape-time metrics unavailable: %s", e)
        return Response(exposition(extra), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", metrics, methods=["GET"])


def clear_multiprocess_dir(folder: str) -> None:
    """Remove the sample files a previous run left (their PIDs may be reused)."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.endswith(".db"):
            os.unlink(os.path.join(folder, name))
