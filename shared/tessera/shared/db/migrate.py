"""Numbered SQL migrations, applied in order, each once, each in its own transaction.

Files are ``NNNN_name.sql`` in a migrations folder; the applied ones are recorded in
``schema_migration`` of the database they were applied to. An advisory lock makes
concurrent runners (several pods starting at once) wait for each other instead of racing.

The default folder holds a shard's schema (``tessera/shared/db/migrations``); the router's
registry database has its own (``tessera/router/registry/migrations``), applied with
the same runner:
``apply_migrations(dsn, "tessera.router.registry")``.
"""

from __future__ import annotations

import asyncio
import zlib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import asyncpg

# The package whose ``migrations`` folder holds the shard schema.
SHARD_MIGRATIONS = "tessera.shared.db"
_LOCK_ID = 0x7E55E4A  # pg_advisory_lock key for "tessera migrations" (the shard schema)
_TABLE_LOCK_ID = 0x7E55E4B  # and for creating the schema_migration table


def _folder(package_or_folder: str | Path) -> Traversable:
    """A package name means its ``migrations`` resource folder; a Path is the folder."""
    if isinstance(package_or_folder, Path):
        return package_or_folder
    return resources.files(package_or_folder) / "migrations"


def _lock_id(package_or_folder: str | Path) -> int:
    """The shard schema keeps its historic key; any other source gets one of its own."""
    if package_or_folder == SHARD_MIGRATIONS:
        return _LOCK_ID
    return zlib.crc32(str(package_or_folder).encode())


def migration_files(package_or_folder: str | Path = SHARD_MIGRATIONS) -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order."""
    folder = _folder(package_or_folder)
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n, (folder / n).read_text(encoding="utf-8")) for n in names]


async def apply_migrations(dsn: str, package_or_folder: str | Path = SHARD_MIGRATIONS) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    lock_id = _lock_id(package_or_folder)
    conn = await asyncpg.connect(dsn)
    try:
        # the record table is shared by every source of migrations of a database (the
        # router's and the DIMSE gateway's start at once on the same one): made under a
        # lock of its own, as concurrent CREATE TABLE IF NOT EXISTS can both try to create
        await conn.execute("SELECT pg_advisory_lock($1)", _TABLE_LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migration ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _TABLE_LOCK_ID)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_id)
        try:
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migration")}
            applied = []
            for name, sql in migration_files(package_or_folder):
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migration (name) VALUES ($1)", name)
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_id)
    finally:
        await conn.close()


def main() -> None:
    from tessera.shared.settings import Settings

    settings = Settings.from_env()
    applied = asyncio.run(apply_migrations(settings.database_url))
    print("applied:", ", ".join(applied) if applied else "nothing (schema is current)")


if __name__ == "__main__":
    main()
