"""A study's labels (README "Security"), for the router's admin API and the rebalance
(which gives a moved study the labels it had on its source shard).

    GET /internal/studies/{study}/labels   {"labels": [...]}; 404 if there is no study
    PUT /internal/studies/{study}/labels   {"labels": [...]} sets them; the new labels
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.shared.errors import BadRequest, NotFound
from tessera.shared.index_internal import LABELS_PATH, check_labels
from tessera.shared.refs import check_uid


async def get_labels(request: Request) -> Response:
    study = check_uid(request.path_params["study"], "StudyInstanceUID")
    labels = await request.app.state.pool.fetchval(
        "SELECT labels FROM study WHERE study_instance_uid = $1", study
    )
    if labels is None:
        raise NotFound(f"study {study} not found")
    return JSONResponse({"labels": list(labels)})


async def put_labels(request: Request) -> Response:
    study = check_uid(request.path_params["study"], "StudyInstanceUID")
    try:
        doc = json.loads(await request.body())
    except ValueError:
        raise BadRequest('the body must be JSON: {"labels": [...]}') from None
    labels = check_labels(doc.get("labels") if isinstance(doc, dict) else None)
    new = await request.app.state.pool.fetchval(
        "UPDATE study SET labels = $2::text[], updated_at = now()"
        " WHERE study_instance_uid = $1 RETURNING labels",
        study,
        labels,
    )
    if new is None:
        raise NotFound(f"study {study} not found")
    return JSONResponse({"labels": list(new)})


def routes() -> list[Route]:
    return [
        Route(LABELS_PATH, get_labels, methods=["GET"]),
        Route(LABELS_PATH, put_labels, methods=["PUT"]),
    ]
