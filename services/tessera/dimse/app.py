"""The gateway's HTTP side: ``/healthz``, ``/readyz``, ``/metrics``, and the AE registry,
SCU API and DICOMweb peers API the router forwards (:mod:`tessera.shared.dimse_api`,
:mod:`tessera.dimse.peers`); like a shard
service, it answers only the router's internal credential (admin requests).

The lifespan opens the database, the registry, the archive client and the jobs, then
starts the DIMSE listeners; it stops them in the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.dimse import scu, server
from tessera.dimse.admin import json_object, require_admin
from tessera.dimse.archive import Archive, Refused, router_url
from tessera.dimse.context import Gateway
from tessera.dimse.jobs import Jobs
from tessera.dimse.nodes import DicomNode, NodeRegistry, check_ae_title
from tessera.dimse.peers import api as peers_api
from tessera.dimse.peers.jobs import PeerJobs
from tessera.dimse.peers.registry import PeerRegistry
from tessera.dimse.webhooks import ROUTES as webhook_routes
from tessera.dimse.webhooks import Webhooks
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.dimse_api import JOBS, NODES
from tessera.shared.errors import BadRequest, NotFound, ServiceUnavailable
from tessera.shared.http import make_app
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = "tessera.dimse"


def database_of(settings: Settings) -> str:
    return settings.dimse_database_url or settings.auth_database_url or settings.router_database_url


class GatewayApp:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if not database_of(settings):
            raise SystemExit(
                "the DIMSE gateway keeps its AE registry in PostgreSQL: set "
                "TESSERA_DIMSE_DATABASE_URL (or TESSERA_AUTH_DATABASE_URL)"
            )
        self.pool: asyncpg.Pool | None = None
        self.gateway: Gateway | None = None
        self.jobs: Jobs | None = None
        self.peers: PeerRegistry | None = None
        self.peer_jobs: PeerJobs | None = None
        self.webhooks: Webhooks | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        dsn = database_of(self.settings)
        await apply_migrations(dsn, MIGRATIONS)
        self.pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert self.pool is not None
        nodes = NodeRegistry(self.pool)
        await nodes.start()
        archive = Archive(self.settings)
        self.gateway = Gateway(self.settings, nodes, archive)
        self.jobs = Jobs(self.pool, self.gateway)
        self.peers = PeerRegistry(self.pool)
        self.peer_jobs = PeerJobs(self.pool, self.peers, archive, self.settings.dimse_job_stale)
        self.webhooks = Webhooks(self.pool, self.settings, dsn)
        ae = server.build_ae(self.gateway)
        listeners = server.start(self.gateway, ae)
        await self.jobs.start()
        await self.peer_jobs.start()
        await self.webhooks.start()
        where = f"{self.gateway.ae_title}@{self.settings.host}:{self.settings.dimse_port}"
        log.info("DIMSE gateway %s (TLS port %s)", where, self.settings.dimse_tls_port or "none")
        try:
            yield
        finally:
            for listener in listeners:
                await asyncio.to_thread(listener.shutdown)
            self.jobs.close()
            self.peer_jobs.close()
            await self.webhooks.close()
            await nodes.close()
            archive.close()
            await self.pool.close()

    def _gateway(self) -> Gateway:
        if self.gateway is None:
            raise ServiceUnavailable("the gateway is starting", retry_after=1)
        return self.gateway

    def _jobs(self) -> Jobs:
        if self.jobs is None:
            raise ServiceUnavailable("the gateway is starting", retry_after=1)
        return self.jobs

    async def ready(self) -> dict[str, str]:
        """The database answers, and so does the router (its /healthz: the router's own
        /readyz reports the gateway's, so asking it back would go round in a circle)."""
        gateway = self._gateway()
        assert self.pool is not None
        try:
            await self.pool.fetchval("SELECT 1", timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError) as e:
            raise ServiceUnavailable(f"PostgreSQL: {type(e).__name__}") from None
        base = router_url(self.settings).removesuffix(self.settings.dicomweb_prefix)
        try:
            async with httpx.AsyncClient(timeout=2, verify=_verify(self.settings)) as client:
                r = await client.get(base + "/healthz")
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"the router: {type(e).__name__}") from None
        if r.status_code != 200:
            raise ServiceUnavailable(f"the router is not ready ({r.status_code})")
        return {"database": "ok", "archive": "ok", "nodes": str(len(gateway.nodes.all()))}

    # -- the API -------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        node = NODES + "/{aet}"
        return [
            Route(NODES, self.list_nodes, methods=["GET"]),
            Route(node, self.get_node, methods=["GET"]),
            Route(node, self.put_node, methods=["PUT"]),
            Route(node, self.delete_node, methods=["DELETE"]),
            Route(node + "/echo", self.echo, methods=["POST"]),
            Route(node + "/find", self.find, methods=["POST"]),
            Route(node + "/move", self.job("move"), methods=["POST"]),
            Route(node + "/store", self.job("store"), methods=["POST"]),
            Route(JOBS, self.list_jobs, methods=["GET"]),
            Route(JOBS + "/{id}", self.get_job, methods=["GET"]),
            *peers_api.routes(self._peers),
            *[
                Route(path, self._to_webhooks(name), methods=[method])
                for path, method, name in webhook_routes
            ],
        ]

    def _to_webhooks(self, name: str) -> Any:
        async def call(request: Request) -> Response:
            if self.webhooks is None:
                raise ServiceUnavailable("the gateway is starting", retry_after=1)
            answer: Response = await getattr(self.webhooks, name)(request)
            return answer

        call.__name__ = name
        return call

    def _peers(self) -> tuple[PeerRegistry, PeerJobs]:
        if self.peers is None or self.peer_jobs is None:
            raise ServiceUnavailable("the gateway is starting", retry_after=1)
        return self.peers, self.peer_jobs

    def _node(self, request: Request) -> DicomNode:
        _admin(request)
        title = check_ae_title(request.path_params["aet"])
        node = self._gateway().nodes.get(title)
        if node is None:
            raise NotFound(f"no node {title}")
        return node

    async def list_nodes(self, request: Request) -> Response:
        _admin(request)
        return JSONResponse({"nodes": [n.to_json() for n in self._gateway().nodes.all()]})

    async def get_node(self, request: Request) -> Response:
        return JSONResponse(self._node(request).to_json())

    async def put_node(self, request: Request) -> Response:
        _admin(request)
        node = DicomNode.from_json(request.path_params["aet"], await json_object(request))
        created = await self._gateway().nodes.put(node)
        return JSONResponse(node.to_json(), status_code=201 if created else 200)

    async def delete_node(self, request: Request) -> Response:
        _admin(request)
        title = check_ae_title(request.path_params["aet"])
        if not await self._gateway().nodes.delete(title):
            raise NotFound(f"no node {title}")
        return Response(status_code=204)

    async def echo(self, request: Request) -> Response:
        node = self._node(request)
        try:
            status = await asyncio.to_thread(scu.echo, self._gateway(), node)
        except scu.NodeUnreachable as e:
            return JSONResponse({"error": str(e)}, status_code=502)
        return JSONResponse({"status": status}, status_code=200 if status == 0 else 502)

    async def find(self, request: Request) -> Response:
        node = self._node(request)
        doc = await json_object(request)
        query = scu.identifier(str(doc.get("level", "STUDY")), doc.get("keys", {}))
        try:
            found = await asyncio.to_thread(
                scu.find, self._gateway(), node, query, str(doc.get("model", "study"))
            )
        except (scu.NodeUnreachable, Refused) as e:
            return JSONResponse({"error": str(e)}, status_code=502)
        return JSONResponse(found)

    def job(self, kind: str) -> Any:
        async def create(request: Request) -> Response:
            node = self._node(request)
            doc = await json_object(request)
            level, keys = str(doc.get("level", "STUDY")), doc.get("keys", {})
            scu.identifier(level, keys)  # refused now (400) rather than in the job
            request_doc = {"level": level, "keys": keys, "model": str(doc.get("model", "study"))}
            if kind == "move" and request_doc["model"] not in scu.MOVE_MODELS:
                raise BadRequest("model: study or patient")
            job = await self._jobs().create(kind, node.ae_title, request_doc)
            return JSONResponse(job, status_code=202, headers={"Location": f"{JOBS}/{job['id']}"})

        create.__name__ = f"{kind}_job"
        return create

    async def list_jobs(self, request: Request) -> Response:
        _admin(request)
        return JSONResponse({"jobs": await self._jobs().list()})

    async def get_job(self, request: Request) -> Response:
        _admin(request)
        job = await self._jobs().get(request.path_params["id"])
        if job is None:
            raise NotFound("no such job")
        return JSONResponse(job)


def _verify(settings: Settings) -> Any:
    if settings.dimse_router_ca:
        import ssl

        return ssl.create_default_context(cafile=settings.dimse_router_ca)
    return True


def _admin(request: Request) -> None:
    require_admin(request, "DIMSE")


def create_app(settings: Settings) -> Starlette:
    gateway = GatewayApp(settings)
    return make_app(
        gateway.routes(), lifespan=gateway.lifespan, ready=gateway.ready, shard=settings
    )
