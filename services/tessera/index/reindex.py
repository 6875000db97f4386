"""Rebuild the ``attrs`` of stored rows from their stored metadata, in the background.

    python -m tessera.index.reindex [--batch 500] [--phase study --phase series ...]

Run it after changing ``TESSERA_QIDO_EXTRA_ATTRIBUTES`` (and restarting the index
workers, so that new instances are written with the new layout): rows indexed before
the change get the extra attributes too, then ``python -m tessera.index.search_indexes``
indexes them. It walks each table in primary-key order, ``--batch`` rows per short
transaction, while the archive keeps serving:

* ``study``: ``study.attrs`` from the metadata of the study's first stored instance
  (the one that created the row, as the writer does), with the configured layout;
* ``series``: likewise for ``series.attrs``;
* ``instance``: ``instance.attrs`` from each instance's own metadata.

It is resumable: each batch commits its rows together with the last primary key done
(table ``reindex_progress``, one row per phase), so a run that is stopped, or dies,
continues where it was. A run for a different layout starts the phases over; a
finished phase is not walked again unless ``--restart`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from tessera.index.writer import _clean
from tessera.shared.levels import Layout, instance_attrs
from tessera.shared.settings import Settings

log = logging.getLogger("tessera.index.reindex")

PHASES = ("study", "series", "instance")
# each phase: (pk, metadata) rows after $1, $2 at a time; the metadata of the first
# stored instance (lowest pk) for studies and series
_BATCH = {
    "study": """SELECT st.pk, (SELECT i.metadata FROM series se JOIN instance i
                                 ON i.series_pk = se.pk
                                WHERE se.study_pk = st.pk ORDER BY i.pk LIMIT 1) AS metadata
                  FROM study st WHERE st.pk > $1 ORDER BY st.pk LIMIT $2""",
    "series": """SELECT se.pk, (SELECT i.metadata FROM instance i WHERE i.series_pk = se.pk
                                 ORDER BY i.pk LIMIT 1) AS metadata
                   FROM series se WHERE se.pk > $1 ORDER BY se.pk LIMIT $2""",
    "instance": "SELECT pk, metadata FROM instance WHERE pk > $1 ORDER BY pk LIMIT $2",
}
_UPDATE = {
    "study": "UPDATE study SET attrs = $2::text::jsonb WHERE pk = $1",
    "series": "UPDATE series SET attrs = $2::text::jsonb WHERE pk = $1",
    "instance": "UPDATE instance SET attrs = $2::text::jsonb WHERE pk = $1",
}


@dataclass
class Report:
    """What a run did: rows rewritten per phase, and whether every phase is finished."""

    rows: dict[str, int]
    finished: bool


def layout_key(layout: Layout) -> str:
    """How a layout is recorded in ``reindex_progress`` (a change restarts the phases)."""
    return json.dumps([[level.label, tag] for level, tag in layout.extras()])


def _attrs_function(phase: str, layout: Layout) -> Callable[[dict], dict]:
    return {
        "study": layout.study_attrs,
        "series": layout.series_attrs,
        "instance": instance_attrs,
    }[phase]


async def _start(conn: asyncpg.Connection, phase: str, key: str, restart: bool) -> tuple[int, bool]:
    """(last pk done, finished) for ``phase``; a new layout or ``restart`` starts over."""
    row = await conn.fetchrow(
        "SELECT last_pk, layout, done FROM reindex_progress WHERE phase = $1", phase
    )
    if row is not None and row["layout"] == key and not restart:
        return row["last_pk"], row["done"]
    await conn.execute(
        """INSERT INTO reindex_progress (phase, last_pk, layout, done) VALUES ($1, 0, $2, false)
           ON CONFLICT (phase) DO UPDATE SET last_pk = 0, layout = $2, done = false,
                                             updated_at = now()""",
        phase,
        key,
    )
    return 0, False


async def reindex(
    conn: asyncpg.Connection,
    layout: Layout,
    *,
    batch_size: int = 500,
    phases: Sequence[str] = PHASES,
    restart: bool = False,
    max_batches: int | None = None,
) -> Report:
    """Walk ``phases`` in order, ``batch_size`` rows per transaction; stop after
    ``max_batches`` batches in all if given (the next run resumes there)."""
    key = layout_key(layout)
    rows: dict[str, int] = {}
    batches = 0
    for phase in phases:
        last_pk, done = await _start(conn, phase, key, restart)
        build = _attrs_function(phase, layout)
        rows[phase] = 0
        while not done:
            if max_batches is not None and batches >= max_batches:
                return Report(rows, finished=False)
            async with conn.transaction():
                batch = await conn.fetch(_BATCH[phase], last_pk, batch_size)
                updates = [
                    (
                        r["pk"],
                        json.dumps(build(_clean(json.loads(r["metadata"]))[0]), ensure_ascii=False),
                    )
                    for r in batch
                    if r["metadata"] is not None
                ]
                if updates:
                    await conn.executemany(_UPDATE[phase], updates)
                done = len(batch) < batch_size
                last_pk = batch[-1]["pk"] if batch else last_pk
                await conn.execute(
                    """UPDATE reindex_progress SET last_pk = $2, done = $3, updated_at = now()
                        WHERE phase = $1""",
                    phase,
                    last_pk,
                    done,
                )
            rows[phase] += len(updates)
            batches += 1
        log.info("reindex %s: %d rows rewritten in this run", phase, rows[phase])
    return Report(rows, finished=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction")
    parser.add_argument("--phase", action="append", choices=PHASES, help="default: all")
    parser.add_argument("--restart", action="store_true", help="walk finished phases again")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper())
    layout = Layout.parse(settings.qido_extra_attributes)

    async def run() -> Report:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await reindex(
                conn,
                layout,
                batch_size=args.batch,
                phases=args.phase or PHASES,
                restart=args.restart,
            )
        finally:
            await conn.close()

    report = asyncio.run(run())
    print("reindexed:", ", ".join(f"{p} {n} rows" for p, n in report.rows.items()))


if __name__ == "__main__":
    main()
