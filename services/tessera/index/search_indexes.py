"""Create (or drop) the indexes of the operator's extra searchable attributes.

    python -m tessera.index.search_indexes [--drop-unused] [--dry-run]

For each entry of ``TESSERA_QIDO_EXTRA_ATTRIBUTES`` (``level:keyword-or-tag``, see
:class:`tessera.shared.levels.Layout`) it creates, on that level's table, expression
indexes over the functions of migration 0003 that :mod:`tessera.shared.qido.match`
writes its conditions with (the tag is a literal in both, so the planner pairs them):

* ``gin (tessera_attr_values(attrs, 'tag'))``: single values and lists (``@>``, ``&&``)
  of every VR but PN and DT;
* ``gin (tessera_attr_text(attrs, 'tag') gin_trgm_ops)``: wildcards (``*x*``), and for
  PN the case-insensitive match;
* PN only: ``gin (tessera_fold(tessera_attr_text(attrs, 'tag')) gin_trgm_ops)`` for
  ``fuzzymatching=true``.

Sequences, DT (ranges compared in UTC) and bulk data get none: they are matched row
by row. Indexes are built
``CONCURRENTLY`` (the archive keeps writing) and named ``qido_<table>_<tag>_<kind>``;
``--drop-unused`` drops those of attributes no longer configured. Run
``python -m tessera.index.reindex`` first if rows stored before the setting changed must
be found too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import asyncpg

from tessera.shared.levels import Layout, Level, vr_of
from tessera.shared.settings import Settings

log = logging.getLogger("tessera.index.search_indexes")

_TABLES = {Level.STUDY: "study", Level.SERIES: "series", Level.INSTANCE: "instance"}
_NOT_INDEXED = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})


def index_statements(layout: Layout) -> dict[str, str]:
    """Index name -> CREATE INDEX statement, for every configured extra attribute."""
    out: dict[str, str] = {}
    for level, tag in layout.extras():
        vr, table = vr_of(tag), _TABLES[level]
        if vr in _NOT_INDEXED or vr == "DT":  # DT: ranges in UTC, compared row by row
            log.warning("%s (%s): %s attributes are not indexed", tag, level.label, vr)
            continue
        text = f"tessera_attr_text(attrs, '{tag}')"
        kinds = {"trgm": f"{text} gin_trgm_ops"}
        if vr == "PN":
            kinds["fold"] = f"tessera_fold({text}) gin_trgm_ops"
        else:
            kinds["values"] = f"tessera_attr_values(attrs, '{tag}')"
        for kind, expression in kinds.items():
            name = f"qido_{table}_{tag.lower()}_{kind}"
            out[name] = (
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name}"
                f" ON {table} USING gin ({expression})"
            )
    return out


async def existing_indexes(conn: asyncpg.Connection) -> dict[str, bool]:
    """Our ``qido_*`` indexes and whether each is valid (a failed CONCURRENTLY build
    leaves an invalid one behind, which is rebuilt)."""
    rows = await conn.fetch(
        """SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE c.relname LIKE 'qido\\_%' AND c.relnamespace = current_schema()::regnamespace"""
    )
    return {r["relname"]: r["indisvalid"] for r in rows}


async def apply(
    conn: asyncpg.Connection, layout: Layout, *, drop_unused: bool = False, dry_run: bool = False
) -> list[str]:
    """Create what is missing (and drop what is unused if asked); the statements run."""
    wanted = index_statements(layout)
    present = await existing_indexes(conn)
    statements = []
    for name, valid in present.items():
        if (name not in wanted and drop_unused) or (name in wanted and not valid):
            statements.append(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    statements += [sql for name, sql in wanted.items() if not present.get(name, False)]
    tables = sorted({_TABLES[level] for level, _ in layout.extras()})
    if statements:
        statements += [f"ANALYZE {table}" for table in tables]  # expression statistics
    for sql in statements:
        log.info("%s", sql)
        if not dry_run:
            await conn.execute(sql)
    return statements


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drop-unused", action="store_true", help="drop unconfigured ones")
    parser.add_argument("--dry-run", action="store_true", help="print, do not run")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper())
    layout = Layout.parse(settings.qido_extra_attributes)

    async def run() -> list[str]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await apply(conn, layout, drop_unused=args.drop_unused, dry_run=args.dry_run)
        finally:
            await conn.close()

    for sql in asyncio.run(run()):
        print(sql + ";")


if __name__ == "__main__":
    main()
