"""The registry of DICOMweb peers: remote archives Tessera pulls from and pushes to.

A peer is a DICOMweb base URL (``https://pacs.example.org/dicom-web``), how to
authenticate there and how to check its certificate:

* ``auth``: ``{"type": "none"}``; ``{"type": "bearer", "token": ...}`` (RFC 6750);
  ``{"type": "basic", "username": ..., "password": ...}``; or ``{"type":
  "client_credentials", "tokenUrl": ..., "clientId": ..., "clientSecret": ...,
  "scope": ...}`` (RFC 6749 4.4: a token fetched, cached and renewed before it expires);
* ``caCert``: the PEM of a private CA to verify the peer with ('' = the system's);
  ``verifyTls: false`` turns verification off (a test peer; logged loudly);
* ``kind``: ``tessera`` for a peer with Tessera's change feed (a mirror follows it),
  ``dicomweb`` for any other (a mirror polls its QIDO-RS by date).

Secrets (token, password, client secret) are stored in the gateway's database and never
answered back: reading a peer shows ``"***"`` in their place, and a PUT that sends
``"***"`` keeps the stored value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from tessera.shared.errors import BadRequest

KINDS = ("dicomweb", "tessera")
AUTH_FIELDS = {
    "none": {},
    "bearer": {"token": True},
    "basic": {"username": False, "password": True},
    "client_credentials": {
        "tokenUrl": False,
        "clientId": False,
        "clientSecret": True,
        "scope": False,
    },
}
MASK = "***"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_COLUMNS = "name, url, kind, auth, ca_cert, verify_tls, description"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadRequest("a peer name is 1 to 63 letters, digits, '.', '_' or '-'")
    return name


def _check_url(url: Any, what: str) -> str:
    if not isinstance(url, str):
        raise BadRequest(f"{what}: an http(s) URL")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise BadRequest(f"{what}: an http(s) URL without a query")
    return url.rstrip("/")


@dataclass(frozen=True)
class Peer:
    name: str
    url: str
    kind: str = "dicomweb"
    auth: dict[str, str] = field(default_factory=lambda: {"type": "none"})
    ca_cert: str = ""
    verify_tls: bool = True
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        """As the API shows it: secrets masked."""
        secret = AUTH_FIELDS[self.auth["type"]]
        auth = {k: (MASK if secret.get(k) else v) for k, v in self.auth.items()}
        return {
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "auth": auth,
            "caCert": self.ca_cert,
            "verifyTls": self.verify_tls,
            "description": self.description,
        }

    @classmethod
    def from_json(cls, name: str, doc: Any, stored: Peer | None = None) -> Peer:
        """A peer from the admin API's JSON; :class:`BadRequest` with what is wrong.
        Masked secrets (``"***"``) keep the values of ``stored``."""
        if not isinstance(doc, dict):
            raise BadRequest("the body must be a JSON object")
        unknown = set(doc) - {"name", "url", "kind", "auth", "caCert", "verifyTls",
                              "description"}  # fmt: skip
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        check_name(name)
        if "name" in doc and doc["name"] != name:
            raise BadRequest("name differs from the name in the path")
        kind = doc.get("kind", "dicomweb")
        if kind not in KINDS:
            raise BadRequest(f"kind: one of {', '.join(KINDS)}")
        auth = _auth(doc.get("auth", {"type": "none"}), stored)
        ca_cert = doc.get("caCert", "")
        if not isinstance(ca_cert, str) or (ca_cert and "BEGIN CERTIFICATE" not in ca_cert):
            raise BadRequest("caCert: the PEM of a CA certificate, or ''")
        verify = doc.get("verifyTls", True)
        description = doc.get("description", "")
        if not isinstance(verify, bool) or not isinstance(description, str):
            raise BadRequest("verifyTls: true or false; description: a string")
        url = _check_url(doc.get("url"), "url")
        return cls(name, url, kind, auth, ca_cert, verify, description[:200])

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Peer:
        auth = row["auth"]
        return cls(
            row["name"],
            row["url"],
            row["kind"],
            json.loads(auth) if isinstance(auth, str) else dict(auth),
            row["ca_cert"],
            row["verify_tls"],
            row["description"],
        )


def _auth(doc: Any, stored: Peer | None) -> dict[str, str]:
    if not isinstance(doc, dict) or doc.get("type") not in AUTH_FIELDS:
        raise BadRequest(f"auth.type: one of {', '.join(AUTH_FIELDS)}")
    kind = doc["type"]
    fields = AUTH_FIELDS[kind]
    unknown = set(doc) - {"type", *fields}
    if unknown:
        raise BadRequest(f"auth: unknown fields {', '.join(sorted(unknown))}")
    auth = {"type": kind}
    for name, secret in fields.items():
        value = doc.get(name, "")
        if secret and value == MASK:
            if stored is None or stored.auth.get("type") != kind or name not in stored.auth:
                raise BadRequest(f"auth.{name}: give the value (there is none stored)")
            value = stored.auth[name]
        if not isinstance(value, str) or (not value and name != "scope"):
            raise BadRequest(f"auth.{name}: a non-empty string")
        auth[name] = value
    if kind == "client_credentials":
        _check_url(auth["tokenUrl"], "auth.tokenUrl")
    return auth


class PeerRegistry:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def all(self) -> list[Peer]:
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM dicomweb_peer ORDER BY name")
        return [Peer.from_row(r) for r in rows]

    async def get(self, name: str) -> Peer | None:
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM dicomweb_peer WHERE name = $1", name
        )
        return None if row is None else Peer.from_row(row)

    async def put(self, peer: Peer) -> bool:
        """Register or replace ``peer``; True if it is new."""
        created = await self.pool.fetchval(
            f"INSERT INTO dicomweb_peer ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (name) DO UPDATE SET url = $2, kind = $3, auth = $4, ca_cert = $5,"
            " verify_tls = $6, description = $7, updated_at = now() RETURNING xmax = 0",
            peer.name,
            peer.url,
            peer.kind,
            json.dumps(peer.auth),
            peer.ca_cert,
            peer.verify_tls,
            peer.description,
        )
        return bool(created)

    async def delete(self, name: str) -> bool:
        done = await self.pool.execute("DELETE FROM dicomweb_peer WHERE name = $1", name)
        return done != "DELETE 0"
