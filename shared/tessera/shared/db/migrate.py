"""Numbered SQL migrations, applied in order, each once, each in its own transaction.

Files are ``migrations/NNNN_name.sql``; the applied ones are recorded in
``schema_migration``. An advisory lock makes concurrent runners (several pods
starting at once) wait for each other instead of racing.
"""

from __future__ import annotations

import asyncio
from importlib import resources

import asyncpg

_LOCK_ID = 0x7E55E4A  # pg_advisory_lock key for "tessera migrations"


def migration_files() -> list[tuple[str, str]]:
    """(name, sql) of every migration, in order."""
    folder = resources.files("tessera.shared.db") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(n, (folder / n).read_text(encoding="utf-8")) for n in names]


async def apply_migrations(dsn: str) -> list[str]:
    """Apply what is missing; returns the names applied now."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migration ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migration")}
            applied = []
            for name, sql in migration_files():
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migration (name) VALUES ($1)", name)
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    finally:
        await conn.close()


def main() -> None:
    from tessera.shared.settings import Settings

    settings = Settings.from_env()
    applied = asyncio.run(apply_migrations(settings.database_url))
    print("applied:", ", ".join(applied) if applied else "nothing (schema is current)")


if __name__ == "__main__":
    main()
