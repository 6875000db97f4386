"""Every HTTP server of the cluster limits the request head (issue 15): a 10 MB header
line or 100,000 header lines are refused with 431 (RFC 6585 5) and the connection is
closed, at the router, each shard service and each worker's health port alike."""

from __future__ import annotations

import socket

import pytest

from tests.support.cluster import PORTS, Cluster


def _ask(port: int, head: bytes) -> bytes:
    """Send ``head`` (sendall may stop early once the server closes) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("service", ["router", "ingest", "index", "retrieve", "index-worker"])
def test_a_10_mb_header_line_is_431(cluster: Cluster, service: str) -> None:
    port = getattr(cluster.settings, PORTS[service])
    answer = _ask(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000_000)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"over 65536 bytes" in answer


@pytest.mark.parametrize("service", ["router", "retrieve", "transcode"])
def test_100000_header_lines_are_431(cluster: Cluster, service: str) -> None:
    port = getattr(cluster.settings, PORTS[service])
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(100_000))
    answer = _ask(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"over 100 header fields" in answer


def test_a_request_within_the_limits_is_answered(cluster: Cluster) -> None:
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 500) for i in range(90))
    answer = _ask(
        cluster.settings.router_port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
