"""Reading what a request accepts: the ``accept`` query parameter, else the Accept header.

PS3.18 8.3.3.1: the ``accept`` query parameter has the same semantics as the Accept
header and, when present, takes its place (several values are joined as one list).
Every service reads it here. In a query string an unescaped ``+`` decodes as a space
(``application/dicom json``); that is undone for the ``+json`` / ``+xml`` suffixes.
WADO-URI names the same thing ``contentType`` (PS3.18 9.1.2.1): ``param`` selects it.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from tessera.shared.errors import NotAcceptable
from tessera.shared.mediatypes import AcceptRange, parse_accept

_PLUS = re.compile(r"(?<=\w) (?=json\b|xml\b)")


def requested_accept(request: Request, param: str = "accept") -> str | None:
    """The Accept value to negotiate with: the query parameter's, else the header's."""
    values = [_PLUS.sub("+", v) for v in request.query_params.getlist(param) if v]
    return ", ".join(values) if values else request.headers.get("accept")


def accept_ranges(request: Request, param: str = "accept") -> list[AcceptRange]:
    """The request's acceptable media ranges, best first (PS3.18 8.3.3.1, 8.7.5);
    406 if none of them can be parsed."""
    ranges = parse_accept(requested_accept(request, param))
    if not ranges:
        raise NotAcceptable("the Accept header has no valid media range")
    return ranges
