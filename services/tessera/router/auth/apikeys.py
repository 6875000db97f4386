"""API keys that Tessera issues itself: for sites without an OpenID provider, and for
machines (uploaders, peers, the DIMSE gateway).

A key is ``tsk_<id>_<secret>`` (``id``: 16 hex digits, ``secret``: 64), used as a bearer
token (``Authorization: Bearer tsk_...``). The router's PostgreSQL keeps its id, the
SHA-256 of its secret, a label, its permissions, its study labels (none: every study),
an expiry and whether it was revoked; the secret itself is shown once, when created.
A router caches a key's row for ``auth_cache_seconds``: a revocation takes effect within
that time on every router.

``python -m tessera.router.auth.apikeys create|list|revoke`` manages them (the database
from ``TESSERA_AUTH_DATABASE_URL`` or ``TESSERA_ROUTER_DATABASE_URL``), as does
``/admin/api-keys`` on the router (the ``admin`` permission).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tessera.shared.auth import Permission, Principal
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.settings import Settings

MIGRATIONS = "tessera.router.auth"
PREFIX = "tsk_"
_TOKEN = re.compile(r"tsk_([0-9a-f]{16})_([0-9a-f]{64})")


class InvalidKey(Exception):
    """Not a valid key (the reason is for the log)."""


def is_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


@dataclass(frozen=True)
class ApiKey:
    id: str
    label: str
    permissions: frozenset[Permission]
    labels: frozenset[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "permissions": sorted(self.permissions),
            "labels": None if self.labels is None else sorted(self.labels),
            "created": self.created_at.isoformat(),
            "expires": self.expires_at.isoformat() if self.expires_at else None,
            "revoked": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    def principal(self) -> Principal:
        return Principal(
            subject=f"api-key:{self.id}",
            permissions=self.permissions,
            labels=self.labels,
            client_id=self.label,
            method="api-key",
        )


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        label=row["label"],
        permissions=frozenset(Permission(p) for p in row["permissions"]),
        labels=None if row["labels"] is None else frozenset(row["labels"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """The keys in the router's database, with a short-lived cache of rows by id."""

    def __init__(self, pool: asyncpg.Pool, cache_seconds: float = 5.0) -> None:
        self.pool = pool
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[asyncpg.Record | None, float]] = {}

    @classmethod
    async def connect(cls, dsn: str, cache_seconds: float = 5.0) -> ApiKeys:
        await apply_migrations(dsn, MIGRATIONS)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        assert pool is not None
        return cls(pool, cache_seconds)

    async def close(self) -> None:
        await self.pool.close()

    async def create(
        self,
        label: str,
        permissions: Sequence[Permission],
        labels: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its token (shown once)."""
        if not label.strip():
            raise ValueError("an API key needs a label (who or what uses it)")
        if not permissions:
            raise ValueError("an API key needs at least one permission")
        key_id, secret = secrets.token_hex(8), secrets.token_hex(32)
        row = await self.pool.fetchrow(
            """INSERT INTO api_key (id, secret_sha256, label, permissions, labels, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
            key_id,
            _sha256(secret),
            label.strip(),
            sorted({Permission(p).value for p in permissions}),
            None if labels is None else sorted(set(labels)),
            expires_at,
        )
        assert row is not None
        return _key(row), f"{PREFIX}{key_id}_{secret}"

    async def list(self) -> list[ApiKey]:
        return [_key(r) for r in await self.pool.fetch("SELECT * FROM api_key ORDER BY created_at")]

    async def revoke(self, key_id: str) -> bool:
        """Revoke the key; False if there is no such key (or it was already revoked)."""
        done = await self.pool.fetchval(
            "UPDATE api_key SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
            " RETURNING id",
            key_id,
        )
        self._cache.pop(key_id, None)
        return done is not None

    async def _row(self, key_id: str) -> asyncpg.Record | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        row = await self.pool.fetchrow("SELECT * FROM api_key WHERE id = $1", key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (row, now + self.cache_seconds)
        return row

    async def authenticate(self, token: str) -> Principal:
        """The principal of a valid, unexpired, unrevoked key; :class:`InvalidKey` else."""
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise InvalidKey("malformed API key")
        row = await self._row(m.group(1))
        if row is None or not hmac.compare_digest(row["secret_sha256"], _sha256(m.group(2))):
            raise InvalidKey("unknown API key")
        key = _key(row)
        if key.revoked_at is not None:
            raise InvalidKey(f"API key {key.id} is revoked")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise InvalidKey(f"API key {key.id} has expired")
        return key.principal()


# --- the CLI ---------------------------------------------------------------------------


def _database(settings: Settings, given: str | None) -> str:
    dsn = given or settings.auth_database_url or settings.router_database_url
    if not dsn:
        raise SystemExit(
            "no database: set TESSERA_AUTH_DATABASE_URL (or TESSERA_ROUTER_DATABASE_URL)"
            " or pass --database"
        )
    return dsn


async def _run(args: argparse.Namespace) -> int:
    keys = await ApiKeys.connect(_database(Settings.from_env(), args.database), 0)
    try:
        if args.command == "create":
            expires = (
                datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
            )
            labels = (
                [x for x in (args.labels or "").split(",") if x]
                if args.labels is not None
                else None
            )
            key, token = await keys.create(args.label, args.permission, labels, expires)
            print(json.dumps({**key.to_json(), "token": token}, indent=2))
            print("The token is shown only now: store it as a secret.", file=sys.stderr)
        elif args.command == "list":
            print(json.dumps([k.to_json() for k in await keys.list()], indent=2))
        elif args.command == "revoke":
            if not await keys.revoke(args.id):
                print(f"no active API key {args.id}", file=sys.stderr)
                return 1
            print(f"revoked {args.id}")
        return 0
    finally:
        await keys.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.router.auth.apikeys", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--database", help="the router's PostgreSQL (default: from TESSERA_*)")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="issue a key; prints it once")
    create.add_argument("--label", required=True, help="who or what uses the key")
    create.add_argument(
        "--permission",
        action="append",
        required=True,
        choices=[p.value for p in Permission],
        help="read, write, delete or admin (repeat for several)",
    )
    create.add_argument(
        "--labels", help="comma-separated study labels the key is limited to (default: every study)"
    )
    create.add_argument("--expires-days", type=float, help="days until it expires (default: never)")
    commands.add_parser("list", help="every key (never their secrets)")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("id")
    return asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
