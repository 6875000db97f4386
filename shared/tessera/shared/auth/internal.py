"""The router's credential to the shard services, and the shards' check of it.

Shard services (ingest, index, retrieve, and the workers' probe ports) are never public:
they answer only requests carrying a short-lived token that the router (or the rebalance
worker) signs with the deployment's secret ``internal_secret`` (``TESSERA_INTERNAL_SECRET``,
at least 32 bytes, from the deployment's secrets). A process on the cluster network
without it gets 401. The token is a JWT (RFC 7519) signed HS256, audience
``tessera-shard``, valid ``TTL`` seconds, and carries the caller's :class:`Principal`,
so a shard filters by the caller's labels without knowing how the caller logged in.

Only HS256 with this secret is accepted here: the shards never see, nor accept, the
tokens clients present to the router. Signing is cached per principal for half the
lifetime and verification per token until it expires, so the HMAC is not paid per
request.

Open without a credential: ``/healthz`` and ``/readyz`` (probes), and ``/metrics``
unless ``metrics_token`` is set (then it takes that bearer token, or the internal one).
With no ``internal_secret`` configured the check is off (a single machine on loopback:
:func:`tessera.shared.serve.check_exposure` refuses any other address).
"""

from __future__ import annotations

import hmac
import time
from collections import OrderedDict
from collections.abc import Generator
from typing import Any

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.shared.auth.principal import OPEN, Permission, Principal
from tessera.shared.settings import Settings

ISSUER = "tessera-router"
AUDIENCE = "tessera-shard"
ALGORITHM = "HS256"
# the DIMSE gateway's tokens to the router (InternalCredential.gateway)
GATEWAY_ISSUER = "tessera-dimse"
ROUTER_AUDIENCE = "tessera-router"
TTL = 120  # seconds a token is valid
MIN_SECRET_BYTES = 32
SCOPE_KEY = "tessera.principal"
# where the router's auth middleware leaves the internal Authorization for the shard hop
FORWARD_KEY = "tessera.internal_authorization"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_CACHE = 4096  # verified tokens / signed principals kept


class InternalCredential:
    """Signs and verifies the internal token with ``secret``."""

    def __init__(
        self, secret: str, ttl: int = TTL, *, issuer: str = ISSUER, audience: str = AUDIENCE
    ) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(
                f"internal_secret must be at least {MIN_SECRET_BYTES} bytes (it signs the"
                " router's requests to the shards)"
            )
        self._key = secret.encode()
        self.ttl = ttl
        self.issuer = issuer
        self.audience = audience
        self._signed: OrderedDict[Principal, tuple[str, float]] = OrderedDict()
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def of(cls, settings: Settings) -> InternalCredential | None:
        return cls(settings.internal_secret) if settings.internal_secret else None

    @classmethod
    def gateway(cls, settings: Settings) -> InternalCredential | None:
        """The DIMSE gateway's credential to the router: the same secret, its own issuer
        and audience, so neither kind of token is accepted where the other is. It carries
        the principal of the calling AE (README "DIMSE"), which the router authorizes and
        audits like any other caller."""
        if not settings.internal_secret:
            return None
        return cls(settings.internal_secret, issuer=GATEWAY_ISSUER, audience=ROUTER_AUDIENCE)

    def token(self, principal: Principal) -> str:
        """A token for ``principal``, reused while more than half its life is left."""
        now = time.time()
        cached = self._signed.get(principal)
        if cached is not None and cached[1] - now > self.ttl / 2:
            return cached[0]
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(now),
            "exp": int(now) + self.ttl,
            "sub": principal.subject,
            "perms": sorted(principal.permissions),
            "labels": None if principal.labels is None else sorted(principal.labels),
            "cid": principal.client_id,
            "mth": principal.method,
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM)
        _put(self._signed, principal, (token, now + self.ttl))
        return token

    def header(self, principal: Principal) -> str:
        return f"Bearer {self.token(principal)}"

    def verify(self, token: str) -> Principal:
        """The principal a valid token carries; raises :class:`jwt.InvalidTokenError`."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        claims = jwt.decode(
            token,
            self._key,
            algorithms=[ALGORITHM],
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
        labels = claims.get("labels")
        principal = Principal(
            subject=str(claims["sub"]),
            permissions=frozenset(Permission(p) for p in claims.get("perms", [])),
            labels=None if labels is None else frozenset(str(x) for x in labels),
            client_id=str(claims.get("cid", "")),
            method=str(claims.get("mth", "")),
        )
        _put(self._verified, token, (principal, float(claims["exp"])))
        return principal


def _put(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE:
        cache.popitem(last=False)


def bearer(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer`` header (RFC 6750 2.1), else None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


def principal_of(request: Request) -> Principal:
    """Who sent ``request``: the principal a middleware put in its scope, else (no
    authentication configured) :data:`~tessera.shared.auth.principal.OPEN`."""
    principal = request.scope.get(SCOPE_KEY)
    return principal if isinstance(principal, Principal) else OPEN


def from_the_cluster(request: Request) -> bool:
    """True if ``request`` comes from the router (or a job of it) on its own behalf, not
    for a client: its credential carries :data:`SERVICE_PRINCIPAL`; or no check is
    configured (the shard services then listen on loopback only)."""
    principal = request.scope.get(SCOPE_KEY)
    if principal is None:
        return True
    return (
        isinstance(principal, Principal)
        and principal.subject == SERVICE_PRINCIPAL.subject
        and (principal.method == SERVICE_PRINCIPAL.method)
    )


def unauthorized(
    realm: str, description: str, error: str | None = "invalid_token"
) -> PlainTextResponse:
    """401 with an RFC 6750 3 challenge; the body never echoes what was presented."""
    challenge = f'Bearer realm="{realm}"'
    if error:
        challenge += f', error="{error}", error_description="{description}"'
    return PlainTextResponse(
        description + "\n", status_code=401, headers={"WWW-Authenticate": challenge}
    )


class InternalAuth:
    """ASGI middleware of a shard service: every request but the probes needs the
    internal credential (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.credential = InternalCredential.of(settings)
        self.metrics_token = settings.metrics_token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.credential is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer(scope)
        if scope["path"] == "/metrics":
            if not self.metrics_token or (
                token is not None and hmac.compare_digest(token.encode(), self.metrics_token)
            ):
                await self.app(scope, receive, send)
                return
        if token is None:
            response = unauthorized(
                "tessera-shard", "this service answers only the router's credential", None
            )
            await response(scope, receive, send)
            return
        try:
            scope[SCOPE_KEY] = self.credential.verify(token)
        except (jwt.InvalidTokenError, ValueError):
            response = unauthorized("tessera-shard", "the internal credential is not valid")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# The caller the router's own background jobs (the rebalance) act as towards the shards.
SERVICE_PRINCIPAL = Principal("tessera-service", frozenset(Permission), None, method="internal")


class InternalHttpxAuth(httpx.Auth):
    """httpx authentication for a long-lived client of the shard services: a fresh
    internal token on every request (a job outlives one token)."""

    def __init__(self, credential: InternalCredential, principal: Principal = SERVICE_PRINCIPAL):
        self.credential = credential
        self.principal = principal

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.credential.header(self.principal)
        yield request


def httpx_auth(settings: Settings) -> httpx.Auth | None:
    """What a client of the shard services authenticates with (None: the check is off)."""
    credential = InternalCredential.of(settings)
    return None if credential is None else InternalHttpxAuth(credential)
