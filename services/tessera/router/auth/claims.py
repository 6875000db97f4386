"""From a verified token's claims to a :class:`~tessera.shared.auth.Principal`.

Permissions come from the claims named in ``auth_permission_claims`` (default ``scope``,
Keycloak's ``realm_access.roles``, ``groups``): each value that is
``auth_permission_prefix`` + a permission (``tessera:read``, ``tessera:write``,
``tessera:delete``, ``tessera:admin``) grants it. A claim may be a space-separated string
(OAuth ``scope``) or a list; a dotted name walks into objects. Labels come from
``auth_labels_claim`` (default ``tessera_labels``, a list or a space/comma-separated
string); a token without it sees every study.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from tessera.shared.auth import Permission, Principal
from tessera.shared.settings import Settings

_SPLIT = re.compile(r"[\s,]+")


def values(claims: dict[str, Any], path: str) -> Iterator[str]:
    """The string values of claim ``path`` (``realm_access.roles``), flattened."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    items: Iterable[Any] = node if isinstance(node, list) else [node]
    for item in items:
        if isinstance(item, str):
            yield from (v for v in _SPLIT.split(item) if v)


def permissions(claims: dict[str, Any], settings: Settings) -> frozenset[Permission]:
    prefix = settings.auth_permission_prefix
    known = {f"{prefix}{p.value}": p for p in Permission}
    return frozenset(
        known[v]
        for path in settings.auth_permission_claims
        for v in values(claims, path)
        if v in known
    )


def labels(claims: dict[str, Any], settings: Settings) -> frozenset[str] | None:
    name = settings.auth_labels_claim
    if not name or name not in claims:
        return None
    return frozenset(values(claims, name))


def principal(claims: dict[str, Any], settings: Settings) -> Principal:
    client = claims.get("azp") or claims.get("client_id") or ""
    return Principal(
        subject=str(claims["sub"]),
        permissions=permissions(claims, settings),
        labels=labels(claims, settings),
        client_id=str(client),
        method="oidc",
    )
