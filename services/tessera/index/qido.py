"""QIDO-RS for one shard: the Search transaction, PS3.18 10.6.

Resources (PS3.18 Table 10.6.1-1), as ``search_for_*`` handlers:

    GET /studies                                      search_for_studies
    GET /studies/{study}/series                       search_for_series (study's series)
    GET /series                                       search_for_series (all series)
    GET /studies/{study}/series/{series}/instances    search_for_instances
    GET /studies/{study}/instances                    search_for_instances
    GET /instances                                    search_for_instances

The response is ``application/dicom+json`` (or ``application/json`` when only that is
acceptable); ``multipart/related; type="application/dicom+xml"`` is not produced, so an
Accept without a JSON type gets 406. An ``accept`` query parameter (PS3.18 8.3.3.1)
overrides the header.

No match is answered ``204 No Content`` with no body, as PS3.18 8.3.4.4.1 says (OHIF's
dicomweb-client and the Python dicomweb-client both read 204 as no results; the router's
merge reads it as an empty page). A study or series in the path that does not exist is
likewise an empty result, not 404.

Paging (PS3.18 8.3.4.4): ``limit`` is capped at ``settings.qido_max_limit``; when the
cap decides the page size and more matches remain, the response carries the 8.3.4.4.1
``Warning: 299`` header with the number of remaining matches (counted only then).

Each result's DICOM JSON comes from PostgreSQL as text (:mod:`tessera.shared.qido.render`);
the handler only joins the texts into the array. Which attributes are searchable at
which level follows the operator's ``TESSERA_QIDO_EXTRA_ATTRIBUTES`` (``app.state.layout``).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import asyncpg
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.shared.accept import requested_accept
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import NotAcceptable
from tessera.shared.http import DICOM_JSON, public_base_url
from tessera.shared.mediatypes import parse_accept
from tessera.shared.qido.params import Level, QidoQuery, Scope, parse_query
from tessera.shared.qido.render import body
from tessera.shared.qido.result import more_results_warning
from tessera.shared.qido.sql import count_sql, page_of, search_sql
from tessera.shared.refs import check_uid
from tessera.shared.settings import Settings

_OFFERS = (DICOM_JSON, "application/json")


def negotiate(request: Request) -> str:
    """The media type to answer with (PS3.18 8.7, RFC 9110 12.5.1); NotAcceptable if none."""
    header = requested_accept(request)
    ranges = parse_accept(header)
    best: tuple[float, str] | None = None
    for offer in _OFFERS:
        matching = [r for r in ranges if r.matches(offer)]
        if not matching:
            continue
        most_specific = max(matching, key=lambda r: r.specificity)  # RFC 9110 12.5.1
        if most_specific.q > 0 and (best is None or most_specific.q > best[0]):
            best = (most_specific.q, offer)
    if best is None:
        raise NotAcceptable(
            f"search results are available as {DICOM_JSON} only, not {header!r} (PS3.18 10.6.1)"
        )
    return best[1]


async def run_search(
    db: asyncpg.Pool | asyncpg.Connection, query: QidoQuery, max_limit: int, base_url: str = ""
) -> tuple[list[str], int]:
    """The DICOM JSON texts of the requested page's results, and the number of matches
    after it that a server-limited page left out (0 when the page is complete or the
    client's limit decided its size)."""
    page = page_of(query, max_limit)
    search = search_sql(query, page, base_url)
    documents = [row[0] for row in await db.fetch(search.text, *search.args)]
    if len(documents) <= page.limit:
        return documents, 0
    documents = documents[: page.limit]
    if not page.server_limited:
        return documents, 0
    count = count_sql(query)
    total = await db.fetchval(count.text, *count.args)
    return documents, max(1, total - page.offset - len(documents))


async def _search(request: Request, level: Level, scope: Scope) -> Response:
    media_type = negotiate(request)
    query = parse_query(request.query_params.multi_items(), level, scope, request.app.state.layout)
    # the caller's labels, filtered in the SQL so that paging and the Warning stay exact
    query = replace(query, labels=principal_of(request).labels)
    settings: Settings = request.app.state.settings
    base_url = public_base_url(request, settings.dicomweb_prefix)
    documents, remaining = await run_search(
        request.app.state.pool, query, settings.qido_max_limit, base_url
    )
    headers = {}
    if not documents:  # PS3.18 8.3.4.4.1: no matching results
        return Response(status_code=204)
    if remaining:
        headers["Warning"] = more_results_warning(urlsplit(base_url).netloc, remaining)
    return Response(body(documents), media_type=media_type, headers=headers)


def _path_uid(request: Request, name: str, label: str) -> str:
    return check_uid(request.path_params[name], label)


async def search_for_studies(request: Request) -> Response:
    return await _search(request, Level.STUDY, Scope())


async def search_for_series(request: Request) -> Response:
    study = None
    if "study" in request.path_params:
        study = _path_uid(request, "study", "StudyInstanceUID")
    return await _search(request, Level.SERIES, Scope(study))


async def search_for_instances(request: Request) -> Response:
    study = series = None
    if "study" in request.path_params:
        study = _path_uid(request, "study", "StudyInstanceUID")
    if "series" in request.path_params:
        series = _path_uid(request, "series", "SeriesInstanceUID")
    return await _search(request, Level.INSTANCE, Scope(study, series))


def routes() -> list[Route]:
    return [
        Route("/studies", search_for_studies, methods=["GET"]),
        Route("/studies/{study}/series", search_for_series, methods=["GET"]),
        Route("/series", search_for_series, methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", search_for_instances, methods=["GET"]),
        Route("/studies/{study}/instances", search_for_instances, methods=["GET"]),
        Route("/instances", search_for_instances, methods=["GET"]),
    ]
