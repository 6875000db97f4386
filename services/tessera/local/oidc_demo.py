"""``make run AUTH=1``: a local OpenID provider with a demo user, so that trying access
control takes a minute (README "Security").

The provider is ``deploy/oidc-demo`` (node-oidc-provider; ``make oidc-provider``
installs it) on loopback, configured with:

* the user ``demo``, with a random password kept in ``<data>/oidc/demo-password``, whose
  tokens carry every Tessera permission (``groups``);
* ``ohif``, the viewer's public client (authorization code + PKCE), redirected to
  ``<router>/viewer/callback``;
* ``tessera-cli``, a machine client (client credentials) with every permission, for
  ``curl``; its secret in ``<data>/oidc/cli-secret``.

Signing keys are made once (``<data>/oidc/jwks.json``), so tokens survive a restart.
Access tokens are JWTs for the resource ``urn:tessera``, audience ``tessera``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tessera.local.supervisor import Service

FOLDER = Path(__file__).resolve().parents[3] / "deploy" / "oidc-demo"
RESOURCE = "urn:tessera"
AUDIENCE = "tessera"
EVERYTHING = ["tessera:read", "tessera:write", "tessera:delete", "tessera:admin"]


@dataclass(frozen=True)
class Demo:
    issuer: str
    user: str
    password: str
    cli_client: str
    cli_secret: str
    service: Service

    def banner(self) -> list[str]:
        token = (
            f"curl -s -u {self.cli_client}:{self.cli_secret} -d grant_type=client_credentials"
            f" -d resource={RESOURCE} {self.issuer}/token"
        )
        return [
            f"OpenID provider (demo): {self.issuer}; log in as {self.user} / {self.password}",
            f"a token for curl: {token}",
        ]


def _secret(path: Path, make: int = 24) -> str:
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_urlsafe(make)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def _jwks(path: Path) -> dict[str, object]:
    if path.is_file():
        doc: dict[str, object] = json.loads(path.read_text())
        return doc
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)
    doc = {"keys": [{**jwk, "kid": secrets.token_hex(6), "alg": "RS256", "use": "sig"}]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    return doc


def demo_provider(data: Path, port: int, viewer_origin: str) -> Demo:
    """The demo provider's child process and what to tell the user."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None or not (FOLDER / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("the demo OpenID provider is not installed: run `make oidc-provider`")
    folder = data / "oidc"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    issuer = f"http://127.0.0.1:{port}"
    password = _secret(folder / "demo-password", 12)
    cli_secret = _secret(folder / "cli-secret")
    config = {
        "port": port,
        "issuer": issuer,
        "jwks": _jwks(folder / "jwks.json"),
        "resource": RESOURCE,
        "audience": AUDIENCE,
        "clients": [
            {
                "client_id": "ohif",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "redirect_uris": [f"{viewer_origin}/viewer/callback"],
                "post_logout_redirect_uris": [f"{viewer_origin}/viewer/logout-redirect"],
            },
            {
                "client_id": "tessera-cli",
                "client_secret": cli_secret,
                "grant_types": ["client_credentials"],
                "redirect_uris": [],
                "response_types": [],
                "scope": " ".join(EVERYTHING),
                "extra": {"groups": EVERYTHING},
            },
        ],
        "accounts": {"demo": {"password": password, "claims": {"groups": EVERYTHING}}},
    }
    path = folder / "config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    service = Service("oidc", [node, str(FOLDER / "provider.mjs"), str(path)])
    return Demo(issuer, "demo", password, "tessera-cli", cli_secret, service)
