"""Forward one DICOMweb request to a shard service and stream the answer back.

Both bodies are streamed, never held: a STOW-RS upload (PS3.18 10.5) of gigabytes goes
up chunk by chunk as the client sends it, and a WADO-RS multipart (PS3.18 10.4) comes
down chunk by chunk as the shard produces it, still content-encoded (``aiter_raw``). An
answer of at most ``WHOLE_BODY_LIMIT`` bytes with a Content-Length is read whole and then
sent in one piece.

Headers are end-to-end except the hop-by-hop ones (RFC 9110 7.6.1): Accept, Range,
Authorization, If-None-Match... go up; Content-Type, ETag, Warning (QIDO-RS, PS3.18
8.3.4.4), Content-Location... come down, repeated headers kept as repeated. The shard
builds RetrieveURL and BulkDataURI for the client from ``X-Forwarded-Proto``,
``X-Forwarded-Host`` and ``X-Forwarded-Prefix`` (:func:`tessera.shared.http.public_base_url`),
which the router sets from what the client sent it; a ``Forwarded`` header from the
client is dropped, as the shard would trust it first.

A shard that cannot be reached (refused, connect timeout, connection lost before the
answer) is :class:`~tessera.shared.errors.ServiceUnavailable`: 503 with Retry-After.
"""

from __future__ import annotations

import logging

import anyio
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

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
# Up: the shard's Host is httpx's to set; we do no 100-continue towards the shard; the
# forwarding headers are ours to set (a client must not choose the shard's base URL).
_NOT_UP = HOP_BY_HOP | {
    "host",
    "expect",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-prefix",
}
# Down: uvicorn adds its own Date and Server.
_NOT_DOWN = HOP_BY_HOP | {"date", "server"}

# Seconds a client is told to wait before retrying when a shard is down (RFC 9110 10.2.3).
RETRY_AFTER = 5
# An answer with a Content-Length up to this (a QIDO result, a STOW answer, metadata) is
# read whole and sent in one piece: streaming it would cost more than its bytes do.
WHOLE_BODY_LIMIT = 64 * 1024


def _dropped(headers: list[tuple[bytes, bytes]], always: frozenset[str]) -> set[bytes]:
    """Names not to forward: ``always``, plus those the Connection header lists."""
    drop = {name.encode() for name in always}
    for name, value in headers:
        if name.lower() == b"connection":
            drop.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return drop


def upstream_headers(request: Request, prefix: str) -> list[tuple[bytes, bytes]]:
    """The client's end-to-end headers, plus X-Forwarded-* for the shard."""
    raw = request.headers.raw
    drop = _dropped(raw, _NOT_UP)
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
    return out


def downstream_headers(upstream: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The shard's end-to-end response headers, repeated ones (Warning) kept apart."""
    raw = upstream.headers.raw
    drop = _dropped(raw, _NOT_DOWN)
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


class UpstreamResponse(StreamingResponse):
    """The shard's response as it arrives; the upstream response is always closed.

    Closing happens when the body is done, when the client goes away, and when the
    request task is cancelled, so a shard connection is never left half read.
    """

    def __init__(self, upstream: httpx.Response) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        self.raw_headers = downstream_headers(upstream)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.upstream.aclose()


class Proxy:
    """Sends requests to shard services through one pooled httpx client."""

    def __init__(self, client: httpx.AsyncClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def forward(self, request: Request, base_url: str) -> Response:
        """Send ``request`` to the service at ``base_url``; its answer, streaming."""
        base = httpx.URL(base_url)
        target = base.raw_path.rstrip(b"/") + upstream_target(request, self.prefix)
        outgoing = httpx.Request(
            request.method,
            base.copy_with(raw_path=target),
            headers=upstream_headers(request, self.prefix),
            content=request.stream() if _has_body(request) else None,
        )
        try:
            upstream = await self.client.send(outgoing, stream=True)
            if _is_small(upstream):
                return await _whole(upstream)
        except ClientDisconnect:
            log.info("%s %s: client went away during the upload", request.method, base_url)
            return Response(status_code=400)
        except httpx.TransportError as e:
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise ServiceUnavailable(
                f"{base_url} is unreachable ({detail})", retry_after=RETRY_AFTER
            ) from None
        return UpstreamResponse(upstream)


def _is_small(upstream: httpx.Response) -> bool:
    length = upstream.headers.get("content-length", "")
    return length.isdigit() and int(length) <= WHOLE_BODY_LIMIT


async def _whole(upstream: httpx.Response) -> Response:
    """The shard's answer read to its end (still content-encoded), as one response."""
    try:
        body = b"".join([chunk async for chunk in upstream.aiter_raw()])
    finally:
        with anyio.CancelScope(shield=True):
            await upstream.aclose()
    response = Response(body, status_code=upstream.status_code)
    response.raw_headers = downstream_headers(upstream)
    return response
