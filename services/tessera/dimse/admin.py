"""What every part of the gateway's admin API does alike (AE registry, SCU jobs, peers,
webhooks): the admin permission, and a JSON object body."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from tessera.shared.auth import Permission
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import BadRequest, Forbidden


def require_admin(request: Request, api: str) -> str:
    """The caller's subject; Forbidden unless it has the admin permission."""
    principal = principal_of(request)
    if not principal.may(Permission.ADMIN):
        raise Forbidden(f"the {api} API needs the admin permission")
    return principal.subject


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body (empty: ``{}``); BadRequest otherwise."""
    try:
        doc = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc
