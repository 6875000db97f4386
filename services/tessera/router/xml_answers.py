"""``application/dicom+xml`` answers (PS3.18 8.7.4, 10.5.3, 10.6.3; PS3.19 A.1).

The shard services answer searches, metadata and STOW-RS in DICOM JSON. When a client
prefers XML (the Accept header or the ``accept`` parameter, PS3.18 8.3.3.1), the router
asks the shard for JSON and renders each data set as a PS3.19 ``NativeDicomModel``
(:mod:`tessera.shared.dicomxml`), so every shard, one or many, answers XML alike:

* search results and metadata: ``multipart/related; type="application/dicom+xml"``, one
  part per data set (PS3.18 Table 8.7.4-1, 10.4.1.2, 10.6.3.2); asking for
  ``application/dicom+xml`` alone is read as asking for that;
* the STOW-RS response: one ``application/dicom+xml`` document (PS3.18 10.5.3.1).

JSON stays the default: XML is chosen only when an XML type is named with a higher
``q`` than every JSON type that the Accept allows (``*/*`` is JSON). Answers that are not
a 2xx (or a STOW-RS 409) in DICOM JSON, such as errors, pass unchanged.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tessera.shared.accept import requested_accept
from tessera.shared.dicomxml import DICOM_XML, dataset_to_xml
from tessera.shared.errors import BadGateway, BadRequest
from tessera.shared.http import DICOM_JSON
from tessera.shared.mediatypes import AcceptRange, parse_accept, parse_media_type
from tessera.shared.multipart import PartOut, multipart_content_type, new_boundary, write_parts

Endpoint = Callable[[Request], Awaitable[Response]]

# the largest JSON answer turned into XML (a study's metadata is a few MB per 1,000 instances)
MAX_JSON_ANSWER = 512 * 1024 * 1024
_JSON_TYPES = (DICOM_JSON, "application/json")


class Form(enum.Enum):
    DATASETS = "datasets"  # search results, metadata: multipart/related, a part each
    DOCUMENT = "document"  # the STOW-RS response: one document


def xml_q(ranges: list[AcceptRange]) -> float:
    """The weight the Accept ranges give an XML answer (0: not asked)."""
    best = 0.0
    for r in ranges:
        named = r.essence == DICOM_XML
        if r.essence == "multipart/related" and "type" in r.params:
            try:
                named = parse_media_type(r.params["type"]).essence == DICOM_XML
            except BadRequest:
                named = False
        if named:
            best = max(best, r.q)
    return best


def json_q(ranges: list[AcceptRange]) -> float:
    """The weight of the best JSON answer: each type weighed by its most specific range
    (RFC 9110 12.5.1), ``*/*`` and ``application/*`` included."""
    best = 0.0
    for offer in _JSON_TYPES:
        matching = [r for r in ranges if r.matches(offer) and "type" not in r.params]
        if matching:
            best = max(best, max(matching, key=lambda r: r.specificity).q)
    return best


def wants_xml(request: Request) -> bool:
    ranges = parse_accept(requested_accept(request))
    q = xml_q(ranges)
    return q > 0 and q > json_q(ranges)


def as_json_request(request: Request) -> Request:
    """The same request asking for DICOM JSON: Accept replaced, ``accept=`` dropped."""
    scope = dict(request.scope)
    dropped = (b"accept", b"accept-encoding")  # the body is read here: identity
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() not in dropped] + [
        (b"accept", DICOM_JSON.encode()),
        (b"accept-encoding", b"identity"),
    ]
    query = request.scope.get("query_string", b"").decode("latin-1")
    if "accept=" in query:
        kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "accept"]
        scope["query_string"] = urlencode(kept).encode("latin-1")
    return Request(scope, request.receive)


def is_metadata(request: Request) -> bool:
    """A WADO-RS Retrieve Metadata request (PS3.18 10.4.1.1.2)."""
    return request.url.path.rstrip("/").endswith("/metadata")


def xml_capable(
    endpoint: Endpoint, form: Form, when: Callable[[Request], bool] | None = None
) -> Endpoint:
    """``endpoint`` answering XML when the client prefers it (and ``when`` holds)."""

    async def wrapped(request: Request) -> Response:
        if (when is not None and not when(request)) or not wants_xml(request):
            return await endpoint(request)
        response = await endpoint(as_json_request(request))
        return await to_xml(response, form)

    wrapped.__name__ = getattr(endpoint, "__name__", "endpoint")
    return wrapped


async def to_xml(response: Response, form: Form) -> Response:
    """A DICOM JSON answer rendered as XML; any other answer as it is."""
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    convertible = 200 <= response.status_code < 300 or (
        form is Form.DOCUMENT and response.status_code == 409
    )
    if not convertible or media_type not in _JSON_TYPES:
        return response
    body = await read_body(response)
    try:
        doc = json.loads(body) if body else []
    except ValueError:
        raise BadGateway("a shard answered malformed DICOM JSON") from None
    headers = {
        k: v
        for k, v in response.headers.items()
        if k.lower() in ("warning", "content-location", "etag", "last-modified")
    }
    if form is Form.DOCUMENT:
        return Response(
            dataset_to_xml(doc if isinstance(doc, dict) else {}),
            status_code=response.status_code,
            media_type=DICOM_XML,
            headers=headers,
        )
    datasets = doc if isinstance(doc, list) else [doc]
    if not datasets:
        return Response(status_code=204, headers=headers)
    boundary = new_boundary()
    parts = [PartOut(DICOM_XML, dataset_to_xml(d)) for d in datasets]
    return StreamingResponse(
        write_parts(parts, boundary),
        status_code=response.status_code,
        media_type=multipart_content_type(DICOM_XML, boundary),
        headers=headers,
    )


async def read_body(response: Response) -> bytes:
    """The whole body of a (small) answer; a proxied one's connection is released."""
    if not isinstance(response, StreamingResponse):
        return bytes(response.body)
    chunks, size = [], 0
    try:
        async for chunk in response.body_iterator:
            data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
            size += len(data)
            if size > MAX_JSON_ANSWER:
                raise BadGateway("the answer is too large to render as XML; ask for JSON")
            chunks.append(data)
    finally:
        upstream = getattr(response, "upstream", None)
        if upstream is not None:
            upstream.close()
    return b"".join(chunks)
