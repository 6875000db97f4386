"""Bearer tokens the router must refuse (RFC 6750 3.1 ``invalid_token``; RFC 7519 4.1;
RFC 8725 3.1-3.2), with tokens from the real provider or signed with its own key.

Every refusal is 401 with ``error="invalid_token"`` and a body that does not echo the
token. Last in the module: the provider rotates its key; the router accepts the new
key's tokens without a restart and stops accepting the old key's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from tests.e2e.security.conftest import Tokens
from tests.support.cluster import Cluster
from tests.support.identity import AUDIENCE, Provider, SigningKey, machine


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def search(cluster: Cluster, token: str) -> httpx.Response:
    return httpx.get(
        f"{cluster.base_url}/studies", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def refused(r: httpx.Response, token: str) -> None:
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert token not in r.text and token[:40] not in r.headers["www-authenticate"]


def claims(provider: Provider, **changes: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": provider.issuer,
        "aud": AUDIENCE,
        "sub": "reader",
        "client_id": "reader",
        "scope": "tessera:read",
        "iat": now,
        "exp": now + 300,
    }
    return {**base, **changes}


def test_a_valid_token_is_accepted(secure: Cluster, tokens: Tokens) -> None:
    assert search(secure, tokens["reader"]).status_code == 200


def test_the_providers_key_signs_what_we_accept(secure: Cluster, provider: Provider) -> None:
    """The crafted tokens below differ from this one by one thing each."""
    assert search(secure, provider.keys[0].sign(claims(provider))).status_code == 200


Craft = Callable[[Provider, Tokens], str]


def expired(p: Provider, t: Tokens) -> str:
    now = int(time.time())
    return p.keys[0].sign(claims(p, iat=now - 900, exp=now - 600))


def not_yet_valid(p: Provider, t: Tokens) -> str:
    now = int(time.time())
    return p.keys[0].sign(claims(p, nbf=now + 600, exp=now + 900))


def wrong_issuer(p: Provider, t: Tokens) -> str:
    return p.keys[0].sign(claims(p, iss="http://127.0.0.1:1/evil"))


def wrong_audience_from_the_provider(p: Provider, t: Tokens) -> str:
    return p.token("reader", "reader-secret", "tessera:read", resource="urn:other")


def no_audience(p: Provider, t: Tokens) -> str:
    doc = claims(p)
    del doc["aud"]
    return p.keys[0].sign(doc)


def alg_none(p: Provider, t: Tokens) -> str:
    real = t["reader"]
    header, payload, _ = real.split(".")
    head = json.loads(base64.urlsafe_b64decode(header + "=="))
    head["alg"] = "none"
    return f"{_b64(json.dumps(head).encode())}.{payload}."


def hs256_with_the_public_key(p: Provider, t: Tokens) -> str:
    """RFC 8725 3.1: the public key (as PEM, as JWKS users hold it) used as an HMAC secret."""
    public = (
        p.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    head = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": p.keys[0].kid}).encode())
    body = _b64(json.dumps(claims(p)).encode())
    signature = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def tampered_signature(p: Provider, t: Tokens) -> str:
    header, payload, signature = t["reader"].split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    return f"{header}.{payload}.{flipped}"


def tampered_payload(p: Provider, t: Tokens) -> str:
    """The reader's real signature on claims that grant more."""
    header, payload, signature = t["reader"].split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    doc["scope"] = "tessera:read tessera:write tessera:delete tessera:admin"
    return f"{header}.{_b64(json.dumps(doc).encode())}.{signature}"


def another_key(p: Provider, t: Tokens) -> str:
    """Right claims, signed by a key the provider never had (same kid even)."""
    stranger = SigningKey.new()
    stranger.kid = p.keys[0].kid
    return stranger.sign(claims(p))


def not_a_jwt(p: Provider, t: Tokens) -> str:
    return "not-a-token"


def unknown_api_key(p: Provider, t: Tokens) -> str:
    return "tsk_0123456789abcdef_" + "0" * 64


@pytest.mark.parametrize(
    "craft",
    [
        expired,
        not_yet_valid,
        wrong_issuer,
        wrong_audience_from_the_provider,
        no_audience,
        alg_none,
        hs256_with_the_public_key,
        tampered_signature,
        tampered_payload,
        another_key,
        not_a_jwt,
        unknown_api_key,
    ],
)
def test_refused(secure: Cluster, provider: Provider, tokens: Tokens, craft: Craft) -> None:
    token = craft(provider, tokens)
    refused(search(secure, token), token)


def test_a_token_of_another_real_provider_is_refused(secure: Cluster) -> None:
    other = Provider(
        Path(tempfile.mkdtemp(prefix="tessera-oidc-other-")), [machine("reader", "tessera:read")]
    )
    other.start()
    try:
        token = other.token("reader", "reader-secret", "tessera:read")
    finally:
        other.stop()
    refused(search(secure, token), token)


def test_a_token_stops_working_when_it_expires(secure: Cluster, provider: Provider) -> None:
    token = provider.token("brief", "brief-secret", "tessera:read")  # lives 2 s
    assert search(secure, token).status_code == 200
    time.sleep(2 + secure.settings.auth_leeway + 0.5)
    refused(search(secure, token), token)


def test_the_header_must_be_a_bearer_token(secure: Cluster, tokens: Tokens) -> None:
    r = httpx.get(
        f"{secure.base_url}/studies",
        headers={"Authorization": f"Basic {base64.b64encode(b'reader:reader-secret').decode()}"},
    )
    assert r.status_code == 401
    token_in_query = httpx.get(
        f"{secure.base_url}/studies", params={"access_token": tokens["reader"]}
    )
    assert token_in_query.status_code == 401  # RFC 6750 2.3 is not supported: tokens leak in logs


def test_a_key_rotated_at_the_provider(secure: Cluster, provider: Provider, tokens: Tokens) -> None:
    """The new key's tokens are accepted without a restart (unknown kid: the JWKS is
    fetched again); the old key's stop being accepted once the router has seen the new
    key set (auth_jwks_refresh is 2 s here)."""
    old = tokens["reader"]
    assert search(secure, old).status_code == 200
    provider.rotate()
    tokens.forget()
    new = tokens["reader"]
    deadline = time.monotonic() + 15
    while search(secure, new).status_code != 200:
        assert time.monotonic() < deadline, "the new key's token is still refused"
        time.sleep(0.5)
    deadline = time.monotonic() + 15
    while search(secure, old).status_code != 401:
        assert time.monotonic() < deadline, "the old key's token is still accepted"
        time.sleep(0.5)
    refused(search(secure, old), old)
