"""A real OpenID Connect provider for the tests: node-oidc-provider (``deploy/oidc-demo``), started
as a process on a free loopback port with signing keys made here.

:class:`Provider` starts it with a configuration of clients and accounts, gets tokens
from its token endpoint (client credentials, RFC 6749 4.4, with an RFC 8707 resource),
and restarts it with other keys (rotation). It holds the private keys it gave the
provider, so a test can also sign what the provider itself could sign (a token not yet
valid, one already expired) to see that the router refuses it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tessera.local import free_port, spawn

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "oidc-demo"
RESOURCE = "urn:tessera"
AUDIENCE = "tessera"


class Unavailable(Exception):
    """node or the provider's packages are missing (``make oidc-provider`` installs them)."""


def node() -> str:
    path = shutil.which("node") or shutil.which("nodejs")
    if path is None:
        raise Unavailable("node is not installed (Debian package nodejs)")
    if not (FOLDER / "node_modules" / "oidc-provider").is_dir():
        raise Unavailable(f"oidc-provider is not installed: npm ci --prefix {FOLDER}")
    return path


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def new(cls, alg: str = "RS256") -> SigningKey:
        if alg.startswith("ES"):
            key: Any = ec.generate_private_key(ec.SECP256R1())
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(uuid.uuid4().hex[:12], alg, key)

    def jwk(self) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        )
        doc: dict[str, Any] = json.loads(algorithm.to_jwk(self.private))
        doc.pop("key_ops", None)  # PyJWT says ["sign"]; the provider also verifies with it
        return {**doc, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )


@dataclass
class Provider:
    workdir: Path
    clients: list[dict[str, Any]]
    accounts: dict[str, Any] = field(default_factory=dict)
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.new()])
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Provider:
        config = {
            "port": self.port,
            "issuer": self.issuer,
            "jwks": {"keys": [k.jwk() for k in self.keys]},
            "resource": RESOURCE,
            "audience": AUDIENCE,
            "clients": self.clients,
            "accounts": self.accounts,
        }
        path = self.workdir / f"oidc-{self.port}.json"
        path.write_text(json.dumps(config))
        log = self.workdir / f"oidc-{self.port}.log"
        self.proc = spawn([node(), str(FOLDER / "provider.mjs"), str(path)], log, cwd=FOLDER)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited:\n{log.read_text()[-3000:]}")
            try:
                r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"oidc-provider did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Restart with one new signing key (the old one is gone from the JWKS)."""
        self.stop()
        self.keys = [SigningKey.new(alg)]
        self.start()
        return self.keys[0]

    def token(self, client_id: str, secret: str, scope: str = "", resource: str = RESOURCE) -> str:
        """An access token by the client credentials grant (RFC 6749 4.4)."""
        data = {"grant_type": "client_credentials", "resource": resource}
        if scope:
            data["scope"] = scope
        r = httpx.post(f"{self.issuer}/token", data=data, auth=(client_id, secret), timeout=10)
        r.raise_for_status()
        return str(r.json()["access_token"])


def machine(client_id: str, scope: str, **settings: Any) -> dict[str, Any]:
    """A client-credentials client allowed ``scope``; ``extra`` claims, ``ttl``, ``alg``."""
    return {
        "client_id": client_id,
        "client_secret": f"{client_id}-secret",
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
        "scope": scope,
        **settings,
    }
