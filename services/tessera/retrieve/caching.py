"""HTTP caching of WADO-RS responses: ETag, If-None-Match → 304, Cache-Control.

PS3.18 8.4 leaves caching to HTTP (RFC 9110 8.8.3, 13.1.2, 15.4.5; RFC 9111 5.2.2).

Validators. An entity tag is made from what names the content, never from the content
(which would mean reading it): the SHA-256 of each stored object (its key is its hash,
so the same hash is the same bytes), the representation (media types, Transfer Syntax of
each part, the frame list), and the public base URL (Content-Location and BulkDataURIs
are absolute). Study and series tags also cover the member list and its order, so an
instance added or replaced changes them. Checking If-None-Match therefore needs only the
index rows, and a 304 is answered before storage or transcode is touched.

Tags are *weak* (``W/"..."``): a multipart body has a fresh boundary each time, and a
conversion's bytes may change with the decoder's version, so two responses under one tag
are equivalent, not byte-identical. If-None-Match compares weakly (RFC 9110 13.1.2), so
304s work; nothing here serves Range on these responses, which would need strong tags.

Freshness. ``private``: these are patient data, for the user's own cache, never a shared
one. One instance (its object, metadata, frames) cannot change while the duplicate
policy is ``reject`` (the index refuses another object under a stored SOPInstanceUID):
fresh for a day. Under ``replace`` it can, so ``no-cache``: revalidate each time, a
cheap 304. Study and series resources change as instances arrive: fresh for a few
seconds, then revalidated. ``Vary: Accept``: the representation depends on it.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import Response

from tessera.retrieve.queries import Target
from tessera.shared.refs import InstanceRef
from tessera.shared.settings import Settings

INSTANCE_MAX_AGE = 86400  # seconds
COLLECTION_MAX_AGE = 10


def entity_tag(kind: str, *parts: object) -> str:
    """A weak entity tag over ``kind`` and ``parts`` (iterables are spread in order)."""
    digest = hashlib.sha256(kind.encode())
    for part in parts:
        items = part if isinstance(part, list | tuple) else [part]
        for item in items:
            digest.update(b"\x00" + str(item).encode())
    return f'W/"{digest.hexdigest()[:40]}"'


def cache_control(settings: Settings, target: Target) -> str:
    """``Cache-Control`` for a resource of ``target`` (see the module docstring)."""
    if not isinstance(target, InstanceRef):
        return f"private, max-age={COLLECTION_MAX_AGE}"
    if settings.duplicate_policy == "reject":
        return f"private, max-age={INSTANCE_MAX_AGE}"
    return "private, no-cache"


def cache_headers(settings: Settings, target: Target, etag: str) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": cache_control(settings, target), "Vary": "Accept"}


def matches(request: Request, etag: str) -> bool:
    """True if the request's If-None-Match names ``etag`` (weak comparison) or is ``*``."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    opaque = _opaque(etag)
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or (tag and _opaque(tag) == opaque):
            return True
    return False


def not_modified(headers: dict[str, str]) -> Response:
    """304 with the validator and freshness the 200 would have had (RFC 9110 15.4.5)."""
    return Response(status_code=304, headers=headers)


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/").strip()
