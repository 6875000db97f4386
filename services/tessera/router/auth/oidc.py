"""OAuth 2.0 bearer tokens (RFC 6750) from an OpenID Connect provider, verified locally.

The issuer's discovery document (OpenID Connect Discovery 1.0, ``/.well-known/
openid-configuration``) names its ``jwks_uri``; the key set is fetched at start and
every ``auth_jwks_refresh`` seconds, and again (at most every ``MIN_REFETCH`` seconds)
when a token names a ``kid`` it does not hold: keys rotate at the provider without a
restart here, and a key the provider dropped stops verifying at the next refresh.

A token is accepted only if (RFC 7519 4.1, RFC 9068):

* its JWS ``alg`` is one of ``auth_algorithms`` (asymmetric only: ``none`` and the HMAC
  algorithms are refused at start, so a public key can never serve as an HMAC secret),
  and the key its ``kid`` names has that algorithm's type;
* the signature verifies; ``iss`` is the issuer; ``aud`` contains ``auth_audience``;
  ``exp`` is in the future and ``nbf`` / ``iat`` not in it (``auth_leeway`` seconds of
  skew); ``sub`` is present.

Verified tokens are cached until they expire (or the key set changes), so a viewer's
hundred frame requests cost one signature check. Reasons for refusal are logged at debug
level, never with the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import jwt
from jwt import PyJWK

from tessera.shared.errors import ServiceUnavailable
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

MIN_REFETCH = 10.0  # seconds between JWKS fetches caused by unknown kids
FETCH_TIMEOUT = 10.0
_CACHE = 8192
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class InvalidToken(Exception):
    """The token is not one we accept (the reason is for the log, not the client)."""


def check_algorithms(algorithms: tuple[str, ...]) -> tuple[str, ...]:
    refused = [a for a in algorithms if a not in ASYMMETRIC]
    if refused or not algorithms:
        raise ValueError(
            f"auth_algorithms: only asymmetric JWS algorithms may verify bearer tokens"
            f" ({', '.join(sorted(ASYMMETRIC))}); refused: {', '.join(refused) or '(none)'}"
        )
    return algorithms


class OidcVerifier:
    """Verifies access tokens of ``settings.auth_issuer``; :meth:`start` before use."""

    def __init__(self, settings: Settings, min_refetch: float = MIN_REFETCH) -> None:
        self.issuer = settings.auth_issuer.rstrip("/")
        self.audience = settings.auth_audience
        self.algorithms = check_algorithms(settings.auth_algorithms)
        self.leeway = settings.auth_leeway
        self.refresh_every = settings.auth_jwks_refresh
        self.min_refetch = min(min_refetch, self.refresh_every)
        self.jwks_uri = ""
        self.keys: dict[str | None, PyJWK] = {}
        self.declared: dict[str | None, str | None] = {}  # kid -> the JWK's own "alg"
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._verified: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    async def start(self) -> None:
        """Open the session and try a first fetch; a provider that is down now is
        retried on the first token and by the refresh loop (the router still starts)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT))
        try:
            await self.refresh()
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("OIDC issuer %s: keys not fetched yet (%s)", self.issuer, e)
        self._task = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            try:
                await self.refresh()
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.warning("OIDC issuer %s: JWKS refresh failed (%s)", self.issuer, e)

    async def _get_json(self, url: str) -> Any:
        assert self._session is not None
        async with self._session.get(url, headers={"Accept": "application/json"}) as r:
            if r.status != 200:
                raise ValueError(f"{url} answered HTTP {r.status}")
            return await r.json(content_type=None)

    async def refresh(self) -> None:
        """Fetch the discovery document (first time) and the key set."""
        async with self._lock:
            if not self.jwks_uri:
                doc = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
                if doc.get("issuer", "").rstrip("/") != self.issuer:
                    raise ValueError(f"the discovery document names issuer {doc.get('issuer')!r}")
                self.jwks_uri = str(doc["jwks_uri"])
            jwks = await self._get_json(self.jwks_uri)
            keys: dict[str | None, PyJWK] = {}
            declared: dict[str | None, str | None] = {}
            for jwk in jwks.get("keys", []):
                if jwk.get("use", "sig") != "sig":
                    continue
                try:
                    keys[jwk.get("kid")] = PyJWK(jwk)
                except (jwt.PyJWKError, jwt.InvalidKeyError) as e:
                    log.info("OIDC issuer %s: key %s skipped (%s)", self.issuer, jwk.get("kid"), e)
                    continue
                declared[jwk.get("kid")] = jwk.get("alg")
            if set(keys) != set(self.keys):
                # a key the provider dropped verifies nothing any more, cached or not
                self._verified.clear()
            self.keys, self.declared = keys, declared
            self._fetched_at = time.monotonic()
            log.info("OIDC issuer %s: %d signing key(s)", self.issuer, len(keys))

    async def _key(self, kid: str | None) -> PyJWK:
        key = self.keys.get(kid)
        if key is None and kid is None and len(self.keys) == 1:
            key = next(iter(self.keys.values()))
        if key is not None:
            return key
        if time.monotonic() - self._fetched_at >= self.min_refetch:
            try:
                await self.refresh()
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                raise ServiceUnavailable(
                    "the identity provider's keys cannot be fetched", retry_after=5
                ) from e
            key = self.keys.get(kid)
        if key is None:
            raise InvalidToken(f"no key {kid!r} at the issuer")
        return key

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; :class:`InvalidToken` otherwise."""
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if cached[1] + self.leeway > now:
                return cached[0]
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"malformed: {e}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidToken(f"algorithm {alg!r} is not accepted")
        key = await self._key(header.get("kid"))
        declared = self.declared.get(header.get("kid"))
        if (declared and declared != alg) or _family(alg) != key.key_type:
            raise InvalidToken(f"key {header.get('kid')!r} is not for {alg}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"{type(e).__name__}: {e}") from None
        self._verified[token] = (claims, float(claims["exp"]))
        while len(self._verified) > _CACHE:
            self._verified.popitem(last=False)
        return claims


def _family(alg: str) -> str:
    """The JWK key type (``kty``) an algorithm needs: RSA for RS* and PS*, EC for ES*,
    OKP for EdDSA."""
    if alg == "EdDSA":
        return "OKP"
    return {"R": "RSA", "P": "RSA", "E": "EC"}.get(alg[0], "?")
