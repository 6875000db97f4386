"""``/admin/api-keys`` on the router (the admin permission): the same as the CLI in
:mod:`.apikeys`.

    GET    /admin/api-keys           every key, without secrets
    POST   /admin/api-keys           {"label", "permissions": [...], "labels": [...] | null,
                                      "expires": ISO 8601 | null} -> the key and its token
                                      (shown once), 201
    DELETE /admin/api-keys/{id}      revoke: 204, or 404 if no such active key
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.router.auth.apikeys import ApiKeys
from tessera.shared.auth import Permission
from tessera.shared.errors import BadRequest, NotFound


def _create_args(doc: Any) -> tuple[str, list[Permission], list[str] | None, datetime | None]:
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    label, perms, labels, expires = (
        doc.get("label"),
        doc.get("permissions"),
        doc.get("labels"),
        doc.get("expires"),
    )
    if not isinstance(label, str) or not label.strip():
        raise BadRequest("label: a non-empty string")
    if not isinstance(perms, list) or not perms:
        raise BadRequest("permissions: a list of read, write, delete, admin")
    try:
        permissions = [Permission(p) for p in perms]
    except ValueError:
        raise BadRequest("permissions: each one of read, write, delete, admin") from None
    if labels is not None and not (
        isinstance(labels, list) and all(isinstance(x, str) and x for x in labels)
    ):
        raise BadRequest("labels: null (every study) or a list of label strings")
    when = None
    if expires is not None:
        try:
            when = datetime.fromisoformat(str(expires))
        except ValueError:
            raise BadRequest("expires: an ISO 8601 date-time with a time zone") from None
        if when.tzinfo is None:
            raise BadRequest("expires: an ISO 8601 date-time with a time zone")
    return label, permissions, labels, when


def routes(keys: Callable[[], ApiKeys]) -> list[Route]:
    async def list_keys(request: Request) -> Response:
        return JSONResponse({"keys": [k.to_json() for k in await keys().list()]})

    async def create_key(request: Request) -> Response:
        try:
            doc = json.loads(await request.body())
        except ValueError:
            raise BadRequest("the body must be JSON") from None
        key, token = await keys().create(*_create_args(doc))
        return JSONResponse({**key.to_json(), "token": token}, status_code=201)

    async def revoke_key(request: Request) -> Response:
        if not await keys().revoke(request.path_params["id"]):
            raise NotFound("no such active API key")
        return Response(status_code=204)

    return [
        Route("/admin/api-keys", list_keys, methods=["GET"]),
        Route("/admin/api-keys", create_key, methods=["POST"]),
        Route("/admin/api-keys/{id}", revoke_key, methods=["DELETE"]),
    ]
