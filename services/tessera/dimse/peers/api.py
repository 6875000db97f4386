"""The peers' admin API (:mod:`tessera.shared.dimse_api`), served by the gateway and
forwarded by the router with the caller's admin permission checked and audited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.dimse.admin import json_object, require_admin
from tessera.dimse.peers.jobs import KINDS, PeerJobs
from tessera.dimse.peers.registry import Peer, PeerRegistry, check_name
from tessera.dimse.peers.remote import PeerRefused, PeerUnavailable, Remote
from tessera.dimse.peers.transfer import check_request
from tessera.shared.dimse_api import PEER_JOBS, PEERS
from tessera.shared.errors import BadRequest, NotFound

Parts = Callable[[], tuple[PeerRegistry, PeerJobs]]


def _admin(request: Request) -> str:
    return require_admin(request, "peers")


def routes(parts: Parts) -> list[Route]:
    async def peer_of(request: Request) -> Peer:
        _admin(request)
        name = check_name(request.path_params["name"])
        peer = await parts()[0].get(name)
        if peer is None:
            raise NotFound(f"no peer {name}")
        return peer

    async def list_peers(request: Request) -> Response:
        _admin(request)
        return JSONResponse({"peers": [p.to_json() for p in await parts()[0].all()]})

    async def get_peer(request: Request) -> Response:
        return JSONResponse((await peer_of(request)).to_json())

    async def put_peer(request: Request) -> Response:
        _admin(request)
        name = check_name(request.path_params["name"])
        registry = parts()[0]
        peer = Peer.from_json(name, await json_object(request), await registry.get(name))
        created = await registry.put(peer)
        return JSONResponse(peer.to_json(), status_code=201 if created else 200)

    async def delete_peer(request: Request) -> Response:
        _admin(request)
        if not await parts()[0].delete(check_name(request.path_params["name"])):
            raise NotFound("no such peer")
        return Response(status_code=204)

    async def check(request: Request) -> Response:
        """Reach the peer: a one-result search there (its address, TLS and credentials)."""
        peer = await peer_of(request)

        def ask() -> int:
            with Remote(peer) as remote:
                r = remote.request("GET", "/studies", params={"limit": "1"},
                                   headers={"Accept": "application/dicom+json"})  # fmt: skip
                return r.status_code

        try:
            status = await asyncio.to_thread(ask)
        except (PeerUnavailable, PeerRefused, OSError) as e:
            return JSONResponse({"ok": False, "error": str(e)}, status_code=502)
        ok = status in (200, 204)
        return JSONResponse({"ok": ok, "status": status}, status_code=200 if ok else 502)

    def job(kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def create(request: Request) -> Response:
            by = _admin(request)
            peer = await peer_of(request)
            doc = check_request(kind, await json_object(request))
            if kind == "mirror" and peer.kind == "dicomweb" and doc.get("from") == "now":
                raise BadRequest("from=now follows a change feed: the peer's kind is tessera")
            made = await parts()[1].create(kind, peer.name, doc, by)
            return JSONResponse(
                made, status_code=202, headers={"Location": f"{PEER_JOBS}/{made['id']}"}
            )

        create.__name__ = f"peer_{kind}"
        return create

    async def list_jobs(request: Request) -> Response:
        _admin(request)
        return JSONResponse({"jobs": await parts()[1].list()})

    async def get_job(request: Request) -> Response:
        _admin(request)
        found = await parts()[1].get(request.path_params["id"])
        if found is None:
            raise NotFound("no such job")
        return JSONResponse(found)

    async def cancel_job(request: Request) -> Response:
        _admin(request)
        found = await parts()[1].cancel(request.path_params["id"])
        if found is None:
            raise NotFound("no such job")
        return JSONResponse(found)

    peer = PEERS + "/{name}"
    return [
        Route(PEERS, list_peers, methods=["GET"]),
        Route(peer, get_peer, methods=["GET"]),
        Route(peer, put_peer, methods=["PUT"]),
        Route(peer, delete_peer, methods=["DELETE"]),
        Route(peer + "/check", check, methods=["POST"]),
        *(Route(f"{peer}/{kind}", job(kind), methods=["POST"]) for kind in KINDS),
        Route(PEER_JOBS, list_jobs, methods=["GET"]),
        Route(PEER_JOBS + "/{id}", get_job, methods=["GET"]),
        Route(PEER_JOBS + "/{id}", cancel_job, methods=["DELETE"]),
    ]
