"""What every service's HTTP app shares: the error → HTTP mapping (one place),
health and readiness probes, ``/metrics``, DICOM JSON responses, and the public base URL.

A service builds its app with :func:`make_app`, giving its routes and a readiness
check; :class:`TesseraError` subclasses raised anywhere in a handler become a status
with a plain-text reason (PS3.18 8.5: an error response carries a reason phrase and
may carry a payload describing it).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import redis.exceptions
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.shared.auth.internal import InternalAuth
from tessera.shared.errors import ServiceUnavailable, TesseraError
from tessera.shared.metrics import MetricsMiddleware, Scrape, metrics_route
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"


class DicomJSONResponse(Response):
    """A body that is already serialized DICOM JSON (bytes), or a list/dict to encode."""

    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes | bytearray):
            return bytes(content)
        import json

        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


async def _tessera_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TesseraError)
    headers = {}
    if isinstance(exc, ServiceUnavailable) and exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code >= 500:
        log.error("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.reason)
    return PlainTextResponse(exc.reason + "\n", status_code=exc.status_code, headers=headers)


# A dependency that is down, restarting or not answering in time (PostgreSQL, Redis, a
# socket): the request may succeed later, so it is 503 with Retry-After, not 500 (issue 15).
DEPENDENCY_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,  # refused, reset, aborted
    TimeoutError,
)
RETRY_AFTER = 5
# socket errors a connect can end in besides ConnectionError (asyncio's "Multiple
# exceptions" when every address failed is a bare OSError with no errno)
_SOCKET_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, None}


def dependency_down(exc: BaseException) -> bool:
    """Whether ``exc`` says that a dependency is down or gone, not that the code is wrong:
    also asyncpg's InterfaceError for a connection its server closed under a query, and a
    connect that failed on every address."""
    if isinstance(exc, DEPENDENCY_DOWN):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        return str(exc).endswith("connection is closed")
    return type(exc) is OSError and exc.errno in _SOCKET_ERRNOS


async def _unexpected(request: Request, exc: Exception) -> Response:
    if dependency_down(exc):
        log.warning("%s %s: a dependency is unavailable: %s", request.method, request.url.path, exc)
        return PlainTextResponse(
            "a dependency of this service is unavailable; try again\n",
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER)},
        )
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return PlainTextResponse("internal error\n", status_code=500)


class UnexpectedErrors:
    """Turns an exception that escaped every handler into the 500 of :func:`_unexpected`
    *inside* the user middleware, so that CORS and metrics see and decorate it.

    Starlette hands an ``Exception`` handler to its outermost ServerErrorMiddleware, where
    no middleware added with ``add_middleware`` (CORS) wraps the answer: a browser then
    reports a CORS failure instead of the 500 and its reason. Once the response has
    started, nothing can be changed: the error propagates and the connection is closed.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            response = await _unexpected(Request(scope), exc)
            await response(scope, receive, send)


ReadyCheck = Callable[[], Awaitable[dict[str, str]]]
# a readiness check that takes longer is a failed one: a stalled dependency (a stopped
# PostgreSQL, a Redis that accepts and never answers) makes /readyz 503 within this, not
# a probe that hangs until the prober's own timeout (issue 15)
READY_TIMEOUT = 2.0


def health_routes(ready: ReadyCheck | None, timeout: float = READY_TIMEOUT) -> list[BaseRoute]:
    """``/healthz``: the process answers. ``/readyz``: its dependencies answer too."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        if ready is None:
            return JSONResponse({"status": "ready"})
        try:
            checks = await asyncio.wait_for(ready(), timeout)
        except TimeoutError:
            error = f"a dependency did not answer within {timeout:g}s"
            return JSONResponse({"status": "not ready", "error": error}, status_code=503)
        except Exception as e:
            return JSONResponse({"status": "not ready", "error": str(e)}, status_code=503)
        return JSONResponse({"status": "ready", **checks})

    return [Route("/healthz", healthz), Route("/readyz", readyz)]


def make_app(
    routes: Sequence[BaseRoute],
    *,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]] | None = None,
    ready: ReadyCheck | None = None,
    scrape: Scrape | None = None,
    shard: Settings | None = None,
    guard: Middleware | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Starlette:
    """The app with ``routes``, the probes (``ready`` given ``ready_timeout`` seconds),
    and ``/metrics`` (plus what ``scrape`` computes when Prometheus asks); every request
    is counted and timed. A shard
    service passes its settings as ``shard``: every request but the probes then needs
    the router's internal credential (:class:`~tessera.shared.auth.internal.InternalAuth`);
    the router passes its own ``guard`` (authentication, authorization, audit)."""
    # authentication inside UnexpectedErrors: an error while checking a credential (its
    # database down) is mapped like any other (503 for a dependency), with CORS headers
    middleware = [Middleware(MetricsMiddleware), Middleware(UnexpectedErrors)]
    if shard is not None:
        middleware.append(Middleware(InternalAuth, settings=shard))
    if guard is not None:
        middleware.append(guard)
    return Starlette(
        routes=[*health_routes(ready, ready_timeout), metrics_route(scrape), *routes],
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={TesseraError: _tessera_error, Exception: _unexpected},
    )


def public_base_url(request: Request, prefix_default: str = "") -> str:
    """The DICOMweb base URL as the client sees it, for RetrieveURL and BulkDataURI.

    Honours ``Forwarded`` (RFC 7239) and ``X-Forwarded-Proto/-Host/-Prefix``, which the
    router sets when it proxies to a shard; falls back to the request's own URL.
    """
    proto = host = None
    forwarded = request.headers.get("forwarded")
    if forwarded:
        first = forwarded.split(",")[0]
        for pair in first.split(";"):
            name, _, value = pair.strip().partition("=")
            value = value.strip().strip('"')
            if name.lower() == "proto":
                proto = value
            elif name.lower() == "host":
                host = value
    proto = proto or request.headers.get("x-forwarded-proto", "").split(",")[0].strip() or None
    host = host or request.headers.get("x-forwarded-host", "").split(",")[0].strip() or None
    prefix = request.headers.get("x-forwarded-prefix", prefix_default).rstrip("/")
    proto = proto or request.url.scheme
    host = host or request.headers.get("host") or request.url.netloc
    return f"{proto}://{host}{prefix}"
