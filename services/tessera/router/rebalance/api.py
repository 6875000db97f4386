"""The router's admin API for shards and rebalance jobs (JSON, outside the DICOMweb prefix).

    GET  /admin/shards                 the registered shards and their states
    POST /admin/shards                 {"name", "ingest_url", "index_url", "retrieve_url"}:
                                       register a shard (joining) and start the job that
                                       moves its studies to it -> 202 + the job
    POST /admin/shards/{name}/drain    start the job that empties a shard -> 202 + the job
    GET  /admin/rebalance              the latest jobs, newest first
    GET  /admin/rebalance/{id}         one job: state, total, moved, bytes, rate, eta, error

Jobs run in the rebalance worker (``python -m tessera.router.rebalance``); these routes
only create them and read their progress, so any router replica answers. The routes
carry no authentication of their own: like the rest of the router, deploy them behind
whatever guards the archive (or keep ``/admin`` off the public ingress).

``routes(registry, settings, probe=...)`` gives the routes; ``registry`` is the router's
:class:`~tessera.router.registry.Registry`, or a function returning it (for an app whose
registry is opened in its lifespan, after the routes are built); ``probe(base_url)`` asks
a service's ``/readyz`` through the router's HTTP client (``Router.probe``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tessera.router.rebalance.job import job_rows, progress, start_add, start_drain
from tessera.router.rebalance.worker import enqueue
from tessera.router.registry import Registry
from tessera.shared.errors import BadRequest, NotFound, ServiceUnavailable
from tessera.shared.settings import Settings

Enqueue = Callable[[Settings, int], None]
# ``base_url`` -> empty if its /healthz answers 200, else why not
Probe = Callable[[str], Awaitable[str]]


def routes(
    registry: Registry | Callable[[], Registry],
    settings: Settings,
    enqueue_job: Enqueue = enqueue,
    *,
    probe: Probe,
) -> list[BaseRoute]:
    """The admin routes; ``enqueue_job(settings, job_id)`` hands a new job to the worker,
    ``probe`` checks a shard's services before it is registered."""

    def reg() -> Registry:
        r = registry if isinstance(registry, Registry) else registry()
        if r is None:
            raise ServiceUnavailable("the shard registry is not connected", retry_after=1)
        return r

    async def list_shards(request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "name": s.name,
                    "state": s.state,
                    "in_placement": s.in_placement,
                    "ingest_url": s.ingest_url,
                    "index_url": s.index_url,
                    "retrieve_url": s.retrieve_url,
                }
                for s in await reg().shards()
            ]
        )

    async def add_shard(request: Request) -> Response:
        body = await _json(request)
        fields = ("name", "ingest_url", "index_url", "retrieve_url")
        values = [body.get(f) for f in fields]
        if not all(isinstance(v, str) and v for v in values):
            raise BadRequest(f"the body must give {', '.join(fields)} (strings)")
        name, *urls = [str(v) for v in values]
        if not _is_name(name):
            raise BadRequest("a shard name is letters, digits, '-' and '_' (at most 63)")
        await _check(urls, probe)
        job_id = await start_add(reg(), name, urls[0], urls[1], urls[2])
        return await _started(job_id)

    async def drain_shard(request: Request) -> Response:
        job_id = await start_drain(reg(), request.path_params["name"])
        return await _started(job_id)

    async def _started(job_id: int) -> Response:
        enqueue_job(settings, job_id)
        (row,) = await job_rows(reg(), job_id)
        return JSONResponse(
            progress(row), status_code=202, headers={"Location": f"/admin/rebalance/{job_id}"}
        )

    async def list_jobs(request: Request) -> Response:
        return JSONResponse([progress(r) for r in await job_rows(reg())])

    async def get_job(request: Request) -> Response:
        try:
            job_id = int(request.path_params["id"])
        except ValueError:
            raise BadRequest("a job id is an integer") from None
        rows = await job_rows(reg(), job_id)
        if not rows:
            raise NotFound(f"no rebalance job {job_id}")
        return JSONResponse(progress(rows[0]))

    return [
        Route("/admin/shards", list_shards, methods=["GET"]),
        Route("/admin/shards", add_shard, methods=["POST"]),
        Route("/admin/shards/{name}/drain", drain_shard, methods=["POST"]),
        Route("/admin/rebalance", list_jobs, methods=["GET"]),
        Route("/admin/rebalance/{id}", get_job, methods=["GET"]),
    ]


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _is_name(name: str) -> bool:
    return 0 < len(name) <= 63 and all(c.isalnum() or c in "-_" for c in name)


async def _check(urls: list[str], probe: Probe) -> None:
    """A shard is registered only if its three services answer ``/healthz``."""
    answers = await asyncio.gather(*(probe(url) for url in urls))
    for url, why in zip(urls, answers, strict=True):
        if why:
            raise BadRequest(f"{url} does not answer /healthz: {why}")
