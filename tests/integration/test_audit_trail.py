"""The audit trail's writer on a real PostgreSQL: group commit, coalescing, failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tessera.router.auth.audit import AuditTrail
from tessera.router.auth.security import MIGRATIONS
from tessera.shared.db.migrate import apply_migrations
from tests.support.audit import audit_event


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(database, MIGRATIONS)
    p = await asyncpg.create_pool(database, min_size=1, max_size=4)
    assert p is not None
    yield p
    await p.close()


async def rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await pool.fetch("SELECT * FROM audit_event ORDER BY id"))


async def test_a_viewers_frames_of_one_study_are_one_audit_event(pool: asyncpg.Pool) -> None:
    trail = AuditTrail(pool, coalesce_seconds=60)
    trail.start()
    frames = [
        audit_event(path=f"/dicom-web/studies/1.2.3/series/4/instances/5/frames/{n}")
        for n in range(50)
    ]
    await asyncio.gather(*(trail.record(e) for e in frames))
    await trail.record(audit_event(study_instance_uid="9.9.9"))  # another study
    await trail.record(audit_event(subject="someone else"))
    await trail.record(audit_event(status=404, outcome=4))
    await trail.close()
    got = [(r["study_instance_uid"], r["subject"], r["outcome"]) for r in await rows(pool)]
    assert sorted(got) == sorted(
        [
            ("1.2.3", "reader", 0),
            ("9.9.9", "reader", 0),
            ("1.2.3", "someone else", 0),
            ("1.2.3", "reader", 4),
        ]
    )


async def test_each_distinct_query_is_its_own_audit_event(pool: asyncpg.Pool) -> None:
    trail = AuditTrail(pool, coalesce_seconds=60)
    trail.start()
    for n in range(5):
        q = audit_event(
            action="query",
            path="/dicom-web/studies",
            query=f"PatientID={n}",
            study_instance_uid=None,
        )
        await trail.record(q)
        await trail.record(q)  # the same search again: the same event
    await trail.close()
    assert [r["query"] for r in await rows(pool)] == [f"PatientID={n}" for n in range(5)]


async def test_without_coalescing_every_request_is_recorded(pool: asyncpg.Pool) -> None:
    trail = AuditTrail(pool, coalesce_seconds=0)
    trail.start()
    await asyncio.gather(*(trail.record(audit_event()) for _ in range(20)))
    await trail.close()
    assert len(await rows(pool)) == 20


async def test_an_event_that_cannot_be_written_raises_and_is_tried_again(
    pool: asyncpg.Pool,
) -> None:
    trail = AuditTrail(pool, coalesce_seconds=60)
    trail.start()
    await pool.execute("ALTER TABLE audit_event RENAME TO audit_event_away")
    with pytest.raises(asyncpg.UndefinedTableError):
        await trail.record(audit_event())
    await pool.execute("ALTER TABLE audit_event_away RENAME TO audit_event")
    await trail.record(audit_event())  # the failed one covers nothing: written now
    await trail.close()
    assert len(await rows(pool)) == 1
