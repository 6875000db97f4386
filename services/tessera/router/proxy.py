"""Forward one DICOMweb request to a shard service and stream the answer back.

Both bodies are streamed, never held: a STOW-RS upload (PS3.18 10.5) of gigabytes goes
up chunk by chunk as the client sends it, and a WADO-RS multipart (PS3.18 10.4) comes
down chunk by chunk as the shard produces it, still content-encoded (aiohttp's
``auto_decompress`` is off). An answer of at most ``WHOLE_BODY_LIMIT`` bytes with a
Content-Length is read whole and then sent in one piece.

The hop to the shard is aiohttp, not httpx: a viewer asks for ~100 frames at once, and
httpcore's pool scans every pooled connection on each request and each response
(quadratic in the requests in flight; encode/httpcore#1035), which cost the router
~10 ms of CPU per frame against ~1 ms here. The QIDO-RS fan-out
(:mod:`tessera.router.qido_fanout`) and the STOW-RS split (:mod:`tessera.router.stow_split`)
use the same session: it is the router's one HTTP client.

Headers are end-to-end except the hop-by-hop ones (RFC 9110 7.6.1): Accept, Range,
If-None-Match... go up, but not the client's Authorization or cookies: the shard gets the
router's internal credential for the caller instead (:mod:`tessera.shared.auth.internal`).
Content-Type, ETag, Warning (QIDO-RS, PS3.18 8.3.4.4), Content-Location... come down,
repeated headers kept as repeated. The shard
builds RetrieveURL and BulkDataURI for the client from ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` (:func:`tessera.shared.http.public_base_url`),
which the router sets from what the client sent it; a ``Forwarded`` header from the
client is dropped, as the shard would trust it first.

A shard that cannot be reached (refused, connect timeout, connection lost before the
answer) is :class:`~tessera.shared.errors.ServiceUnavailable`: 503 with Retry-After.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from tessera.shared import metrics
from tessera.shared.auth.internal import FORWARD_KEY
from tessera.shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)

# RFC 9110 7.6.1 (and the older Keep-Alive, Proxy-Connection): meaningful for one
# connection only, so never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Up: the shard's Host is the client library's to set; we do no 100-continue towards the
# shard; the forwarding headers are ours to set (a client must not choose the shard's
# base URL).
_NOT_UP = HOP_BY_HOP | {
    # the client's credential stays here: the shards get the router's own
    # (tessera.shared.auth.internal), minted by the auth middleware for this caller
    "authorization",
    "cookie",
    "x-tessera-move",  # only the rebalance marks its requests as a move (shared.changefeed)
    "host",
    "expect",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
}
# Down: uvicorn adds its own Date and Server.
_NOT_DOWN = HOP_BY_HOP | {"date", "server"}
_NOT_UP_BYTES = frozenset(name.encode() for name in _NOT_UP)
_NOT_DOWN_BYTES = frozenset(name.encode() for name in _NOT_DOWN)

# Seconds a client is told to wait before retrying when a shard is down (RFC 9110 10.2.3).
RETRY_AFTER = 5
# An answer with a Content-Length up to this (a QIDO result, a STOW answer, metadata, a
# frame, a rendering) is read whole and sent in one piece: streaming it costs more than its
# bytes do (Starlette's streaming response runs a task group per answer and a pass through
# every middleware per chunk). At most this much per request in flight is held.
WHOLE_BODY_LIMIT = 1024 * 1024
# What aiohttp buffers from the shard before it stops reading the socket: each chunk
# relayed costs a pass through Starlette and uvicorn, so a WADO-RS study of hundreds of
# MB goes down in what is buffered, up to about this, rather than in 64 KiB pieces.
READ_BUFFER = 1024 * 1024
# Connecting to a shard must be quick; its answer may not be: a STOW of gigabytes is
# read for minutes, a WADO stream is written for as long as the client reads. So no
# read or total timeout, and no cap on connections (~100 parallel frame requests a viewer).
CONNECT_TIMEOUT = 5.0
# Idle pooled connections are closed before uvicorn's own keep-alive (30 s) closes them.
KEEPALIVE = 15.0


def _dropped(headers: list[tuple[bytes, bytes]], always: frozenset[bytes]) -> frozenset[bytes]:
    """Names not to forward: ``always``, plus those the Connection header lists."""
    listed = [value for name, value in headers if name.lower() == b"connection"]
    if not listed:
        return always
    return always | {t.strip().lower() for v in listed for t in v.split(b",") if t.strip()}


def upstream_headers(request: Request, prefix: str) -> list[tuple[bytes, bytes]]:
    """The client's end-to-end headers, plus X-Forwarded-* for the shard."""
    raw = request.headers.raw
    drop = _dropped(raw, _NOT_UP_BYTES)
    out = [(name, value) for name, value in raw if name.lower() not in drop]
    host = request.headers.get("host") or request.url.netloc
    out.append((b"x-forwarded-proto", request.url.scheme.encode()))
    out.append((b"x-forwarded-host", host.encode("latin-1")))
    root_path = request.scope.get("root_path", "").rstrip("/")
    out.append((b"x-forwarded-prefix", (root_path + prefix).encode()))
    # An X-Forwarded-For from the client (or the ingress before us) goes up as it is;
    # uvicorn's proxy_headers has already made it request.client if the sender is trusted.
    if request.client is not None and "x-forwarded-for" not in request.headers:
        out.append((b"x-forwarded-for", request.client.host.encode("latin-1")))
    internal = request.scope.get(FORWARD_KEY)
    if internal:
        out.append((b"authorization", internal.encode("latin-1")))
    return out


def end_to_end(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The shard's end-to-end response headers (``raw``), repeated ones (Warning) kept."""
    drop = _dropped(raw, _NOT_DOWN_BYTES)
    return [(name.lower(), value) for name, value in raw if name.lower() not in drop]


def upstream_target(request: Request, prefix: str) -> bytes:
    """Path and query for the shard: the client's, minus the DICOMweb prefix, as sent.

    The raw (still percent-encoded) bytes are used, so ``includefield=a%2Cb`` and
    repeated keys reach the shard exactly as the client wrote them.
    """
    scope = request.scope
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    for mount in (scope.get("root_path", "").rstrip("/") + prefix, prefix):
        if mount and raw_path.startswith(mount.encode()):
            raw_path = raw_path[len(mount) :]
            break
    query: bytes = scope.get("query_string", b"")
    return (raw_path or b"/") + (b"?" + query if query else b"")


def _has_body(request: Request) -> bool:
    headers = request.headers
    return "transfer-encoding" in headers or int(headers.get("content-length") or 0) > 0


@lru_cache(maxsize=1024)
def _base(base_url: str) -> tuple[str, str]:
    """``base_url`` without its trailing slash, and its origin (the metrics label)."""
    parts = urlsplit(base_url)
    return base_url.rstrip("/"), f"{parts.scheme}://{parts.netloc}"


def open_session() -> aiohttp.ClientSession:
    """The router's pooled session to its shards (inside a running event loop).

    Nothing is added to what the client sent but Host (and Content-Length or chunked
    framing): no User-Agent, Accept, Accept-Encoding or Content-Type of aiohttp's own.
    No cookies are kept: the session serves every client of the router.
    """
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=KEEPALIVE)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=None
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        auto_decompress=False,
        read_bufsize=READ_BUFFER,
        trust_env=False,
    )


class UpstreamResponse(StreamingResponse):
    """The shard's response as it arrives; the upstream response is always closed.

    Closing happens when the body is done, when the client goes away, and when the
    request task is cancelled, so a shard connection is never left half read (one read
    to its end is already back in the pool, and closing it then is a no-op).
    """

    def __init__(self, upstream: aiohttp.ClientResponse) -> None:
        super().__init__(upstream.content.iter_any(), status_code=upstream.status)
        self.raw_headers = end_to_end(list(upstream.raw_headers))
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.upstream.close()


class Proxy:
    """Sends requests to shard services through one pooled aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, prefix: str) -> None:
        self.session = session
        self.prefix = prefix

    async def forward(self, request: Request, base_url: str) -> Response:
        """Send ``request`` to the service at ``base_url``; its answer, streaming."""
        base, origin = _base(base_url)
        target = upstream_target(request, self.prefix).decode("latin-1")
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in upstream_headers(request, self.prefix)
        ]
        started = time.perf_counter()
        try:
            upstream = await self.session.request(
                request.method,
                URL(base + target, encoded=True),
                headers=headers,
                data=request.stream() if _has_body(request) else None,
                allow_redirects=False,
            )
            metrics.observe_upstream(origin, upstream.status, time.perf_counter() - started)
            if _is_small(upstream):
                return await _whole(upstream)
        except aiohttp.ClientError as e:
            if _caused_by_client_disconnect(e):
                log.info("%s %s: client went away during the upload", request.method, base_url)
                return Response(status_code=400)
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise ServiceUnavailable(
                f"{base_url} is unreachable ({detail})", retry_after=RETRY_AFTER
            ) from None
        return UpstreamResponse(upstream)

    async def probe(self, base_url: str, seconds: float) -> str:
        """Empty if ``base_url/readyz`` answers 200 within ``seconds`` (the service and
        the dependencies it needs answer), else why not."""
        try:
            async with self.session.get(
                _base(base_url)[0] + "/readyz", timeout=aiohttp.ClientTimeout(total=seconds)
            ) as r:
                await r.read()
                return "" if r.status == 200 else f"HTTP {r.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            return type(e).__name__


def _caused_by_client_disconnect(error: BaseException) -> bool:
    """aiohttp reports a failed upload body as a connection error caused by what the
    body raised: Starlette's ClientDisconnect when the client went away mid-upload."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ClientDisconnect):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_small(upstream: aiohttp.ClientResponse) -> bool:
    length = upstream.headers.get("content-length", "")
    return length.isdigit() and int(length) <= WHOLE_BODY_LIMIT


async def _whole(upstream: aiohttp.ClientResponse) -> Response:
    """The shard's answer read to its end (still content-encoded), as one response."""
    try:
        body = await upstream.read()
    finally:
        upstream.close()
    response = Response(body, status_code=upstream.status)
    response.raw_headers = end_to_end(list(upstream.raw_headers))
    return response
