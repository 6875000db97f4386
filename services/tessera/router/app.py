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
chooses for it (its owner: placement and overrides, see :mod:`tessera.router.shards`).
One that names none goes through to the shard when there is one; with N shards a search
is fanned out to all (:mod:`tessera.router.qido_fanout`) and a store is split by study
(:mod:`tessera.router.stow_split`). With ``router_database_url`` the shards come from the
registry (:mod:`tessera.router.registry`), polled every ``registry_poll`` seconds; without,
the one shard of ``ingest_url``/``index_url``/``retrieve_url``.

CORS (for browser viewers such as OHIF) wraps every route and answers preflight
requests itself, before any authentication. Retrieve responses carry
``Cross-Origin-Resource-Policy`` so that a cross-origin-isolated viewer (COEP
``require-corp``) on another origin may load them even without CORS (``<img>`` thumbnails):
``cross-origin`` when CORS allows any origin at all, else ``same-origin``.

Beside the API, ``/viewer/`` serves the OHIF viewer (:mod:`tessera.router.viewer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tessera.router import capabilities, study_labels, viewer
from tessera.router.auth import apikeys_api, audit
from tessera.router.auth.middleware import RouterAuth, admin_only, requires
from tessera.router.auth.security import Security, database_of
from tessera.router.changefeed import ChangeFeed
from tessera.router.proxy import Proxy, open_session
from tessera.router.qido_fanout import QidoFanOut
from tessera.router.rebalance import api as rebalance_api
from tessera.router.registry import Registry, RegistryWatcher
from tessera.router.shards import Service, Shard, ShardMap
from tessera.router.stow_metadata import with_metadata_form
from tessera.router.stow_split import LOCKED_RETRY_AFTER, StowSplit
from tessera.router.xml_answers import Form, is_metadata, xml_capable
from tessera.shared import dimse_api
from tessera.shared.auth import Permission
from tessera.shared.auth.internal import httpx_auth, principal_of
from tessera.shared.auth.labels import stored_labels
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.http import make_app
from tessera.shared.levels import Layout
from tessera.shared.qido.attributes import Level
from tessera.shared.refs import check_uid
from tessera.shared.settings import Settings

# seconds a client waits to delete a study a rebalance will move (README "Many shards")
TRANSITION_RETRY_AFTER = 30
# seconds a shard service has to answer /readyz (readiness, a shard being added)
PROBE_TIMEOUT = 3.0

CORS_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
CORS_REQUEST_HEADERS = [
    "Authorization",
    "Accept",
    "Content-Type",
    "Range",
    "If-Range",
    "If-None-Match",
]
CORS_EXPOSED_HEADERS = [
    "Warning",
    "ETag",
    "Content-Location",
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Retry-After",
]

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Clients:
    """What a started router sends shard requests with, all on one HTTP session."""

    proxy: Proxy  # requests that name their study, streamed to its owner
    fanout: QidoFanOut  # QIDO-RS across N shards
    split: StowSplit  # STOW-RS split by study across N shards


class Router:
    """Routes, lifespan and readiness of a router app over a :class:`ShardMap`."""

    def __init__(self, settings: Settings, shards: ShardMap | None = None) -> None:
        self.settings = settings
        self.prefix = settings.dicomweb_prefix.rstrip("/")
        self.resource_policy = "cross-origin" if settings.cors_origins else "same-origin"
        self._static = shards
        if shards is None and not settings.router_database_url:
            self._static = ShardMap.from_settings(settings)
        self._clients: Clients | None = None
        self.security = Security(settings)
        self._internal_http: httpx.AsyncClient | None = None
        self.registry: Registry | None = None
        self._watcher: RegistryWatcher | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # one HTTP client for every request to a shard: the proxy, the QIDO-RS fan-out,
        # the STOW-RS split and the /healthz probes (tessera.router.proxy)
        session = open_session()
        settings = self.settings
        try:
            await self.security.start()
            # admin calls to the shards' internal routes (study labels)
            self._internal_http = httpx.AsyncClient(
                timeout=30, trust_env=False, auth=httpx_auth(settings)
            )
            if self._static is None:
                self.registry = await Registry.connect(settings.router_database_url)
                self._watcher = RegistryWatcher(self.registry, settings.registry_poll)
                await self._watcher.start()
            self._clients = Clients(
                proxy=Proxy(session, self.prefix),
                fanout=QidoFanOut(
                    session,
                    self.prefix,
                    settings.qido_max_limit,
                    settings.router_shard_timeout,
                    Layout.parse(settings.qido_extra_attributes),
                ),
                split=StowSplit(session, self.prefix, settings),
            )
            yield
        finally:
            self._clients = None
            if self._watcher is not None:
                await self._watcher.stop()
            if self.registry is not None:
                await self.registry.close()
            await self.security.close()
            if self._internal_http is not None:
                await self._internal_http.aclose()
            await session.close()

    def connected_registry(self) -> Registry:
        """The registry, once the lifespan has opened it."""
        if self.registry is None:
            raise ServiceUnavailable("the shard registry is not connected", retry_after=1)
        return self.registry

    @property
    def shards(self) -> ShardMap:
        if self._static is not None:
            return self._static
        if self._watcher is None:
            raise ServiceUnavailable("the router is not started", retry_after=1)
        return self._watcher.map

    @property
    def clients(self) -> Clients:
        if self._clients is None:
            raise ServiceUnavailable("the router is not started", retry_after=1)
        return self._clients

    def internal_http(self) -> httpx.AsyncClient:
        if self._internal_http is None:
            raise ServiceUnavailable("the router is not started", retry_after=1)
        return self._internal_http

    @property
    def proxy(self) -> Proxy:
        return self.clients.proxy

    def _to(self, service: Service) -> Endpoint:
        """An endpoint for requests that name their study: to its owner, streamed."""

        async def endpoint(request: Request) -> Response:
            if "study" in request.path_params:
                study = check_uid(request.path_params["study"], "StudyInstanceUID")
            else:  # WADO-URI names the study in its query (PS3.18 9.1.2)
                study = check_uid(request.query_params.get("studyUID", ""), "studyUID")
            shards = self.shards
            if service is Service.INGEST:
                check_store_labels(request)
                owner = (await StowSplit.owners(shards, {study}, self._pin))[study]
                shard = shards.get(owner, study)
            else:
                shard = shards.for_study(study)
            response = await self.proxy.forward(request, shard.url(service))
            if service is Service.RETRIEVE:
                response.headers.setdefault("Cross-Origin-Resource-Policy", self.resource_policy)
            return response

        endpoint.__name__ = f"{service}_study"
        return endpoint

    async def _delete(self, request: Request) -> Response:
        """DELETE of a study, series or instance: to the index of the study's owner.

        Refused (503 + Retry-After) while a rebalance may move the study: it is locked
        for its move's end, or a transition will place it elsewhere. A delete then could
        race the copy and leave the study on its new shard."""
        study = check_uid(request.path_params["study"], "StudyInstanceUID")
        shards = self.shards
        locked = study in shards.locked
        if locked or (
            study not in shards.overrides
            and shards.next_owner(study) not in (None, shards.owner(study))
        ):
            raise ServiceUnavailable(
                f"study {study} is being moved to another shard; delete it once the move is done",
                retry_after=LOCKED_RETRY_AFTER if locked else TRANSITION_RETRY_AFTER,
            )
        return await self.proxy.forward(request, shards.for_study(study).url(Service.INDEX))

    def _search(self, level: Level) -> Endpoint:
        """QIDO-RS across studies: through to the one shard, or fanned out to all."""

        async def endpoint(request: Request) -> Response:
            shards = self.shards
            only = shards.only()
            if only is not None:
                return await self.proxy.forward(request, only.url(Service.INDEX))
            return await self.clients.fanout.search(request, level, shards)

        endpoint.__name__ = f"search_for_{level.label}"
        return xml_capable(endpoint, Form.DATASETS)

    async def _store(self, request: Request) -> Response:
        """STOW-RS to /studies: through to the one shard, or split by study."""
        check_store_labels(request)
        shards = self.shards
        only = shards.only()
        if only is not None:
            return await self.proxy.forward(request, only.url(Service.INGEST))
        return await self.clients.split.store(request, shards, self._pin)

    async def _pin(self, uids: list[str], shard: str) -> dict[str, str]:
        if self.registry is None:
            return dict.fromkeys(uids, shard)
        return await self.registry.pin(uids, shard)

    def routes(self) -> list[BaseRoute]:
        """The DICOMweb routes, each with the permission it needs (README "Security")."""
        p, get = self.prefix, ["GET"]  # Starlette adds HEAD to GET routes
        study = f"{p}/studies/{{study}}"
        read, write = requires(Permission.READ), requires(Permission.WRITE)
        delete = requires(Permission.DELETE)(self._delete)
        series, instance = (
            f"{study}/series/{{series}}",
            f"{study}/series/{{series}}/instances/{{instance}}",
        )
        # XML answers (PS3.18 8.7.4) are rendered here from the shards' DICOM JSON
        # STOW-RS of metadata + bulk data (PS3.18 10.5.1.1.2) becomes PS3.10 instances here
        stow = xml_capable(with_metadata_form(self._store, self.settings), Form.DOCUMENT)
        stow_study = xml_capable(
            with_metadata_form(self._to(Service.INGEST), self.settings), Form.DOCUMENT
        )
        in_study = xml_capable(self._to(Service.INDEX), Form.DATASETS)
        retrieve = xml_capable(self._to(Service.RETRIEVE), Form.DATASETS, when=is_metadata)
        return [
            Route(f"{p}/studies", write(stow), methods=["POST"]),
            Route(f"{p}/studies", read(self._search(Level.STUDY)), methods=get),
            Route(f"{p}/series", read(self._search(Level.SERIES)), methods=get),
            Route(f"{p}/instances", read(self._search(Level.INSTANCE)), methods=get),
            Route(study, write(stow_study), methods=["POST"]),
            Route(f"{study}/series", read(in_study), methods=get),
            Route(f"{study}/instances", read(in_study), methods=get),
            Route(f"{study}/series/{{series}}/instances", read(in_study), methods=get),
            Route(study, read(self._to(Service.RETRIEVE)), methods=get),
            Route(f"{study}/{{rest:path}}", read(retrieve), methods=get),
            Route(f"{p}/wado", read(self._to(Service.RETRIEVE)), methods=get),
            *ChangeFeed(lambda: self.shards, self.internal_http).routes(p, read),
            Route(study, delete, methods=["DELETE"]),
            Route(series, delete, methods=["DELETE"]),
            Route(instance, delete, methods=["DELETE"]),
            *capabilities.routes(p),  # OPTIONS on the service root (PS3.18 8.9): open
        ]

    async def studies_of_patient(self, patient_id: str) -> list[str]:
        """Every StudyInstanceUID of a PatientID on every shard (for the audit trail),
        asked of each shard's index with the router's own credential."""
        client = self.internal_http()

        async def one(shard: Shard) -> list[str]:
            r = await client.get(
                shard.url(Service.INDEX) + "/studies",
                params={"PatientID": patient_id, "includefield": "0020000D", "limit": "1000"},
                headers={"Accept": "application/dicom+json"},
            )
            if r.status_code >= 400:
                raise ServiceUnavailable(f"shard {shard.name} answered {r.status_code}", 5)
            return [s["0020000D"]["Value"][0] for s in (r.json() if r.content else [])]

        try:
            found = await asyncio.gather(*(one(s) for s in self.shards.all()))
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"a shard did not answer ({e})", 5) from None
        return sorted({uid for studies in found for uid in studies})

    def admin_routes(self) -> list[BaseRoute]:
        """``/admin/...``: the audit trail and API keys (with the router's database), and
        shards and rebalance jobs (with a registry); all need the admin permission."""
        routes: list[BaseRoute] = [*study_labels.routes(lambda: self.shards, self.internal_http)]
        if database_of(self.settings):
            routes += audit.routes(self.security.audit_trail, self.studies_of_patient)
            routes += apikeys_api.routes(self.security.api_keys)
        if self.settings.router_database_url and self._static is None:
            routes += rebalance_api.routes(self.connected_registry, self.settings, probe=self.probe)
        if self.settings.dimse_url:
            routes += self.dimse_routes()
        return admin_only(routes)

    def dimse_routes(self) -> list[BaseRoute]:
        """The DIMSE gateway's AE registry and SCU jobs (:mod:`tessera.shared.dimse_api`),
        forwarded to the gateway as they are."""
        gateway = self.settings.dimse_url

        async def to_gateway(request: Request) -> Response:
            return await self.proxy.forward(request, gateway)

        methods = ["GET", "POST", "PUT", "DELETE"]
        return [
            route
            for prefix in dimse_api.PREFIXES
            for route in (
                Route(prefix, to_gateway, methods=methods),
                Route(prefix + "/{rest:path}", to_gateway, methods=methods),
            )
        ]

    async def ready(self) -> dict[str, str]:
        """Each service of each shard is ready (its ``/readyz``: its database, Redis,
        storage answer). With one shard (or none
        answering) a service down makes the router not ready; with N, a shard down is
        reported but the router stays ready: it still serves the others' studies."""
        targets = [
            (f"{shard.name}.{service}", shard.url(service))
            for shard in self.shards.all()
            for service in Service
        ]
        dimse = self.settings.dimse_url
        *results, dimse_why = await asyncio.gather(
            *(self.probe(url) for _, url in targets),
            self.probe(dimse) if dimse else asyncio.sleep(0, ""),
        )
        down = [f"{name} ({why})" for (name, _), why in zip(targets, results, strict=True) if why]
        if down and (len(self.shards.shards) <= 1 or len(down) == len(targets)):
            raise ServiceUnavailable("not answering: " + ", ".join(down))
        report = {
            name: f"down ({why})" if why else "ok"
            for (name, _), why in zip(targets, results, strict=True)
        }
        if dimse:  # reported; DICOMweb does not need it
            report["dimse"] = f"down ({dimse_why})" if dimse_why else "ok"
        return report

    async def probe(self, base_url: str) -> str:
        """Empty if ``base_url/readyz`` answers 200, else why not."""
        return await self.proxy.probe(base_url, PROBE_TIMEOUT)


def check_store_labels(request: Request) -> None:
    """Refuse (400, 403) the ``label`` parameters of a STOW-RS before any byte goes to a
    shard: the same rule the shard's ingest applies (:mod:`tessera.shared.auth.labels`)."""
    stored_labels(principal_of(request), request.query_params.getlist("label"))


def create_app(settings: Settings, *, shards: ShardMap | None = None) -> Starlette:
    """The router app; ``shards`` defaults to the registry at ``router_database_url``,
    or without one to the one shard of ``settings``. It reaches the shard services at
    their URLs (tests serve stand-ins over TCP: ``tests/support/serving.py``)."""
    router = Router(settings, shards)
    routes = [*router.routes(), *router.admin_routes(), *viewer.routes(settings)]
    app = make_app(
        routes,
        lifespan=router.lifespan,
        ready=router.ready,
        ready_timeout=PROBE_TIMEOUT + 1.0,  # its shards' probes run in parallel
        guard=Middleware(RouterAuth, security=router.security, prefix=router.prefix),
    )
    # outermost: CORS headers on every answer, refusals included, and preflight before auth
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=CORS_METHODS,
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        max_age=600,
    )
    return app
