"""Every request to the router: authenticated, authorized, audited.

:class:`RouterAuth` (ASGI middleware, inside CORS so that refusals carry CORS headers):

1. Open paths pass untouched: ``/healthz``, ``/readyz``, ``/metrics`` (unless
   ``metrics_token`` is set: then that bearer token), the viewer's files under
   ``/viewer``, and ``OPTIONS`` (CORS preflight is answered before us anyway).
2. Anything else needs ``Authorization: Bearer <token>`` (RFC 6750 2.1): an OIDC access
   token or a Tessera API key. None: 401 with ``WWW-Authenticate: Bearer realm="tessera"``
   (RFC 6750 3.1: no error code); invalid or expired: 401 with
   ``error="invalid_token"``. The body never echoes the token or what it said.
   With authentication off, the caller is the open principal.
3. The principal goes into the request's scope (:func:`~tessera.shared.auth.internal.
   principal_of`), with the internal credential the proxy sends to the shards instead of
   the client's token.
4. Routes declare their permission with :func:`requires`: without it, 403 with
   ``error="insufficient_scope"``.
5. The audit event (:mod:`.audit`) is committed before the answer's first byte is sent;
   if it cannot be, the client gets 503 instead of the data.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.router.auth.audit import AuditEvent, outcome
from tessera.router.auth.security import Rejected, Security
from tessera.shared.auth import Permission, Principal
from tessera.shared.auth.internal import FORWARD_KEY, SCOPE_KEY, bearer, principal_of, unauthorized
from tessera.shared.auth.principal import OPEN
from tessera.shared.errors import ServiceUnavailable

log = logging.getLogger(__name__)

REALM = "tessera"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_STUDY = re.compile(r"/studies/([^/]+)")
_SEARCH = re.compile(
    r"/(studies|series|instances)|/studies/[^/]+/(series|instances)|/studies/[^/]+/series/[^/]+/instances"
)

Endpoint = Callable[[Request], Awaitable[Response]]


def requires(permission: Permission) -> Callable[[Endpoint], Endpoint]:
    """Wrap a route's endpoint: 403 unless the caller has ``permission``."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not principal_of(request).may(permission):
                return forbidden(permission)
            return await endpoint(request)

        guarded.__name__ = getattr(endpoint, "__name__", "endpoint")
        guarded.permission = permission  # type: ignore[attr-defined]
        return guarded

    return wrap


def admin_only(routes: list[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with every endpoint behind the admin permission."""
    guarded: list[BaseRoute] = []
    for route in routes:
        assert isinstance(route, Route), route
        methods = sorted(route.methods or ()) or None
        guarded.append(
            Route(route.path, requires(Permission.ADMIN)(route.endpoint), methods=methods)
        )
    return guarded


def forbidden(permission: Permission) -> Response:
    return PlainTextResponse(
        f"this credential lacks the {permission.value} permission\n",
        status_code=403,
        headers={
            "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope",'
            f' error_description="the {permission.value} permission is needed"'
        },
    )


def action_of(method: str, path: str, prefix: str) -> str:
    """The audit action of a request (PS3.15 A.5.3)."""
    if path.startswith("/admin"):
        return "admin"
    if method == "POST":
        return "store"
    if method == "DELETE":
        return "delete"
    rest = path[len(prefix) :] if path.startswith(prefix) else path
    return "query" if _SEARCH.fullmatch(rest) else "retrieve"


class RouterAuth:
    def __init__(self, app: ASGIApp, security: Security, prefix: str) -> None:
        self.app = app
        self.security = security
        self.prefix = prefix
        self.metrics_token = security.settings.metrics_token.encode()

    def _open(self, scope: Scope, token: str | None) -> bool:
        path: str = scope["path"]
        if scope["method"] == "OPTIONS" or path in OPEN_PATHS:
            return True
        if path == "/viewer" or path.startswith("/viewer/"):
            return True
        if path == "/metrics":
            return not self.metrics_token or (
                token is not None and hmac.compare_digest(token.encode(), self.metrics_token)
            )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = bearer(scope)
        if self._open(scope, token):
            await self.app(scope, receive, send)
            return
        principal = OPEN
        if self.security.enabled:
            if token is None:
                has_header = any(n == b"authorization" for n, _ in scope.get("headers", ()))
                await self._refuse(scope, receive, send, "a bearer token is needed", has_header)
                return
            try:
                principal = await self.security.authenticate(token)
            except Rejected as e:
                log.debug("%s %s: token refused: %s", scope["method"], scope["path"], e)
                await self._refuse(
                    scope, receive, send, "the access token is invalid or expired", True
                )
                return
            except ServiceUnavailable as e:
                response = PlainTextResponse(
                    e.reason + "\n",
                    status_code=503,
                    headers={"Retry-After": str(e.retry_after or 5)},
                )
                await response(scope, receive, send)
                return
        scope[SCOPE_KEY] = principal
        internal = self.security.internal
        if internal is not None:
            scope[FORWARD_KEY] = internal.header(principal)
        audit = self.security.audit
        if audit is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._audited_send(scope, principal, send))

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, why: str, invalid: bool
    ) -> None:
        response = unauthorized(REALM, why, "invalid_token" if invalid else None)
        await response(scope, receive, send)

    def _audited_send(self, scope: Scope, principal: Principal, send: Send) -> Send:
        audit = self.security.audit
        assert audit is not None
        refused = False

        async def audited(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                try:
                    await audit.record(self._event(scope, principal, int(message["status"])))
                except Exception:  # not recorded: not answered (the error is logged)
                    refused = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [
                                (b"content-type", b"text/plain; charset=utf-8"),
                                (b"retry-after", b"5"),
                            ],
                        }
                    )
                    await send(
                        {"type": "http.response.body", "body": b"the audit trail is unavailable\n"}
                    )
                    return
            elif refused:
                return
            await send(message)

        return audited

    def _event(self, scope: Scope, principal: Principal, status: int) -> AuditEvent:
        path: str = scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        params = parse_qs(query)
        match = _STUDY.search(path)
        study = match.group(1) if match else (params.get("studyUID") or [None])[0]
        patient = (params.get("PatientID") or params.get("00100020") or [None])[0]
        client = scope.get("client")
        return AuditEvent(
            at=datetime.now(UTC),
            action=action_of(scope["method"], path, self.prefix),
            outcome=outcome(status),
            status=status,
            subject=principal.subject,
            client_id=principal.client_id,
            auth_method=principal.method,
            address=client[0] if client else "",
            http_method=scope["method"],
            path=path,
            query=query,
            study_instance_uid=study,
            patient_id=patient,
        )
