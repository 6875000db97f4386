"""WADO-RS Retrieve Study, Series and Instance Metadata (PS3.18 10.4.1.2, Annex F).

``GET .../metadata`` answers an ``application/dicom+json`` array with one DICOM JSON
object per instance, in retrieval order. Nothing is parsed at request time: the index
stores each instance's JSON as text, and the array is those texts joined with ``[``,
``,`` and ``]``. The stored BulkDataURIs are root-relative (``"/studies/..."``); they are
made absolute for the client with one bytes replace of ``"BulkDataURI":"/`` by
``"BulkDataURI":"<public base URL>/``, exact because the index writes compact JSON, in
which that sequence can only be the start of a BulkDataURI value (a quote inside a JSON
string is escaped).

ETag and Cache-Control: :mod:`.caching`. The tag is made from the SHA-256 of the stored
objects of the instances the response lists; a request with If-None-Match reads those
digests first and answers 304 without reading any metadata text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tessera.retrieve.caching import cache_headers, entity_tag, matches, not_modified
from tessera.retrieve.context import context
from tessera.retrieve.negotiation import metadata_media_type
from tessera.retrieve.queries import instance_digests, metadata_rows, target_of
from tessera.shared.accept import accept_ranges
from tessera.shared.auth.internal import principal_of

_RELATIVE = b'"BulkDataURI":"/'
_BATCH = 256 * 1024  # bytes handed to the server at once


def absolute_bulkdata_uris(doc: bytes, base_url: str) -> bytes:
    """``doc`` with root-relative BulkDataURIs prefixed by ``base_url`` (no trailing /)."""
    prefix = json.dumps(base_url, ensure_ascii=False)[1:-1].encode()
    return doc.replace(_RELATIVE, b'"BulkDataURI":"' + prefix + b"/")


async def _array(texts: list[str], base_url: str) -> AsyncIterator[bytes]:
    """``[`` text ``,`` text ... ``]`` in batches of about ``_BATCH`` bytes."""
    batch = bytearray(b"[")
    for i, text in enumerate(texts):
        if i:
            batch += b","
        batch += absolute_bulkdata_uris(text.encode(), base_url)
        if len(batch) >= _BATCH:
            yield bytes(batch)
            batch.clear()
    batch += b"]"
    yield bytes(batch)


async def retrieve_metadata(request: Request) -> Response:
    """Retrieve Study / Series / Instance Metadata, by the route's path parameters."""
    ctx = context(request)
    target = target_of(request.path_params)
    media_type = metadata_media_type(accept_ranges(request))
    base = ctx.base_url(request)
    if request.headers.get("if-none-match"):  # revalidation: the digests alone decide
        digests = await instance_digests(ctx.pool, target, principal_of(request).labels)
        headers = cache_headers(ctx.settings, target, _etag(digests, media_type, base))
        if matches(request, headers["ETag"]):
            return not_modified(headers)
    rows = await metadata_rows(ctx.pool, target, principal_of(request).labels)
    etag = _etag([digest for digest, _ in rows], media_type, base)
    return StreamingResponse(
        _array([text for _, text in rows], base),
        media_type=media_type,
        headers=cache_headers(ctx.settings, target, etag),
    )


def _etag(digests: list[str], media_type: str, base_url: str) -> str:
    """The validator of a metadata response: its instances' objects, in order (their
    number with them), the media type and the base of the BulkDataURIs."""
    return entity_tag("metadata", len(digests), digests, media_type, base_url)


_SERIES = "/studies/{study}/series/{series}"

routes = [
    Route(
        "/studies/{study}/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="retrieve_study_metadata",
    ),
    Route(
        _SERIES + "/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="retrieve_series_metadata",
    ),
    Route(
        _SERIES + "/instances/{instance}/metadata",
        retrieve_metadata,
        methods=["GET"],
        name="retrieve_instance_metadata",
    ),
]
