"""The router: the one public DICOMweb endpoint, in front of the shards.

Routes under ``settings.dicomweb_prefix`` (PS3.18 10, the RESTful services):

    POST /studies[/{study}]                          store_instances       -> ingest
    GET  /studies, /series, /instances               search_for_*          -> index
    GET  /studies/{study}/series                     search_for_series     -> index
    GET  /studies/{study}[/series/{series}]/instances search_for_instances -> index
    GET  /studies/{study}[/...]                      retrieve_* (instances, metadata,
                                                     bulkdata, frames, rendered,
                                                     thumbnail)            -> retrieve
    GET  /wado?requestType=WADO&studyUID=...         WADO-URI (PS3.18 9)   -> retrieve

A request that names a study goes to the shard :func:`~tessera.router.placement.place`
chooses for it; one that names none goes to the single shard (fan-out and STOW split
come with N shards). CORS (for browser viewers such as OHIF) wraps every route and
answers preflight requests itself, before any authentication. Retrieve responses carry
``Cross-Origin-Resource-Policy`` so that a cross-origin-isolated viewer (COEP
``require-corp``) on another origin may load them even without CORS (``<img>``
thumbnails): ``cross-origin`` when CORS allows any origin at all, else ``same-origin``.

Beside the API, ``/viewer/`` serves the OHIF viewer (:mod:`tessera.router.viewer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpcore
import httpx
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tessera.router import viewer
from tessera.router.proxy import Proxy
from tessera.router.shards import Service, ShardMap
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.http import make_app
from tessera.shared.refs import check_uid
from tessera.shared.settings import Settings

# Connecting to a shard must be quick; its answer may not be: a STOW of gigabytes is
# read for minutes, a WADO stream is written for as long as the client reads. So no
# read/write timeout, and no cap on connections (~100 parallel frame requests a viewer).
TIMEOUT = httpx.Timeout(connect=5.0, read=None, write=None, pool=5.0)
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256)
PROBE_TIMEOUT = 3.0
# httpcore asks its socket for at most 64 KiB per read (a class attribute, no option), and
# each read costs a pass through h11, httpx, Starlette and uvicorn: a WADO-RS study of
# hundreds of MB is relayed in what each read finds buffered, up to 1 MiB, instead.
httpcore.AsyncHTTP11Connection.READ_NUM_BYTES = 1024 * 1024

CORS_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS = ["Authorization", "Accept", "Content-Type", "Range", "If-None-Match"]
CORS_EXPOSED_HEADERS = ["Warning", "ETag", "Content-Location", "Content-Type", "Content-Length"]

Endpoint = Callable[[Request], Awaitable[Response]]


class Router:
    """Routes, lifespan and readiness of a router app over a :class:`ShardMap`."""

    def __init__(
        self,
        settings: Settings,
        shards: ShardMap,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.prefix = settings.dicomweb_prefix.rstrip("/")
        self.shards = shards
        self.resource_policy = "cross-origin" if settings.cors_origins else "same-origin"
        self._transport = transport
        self._proxy: Proxy | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        client = httpx.AsyncClient(
            timeout=TIMEOUT,
            limits=LIMITS,
            transport=self._transport,
            follow_redirects=False,
            trust_env=False,
        )
        self._proxy = Proxy(client, self.prefix)
        try:
            yield
        finally:
            self._proxy = None
            await client.aclose()

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            raise ServiceUnavailable("the router is not started", retry_after=1)
        return self._proxy

    def _to(self, service: Service, by_study: bool) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if by_study:
                if "study" in request.path_params:
                    study = check_uid(request.path_params["study"], "StudyInstanceUID")
                else:  # WADO-URI names the study in its query (PS3.18 9.1.2)
                    study = check_uid(request.query_params.get("studyUID", ""), "studyUID")
                shard = self.shards.for_study(study)
            else:
                shard = self.shards.only()
            response = await self.proxy.forward(request, shard.url(service))
            if service is Service.RETRIEVE:
                response.headers.setdefault("Cross-Origin-Resource-Policy", self.resource_policy)
            return response

        endpoint.__name__ = f"{service}_{'study' if by_study else 'root'}"
        return endpoint

    def routes(self) -> list[BaseRoute]:
        p, get = self.prefix, ["GET"]  # Starlette adds HEAD to GET routes
        study = f"{p}/studies/{{study}}"
        return [
            Route(f"{p}/studies", self._to(Service.INGEST, False), methods=["POST"]),
            Route(f"{p}/studies", self._to(Service.INDEX, False), methods=get),
            Route(f"{p}/series", self._to(Service.INDEX, False), methods=get),
            Route(f"{p}/instances", self._to(Service.INDEX, False), methods=get),
            Route(study, self._to(Service.INGEST, True), methods=["POST"]),
            Route(f"{study}/series", self._to(Service.INDEX, True), methods=get),
            Route(f"{study}/instances", self._to(Service.INDEX, True), methods=get),
            Route(
                f"{study}/series/{{series}}/instances",
                self._to(Service.INDEX, True),
                methods=get,
            ),
            Route(study, self._to(Service.RETRIEVE, True), methods=get),
            Route(f"{study}/{{rest:path}}", self._to(Service.RETRIEVE, True), methods=get),
            Route(f"{p}/wado", self._to(Service.RETRIEVE, True), methods=get),
        ]

    async def ready(self) -> dict[str, str]:
        """Each service of each shard answers its ``/healthz``; raises naming those that do not."""
        targets = [
            (f"{shard.name}.{service}", shard.url(service))
            for shard in self.shards.all()
            for service in Service
        ]
        results = await asyncio.gather(*(self._probe(url) for _, url in targets))
        down = [f"{name} ({why})" for (name, _), why in zip(targets, results, strict=True) if why]
        if down:
            raise ServiceUnavailable("not answering: " + ", ".join(down))
        return {name: "ok" for name, _ in targets}

    async def _probe(self, base_url: str) -> str:
        """Empty if ``base_url/healthz`` answers 200, else why not."""
        try:
            r = await self.proxy.client.get(base_url + "/healthz", timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as e:
            return type(e).__name__
        return "" if r.status_code == 200 else f"HTTP {r.status_code}"


def create_app(
    settings: Settings,
    *,
    shards: ShardMap | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """The router app; ``shards`` defaults to the one shard of ``settings``."""
    router = Router(settings, shards or ShardMap.from_settings(settings), transport)
    routes = [*router.routes(), *viewer.routes(settings)]
    app = make_app(routes, lifespan=router.lifespan, ready=router.ready)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=CORS_METHODS,
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=600,
    )
    return app
