"""The Retrieve Capabilities transaction (PS3.18 8.9, Annex H): ``OPTIONS /``.

``OPTIONS`` on the service's base URL answers a Capabilities Description: a WADL document
(``application/vnd.sun.wadl+xml``) with one ``resources`` element whose ``base`` is the
service's public URL, and the resource tree of Table H-1 as far as Tessera implements
it, each method named by its transaction with the media types it answers. What Tessera
does not implement (Retrieve Pixel Data, Retrieve Bulkdata at study/series level, the
Worklist and Non-Patient Instance services) is not listed. Beside Table H-1: DELETE of a
study, series or instance (as Microsoft's and Google's DICOM services have it).

The route is open like CORS preflight (every ``OPTIONS`` is): it names no patient data.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tessera.shared.accept import requested_accept
from tessera.shared.errors import NotAcceptable
from tessera.shared.http import public_base_url
from tessera.shared.mediatypes import parse_accept

WADL = "application/vnd.sun.wadl+xml"
_OFFERS = (WADL, "application/xml", "text/xml")

_JSON = ("application/dicom+json", 'multipart/related; type="application/dicom+xml"')
_INSTANCES = ('multipart/related; type="application/dicom"',)
_BULK = ('multipart/related; type="application/octet-stream"', "multipart/related; type=image/*")
_RENDERED = ("image/jpeg", "image/png", "image/gif", "image/jp2")
_STORE = (
    'multipart/related; type="application/dicom"',
    'multipart/related; type="application/dicom+json"',
    'multipart/related; type="application/dicom+xml"',
)
_QIDO = ("limit", "offset", "fuzzymatching", "includefield")


def _method(name: str, ident: str, responses: tuple[str, ...], query: tuple[str, ...] = ()) -> str:
    params = "".join(f'<param name="{q}" style="query"/>' for q in query)
    request = f"<request>{params}</request>" if params else ""
    if name == "POST":
        request = (
            "<request>"
            + "".join(f"<representation mediaType={quoteattr(m)}/>" for m in _STORE)
            + "</request>"
        )
        responses = ("application/dicom+json", "application/dicom+xml")
    reps = "".join(f"<representation mediaType={quoteattr(m)}/>" for m in responses)
    status = ' status="204"' if name == "DELETE" else ""
    return (
        f'<method name="{name}" id="{ident}">{request}<response{status}>{reps}</response></method>'
    )


def _resource(path: str, *inner: str) -> str:
    return f"<resource path={quoteattr(path)}>{''.join(inner)}</resource>"


def _get(path: str, ident: str, responses: tuple[str, ...], query: tuple[str, ...] = ()) -> str:
    return _resource(path, _method("GET", ident, responses, query))


def _derived(level: str) -> str:
    return _get("rendered", f"Retrieve{level}Rendered", _RENDERED) + _get(
        "thumbnail", f"Retrieve{level}Thumbnail", _RENDERED
    )


def _tree() -> str:
    frames = _resource(
        "frames/{frames}", _method("GET", "RetrieveFrames", _BULK), _derived("Frames")
    )
    instance = _resource(
        "{SOPInstanceUID}",
        _method("GET", "RetrieveInstance", _INSTANCES),
        _method("DELETE", "DeleteInstance", ()),
        _get("metadata", "RetrieveInstanceMetadata", _JSON),
        _derived("Instance"),
        _get("bulk/{tag-path}", "RetrieveBulkdata", _BULK),
        frames,
    )
    series = _resource(
        "{SeriesInstanceUID}",
        _method("GET", "RetrieveSeries", _INSTANCES),
        _method("DELETE", "DeleteSeries", ()),
        _get("metadata", "RetrieveSeriesMetadata", _JSON),
        _derived("Series"),
        _resource(
            "instances", _method("GET", "SearchForStudySeriesInstances", _JSON, _QIDO), instance
        ),
    )
    study = _resource(
        "{StudyInstanceUID}",
        _method("GET", "RetrieveStudy", _INSTANCES),
        _method("POST", "StoreStudyInstances", ()),
        _method("DELETE", "DeleteStudy", ()),
        _get("metadata", "RetrieveStudyMetadata", _JSON),
        _derived("Study"),
        _resource("series", _method("GET", "SearchForStudySeries", _JSON, _QIDO), series),
        _get("instances", "SearchForStudyInstances", _JSON, _QIDO),
    )
    return (
        _resource(
            "studies",
            _method("GET", "SearchForStudies", _JSON, _QIDO),
            _method("POST", "StoreInstances", ()),
            study,
        )
        + _get("series", "SearchForSeries", _JSON, _QIDO)
        + _get("instances", "SearchForInstances", _JSON, _QIDO)
    )


_TREE = _tree()


def description(base_url: str) -> bytes:
    """The WADL Capabilities Description of the service at ``base_url`` (PS3.18 Annex H)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<application xmlns="http://wadl.dev.java.net/2009/02">'
        f"<resources base={quoteattr(base_url.rstrip('/') + '/')}>{_TREE}</resources>"
        "</application>\n"
    ).encode()


def routes(prefix: str) -> list[BaseRoute]:
    async def retrieve_capabilities(request: Request) -> Response:
        ranges = parse_accept(requested_accept(request))
        for r in ranges:
            if r.q > 0 and any(r.matches(offer) for offer in _OFFERS):
                media_type = WADL if r.essence in ("*/*", "application/*") else None
                chosen = media_type or next(o for o in _OFFERS if r.matches(o))
                body = description(public_base_url(request, prefix))
                return Response(
                    body, media_type=chosen, headers={"Allow": "GET, POST, DELETE, OPTIONS"}
                )
        raise NotAcceptable(f"the Capabilities Description is {WADL} (PS3.18 Annex H)")

    paths = {prefix or "/", (prefix or "") + "/"}
    return [Route(path, retrieve_capabilities, methods=["OPTIONS"]) for path in sorted(paths)]
