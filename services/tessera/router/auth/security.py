"""The router's security components, opened in its lifespan: the OIDC verifier, the API
keys, the audit trail, and the internal credential it signs shard requests with.

Authentication is on when ``auth`` is ``on``, or when it is empty and ``auth_issuer`` is
set. Off, every caller is :data:`~tessera.shared.auth.principal.OPEN` (the router then
refuses to listen beyond loopback unless ``auth=off`` acknowledges it:
:func:`tessera.shared.serve.check_exposure`). The audit trail and API keys live in the
router's PostgreSQL (``auth_database_url``, else ``router_database_url``); without one
there are neither, which is refused when authentication is on.
"""

from __future__ import annotations

import logging

import asyncpg
import jwt

from tessera.router.auth import claims
from tessera.router.auth.apikeys import ApiKeys, InvalidKey, is_api_key
from tessera.router.auth.audit import AuditTrail
from tessera.router.auth.oidc import InvalidToken, OidcVerifier
from tessera.router.auth.syslog import SyslogForwarder
from tessera.shared.auth import Principal
from tessera.shared.auth.exposure import auth_enabled
from tessera.shared.auth.internal import InternalCredential
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.errors import ServiceUnavailable
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = "tessera.router.auth"


def database_of(settings: Settings) -> str:
    return settings.auth_database_url or settings.router_database_url


class Rejected(Exception):
    """A credential was presented and is not valid (why: for the log only)."""


class Security:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.enabled = auth_enabled(settings)
        self.internal = InternalCredential.of(settings)
        # the DIMSE gateway's tokens, carrying the principal of the calling AE
        self.gateway = InternalCredential.gateway(settings)
        self.oidc: OidcVerifier | None = None
        self.keys: ApiKeys | None = None
        self.audit: AuditTrail | None = None
        self.syslog: SyslogForwarder | None = None
        self._pool: asyncpg.Pool | None = None
        if self.enabled and not database_of(settings):
            raise ValueError(
                "authentication is on but there is no router database for the audit trail"
                " and API keys: set TESSERA_AUTH_DATABASE_URL (or TESSERA_ROUTER_DATABASE_URL)"
            )

    async def start(self) -> None:
        dsn = database_of(self.settings)
        if dsn:
            await apply_migrations(dsn, MIGRATIONS)
            self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
            assert self._pool is not None
            self.keys = ApiKeys(self._pool, self.settings.auth_cache_seconds)
            forward = None
            if self.settings.audit_syslog_url:
                self.syslog = SyslogForwarder(self.settings.audit_syslog_url)
                self.syslog.start()
                forward = self.syslog.send
            self.audit = AuditTrail(self._pool, self.settings.audit_coalesce_seconds, forward)
            self.audit.start()
        else:
            log.warning("no router database: requests are not audited")
        if self.enabled and self.settings.auth_issuer:
            self.oidc = OidcVerifier(self.settings)
            await self.oidc.start()

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
        if self.audit is not None:
            await self.audit.close()
        if self.syslog is not None:
            await self.syslog.close()
        if self._pool is not None:
            await self._pool.close()

    def audit_trail(self) -> AuditTrail:
        if self.audit is None:
            raise ServiceUnavailable("the audit trail is not open", retry_after=1)
        return self.audit

    def api_keys(self) -> ApiKeys:
        if self.keys is None:
            raise ServiceUnavailable("the API keys are not open", retry_after=1)
        return self.keys

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bearer token: an API key, the DIMSE gateway's token for a
        calling AE (HS256 with the deployment's secret: never accepted from an OpenID
        provider), else an OIDC access token."""
        try:
            if self.gateway is not None and _is_hs256(token):
                try:
                    return self.gateway.verify(token)
                except (jwt.InvalidTokenError, ValueError) as e:
                    raise Rejected(f"gateway token: {e}") from None
            if is_api_key(token):
                if self.keys is None:
                    raise Rejected("API keys need the router database")
                return await self.keys.authenticate(token)
            if self.oidc is None:
                raise Rejected("no OpenID provider is configured (auth_issuer)")
            return claims.principal(await self.oidc.claims(token), self.settings)
        except (InvalidKey, InvalidToken) as e:
            raise Rejected(str(e)) from None


def _is_hs256(token: str) -> bool:
    try:
        return jwt.get_unverified_header(token).get("alg") == "HS256"
    except jwt.InvalidTokenError:
        return False
