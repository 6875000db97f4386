"""The head timeout of every Tessera HTTP server (issue 15), on a health server with a
short one: a connection that sends nothing, or sends its head too slowly, is closed
(408 when a request had begun); a request being answered, and a client that sends its
next request in time on a kept-alive connection, are not cut."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tessera.shared.health_server import HealthServer
from tessera.shared.settings import Settings


async def _ready() -> dict[str, str]:
    return {}


@pytest.fixture
def server() -> Iterator[HealthServer]:
    settings = Settings(http_head_timeout=1.0, http_keep_alive=5.0)
    health = HealthServer("127.0.0.1", 0, _ready, settings=settings).start()
    yield health
    health.stop()


def _read_all(s: socket.socket) -> bytes:
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    return answer


def test_a_connection_that_sends_nothing_is_closed(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        start = time.monotonic()
        assert _read_all(s) == b""  # closed by the server
        assert 0.8 < time.monotonic() - start < 5


def test_a_head_sent_too_slowly_is_408(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # one field every 0.5 s: each byte in time, the head not
            time.sleep(0.5)
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = _read_all(s)
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_kept_alive_requests_in_time_are_answered(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"ok\n"):
                answer += s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.6)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(s).startswith(b"HTTP/1.1 200 ")
