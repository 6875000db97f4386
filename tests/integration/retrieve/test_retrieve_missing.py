"""A study whose stored objects are not all in storage (PS3.18 10.4.1.1): refused with a
reason before the status, not aborted half-way, while the number of objects is small
enough to check them all (:data:`tessera.retrieve.streaming.PREFLIGHT_MAX_OBJECTS`);
past that, a failure after the status is logged as an error."""

from __future__ import annotations

import hashlib
import logging

import pytest
from starlette.applications import Starlette

from tessera.retrieve import streaming
from tessera.retrieve.context import Context
from tessera.shared.storage import instance_key
from tests.support.corpus import EPI, FLAIR, Stored, by_number, parts, store_files


async def lose(app: Starlette, stored: Stored) -> None:
    ctx: Context = app.state.retrieve
    await ctx.store.delete(instance_key(hashlib.sha256(stored.data).hexdigest()))


async def test_a_missing_object_in_the_middle_is_refused_up_front(app, client, caplog):
    brainix = await store_files(app, FLAIR + EPI)
    last = by_number(brainix[:3])[-1]  # sent third of the FLAIR series
    await lose(app, last)
    with caplog.at_level(logging.ERROR):
        r = await client.get(f"/studies/{last.study}/series/{last.series}")
    assert r.status_code == 500
    assert last.sop in r.text and "missing" in r.text
    assert any("missing" in rec.getMessage() for rec in caplog.records)
    # the other series is whole
    epi = brainix[3]
    r = await client.get(f"/studies/{epi.study}/series/{epi.series}")
    assert r.status_code == 200 and len(await parts(r)) == 2


async def test_past_the_bound_a_late_failure_is_logged(app, client, caplog, monkeypatch):
    monkeypatch.setattr(streaming, "PREFLIGHT_MAX_OBJECTS", 1)
    brainix = await store_files(app, FLAIR)
    last = by_number(brainix)[-1]
    await lose(app, last)
    aborted = pytest.raises(RuntimeError, match="response already started")  # httpx's ASGI
    with caplog.at_level(logging.ERROR), aborted:
        await client.get(f"/studies/{last.study}/series/{last.series}")
    assert any(
        "aborted after 2 parts" in rec.getMessage() and last.sop in rec.getMessage()
        for rec in caplog.records
    )
