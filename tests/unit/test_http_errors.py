"""An unexpected error still answers 500 with its reason and passes through the user
middleware (CORS, metrics), so a browser sees the 500 rather than a CORS failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import redis.exceptions
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tessera.shared.http import make_app


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug")


async def late_boom(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"first part"
        raise RuntimeError("a bug after the status was sent")

    return StreamingResponse(body())


def app() -> Starlette:
    a = make_app([Route("/http-errors/boom", boom), Route("/http-errors/late", late_boom)])
    a.add_middleware(CORSMiddleware, allow_origins=["*"])
    return a


def client(raise_errors: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=raise_errors)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_unexpected_error_is_500_with_cors_headers() -> None:
    async with client() as c:
        r = await c.get("/http-errors/boom", headers={"Origin": "https://viewer.example"})
    assert r.status_code == 500
    assert r.text == "internal error\n"
    assert r.headers["access-control-allow-origin"] == "*"


async def test_unexpected_error_is_counted_as_500() -> None:
    labels = {"method": "GET", "route": "/http-errors/boom", "status": "500"}
    before = REGISTRY.get_sample_value("tessera_http_requests_total", labels) or 0.0
    async with client() as c:
        await c.get("/http-errors/boom")
    assert REGISTRY.get_sample_value("tessera_http_requests_total", labels) == before + 1


async def test_error_after_the_response_started_is_not_hidden() -> None:
    async with client(raise_errors=True) as c:
        with pytest.raises(RuntimeError, match="after the status"):
            await c.get("/http-errors/late")


async def raising(error: Exception) -> httpx.Response:
    """The answer of an app whose one route raises ``error``."""

    async def handler(request: Request) -> Response:
        raise error

    a = make_app([Route("/http-errors/raising", handler)])
    transport = httpx.ASGITransport(app=a, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        return await c.get("/http-errors/raising")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        redis.exceptions.ConnectionError("Connection refused"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        # a query on a connection whose server went away (asyncpg 0.29: protocol.pyx)
        asyncpg.exceptions.InterfaceError("cannot perform operation: connection is closed"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5432)"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_dependency_that_is_down_is_503_with_retry_after(error: Exception) -> None:
    """Issue 15: PostgreSQL or Redis down or restarting is a 503 the client may retry,
    not a 500; the body names no host, address or error detail."""

    r = await raising(error)
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) > 0
    assert r.text == "a dependency of this service is unavailable; try again\n"


async def test_a_guard_whose_dependency_is_down_is_503_with_cors_headers() -> None:
    """The authentication middleware runs inside the error mapping: its API-key database
    down is a 503 a browser can read (CORS), not a bare 500 from outside it."""

    class DownGuard:
        def __init__(self, app: object) -> None:
            self.app = app

        async def __call__(self, scope: object, receive: object, send: object) -> None:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    a = make_app([Route("/http-errors/guarded", boom)], guard=Middleware(DownGuard))
    a.add_middleware(CORSMiddleware, allow_origins=["*"])
    transport = httpx.ASGITransport(app=a, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.get("/http-errors/guarded", headers={"Origin": "https://viewer.example"})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
    assert r.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.InterfaceError(
            "cannot perform operation: another operation is in progress"
        ),
        OSError(28, "No space left on device"),
    ],
    ids=["asyncpg-misuse", "ENOSPC"],
)
async def test_a_bug_or_a_local_failure_stays_500(error: Exception) -> None:
    """Only what says a dependency is down or gone is a 503 (dependency_down); a misuse
    of a connection is ours to fix, and says so as a 500."""

    r = await raising(error)
    assert r.status_code == 500 and r.text == "internal error\n"
