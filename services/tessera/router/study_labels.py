"""``/admin/studies/{study}/labels`` (the admin permission): read or set a study's labels
on the shard that owns it (README "Security").

    GET /admin/studies/{study}/labels   {"study", "labels": [...]}; 404 if no such study
    PUT /admin/studies/{study}/labels   {"labels": [...]} replaces them; the new labels
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.router.shards import Service, ShardMap
from tessera.shared.errors import BadRequest, NotFound, ServiceUnavailable
from tessera.shared.index_internal import IndexCallError, IndexInternalClient, check_labels
from tessera.shared.refs import check_uid


def routes(shards: Callable[[], ShardMap], client: Callable[[], httpx.AsyncClient]) -> list[Route]:
    async def study_labels(request: Request) -> Response:
        study = check_uid(request.path_params["study"], "StudyInstanceUID")
        index = IndexInternalClient(client(), shards().for_study(study).url(Service.INDEX))
        try:
            if request.method == "PUT":
                try:
                    doc = json.loads(await request.body())
                except ValueError:
                    raise BadRequest('the body must be JSON: {"labels": [...]}') from None
                labels = check_labels(doc.get("labels") if isinstance(doc, dict) else None)
                result = await index.set_labels(study, labels)
            else:
                result = await index.labels(study)
        except (IndexCallError, httpx.HTTPError) as e:
            raise ServiceUnavailable(f"the study's shard did not answer ({e})", 5) from None
        if result is None:
            raise NotFound(f"study {study} not found")
        return JSONResponse({"study": study, "labels": result})

    return [Route("/admin/studies/{study}/labels", study_labels, methods=["GET", "PUT"])]
