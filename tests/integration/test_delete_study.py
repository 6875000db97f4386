"""The index's internal study routes on real PostgreSQL and a real S3 API server:
listing a study's instances with their SHA-256, and deleting a study (rows, counts,
change feed, objects and their caches), as the rebalance job uses them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import httpx
import pytest

from tessera.index.app import create_app
from tessera.index.writer import index_instances
from tessera.shared.index_internal import study_digest
from tessera.shared.settings import Settings
from tessera.shared.storage import (
    derived_frame_key,
    derived_key,
    open_store,
    rendered_key,
)
from tests.support.corpus import EPI, FLAIR, OVERLAY, describe
from tests.support.retrieve import asgi_client, running

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture
def settings(database: str, redis_db: str, s3_bucket: str, s3_settings: dict[str, str]) -> Settings:
    return Settings(
        database_url=database,
        redis_url=redis_db,
        storage_url=f"s3://{s3_bucket}",
        **s3_settings,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The index app, started, and a client calling it in process."""
    async with running(create_app(settings)) as app, asgi_client(app, "http://index") as c:
        yield c


@pytest.fixture
async def stored(settings: Settings) -> AsyncIterator[dict]:
    """Brainix (Flair + Epi: one study, two series) and another study, stored and indexed
    as ingest does, with a transcoded copy, a frame and a rendering cached for each
    Brainix instance."""
    store = open_store(settings)
    described = [describe(p) for p in [*FLAIR, *EPI, OVERLAY]]
    caches: list[str] = []
    for data, inst in described:
        await store.put_bytes(inst.storage_key, data.data)
        if data.study == described[0][0].study:
            for key in (
                derived_key(inst.storage_key, JPEG_BASELINE),
                derived_frame_key(inst.storage_key, 1, JPEG_BASELINE),
                rendered_key(inst.storage_key, 1, "0" * 16, "jpg"),
            ):
                await store.put_bytes(key, b"cached")
                caches.append(key)
    conn = await asyncpg.connect(settings.database_url)
    try:
        outcomes = await index_instances(conn, [inst for _, inst in described])
    finally:
        await conn.close()
    assert {o.outcome for o in outcomes} == {"stored"}
    yield {"store": store, "described": described, "caches": caches}
    await store.close()


async def test_instances_listing_has_checksums_and_digest(client, stored):
    brainix = [(d, i) for d, i in stored["described"] if d.study == stored["described"][0][0].study]
    study = brainix[0][0].study
    r = await client.get(f"/internal/studies/{study}/instances")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert {(x["sop"], x["sha256"], x["size"]) for x in doc["instances"]} == {
        (i.sop_instance_uid, i.sha256, i.size) for _, i in brainix
    }
    assert doc["digest"] == study_digest((i.sop_instance_uid, i.sha256) for _, i in brainix)
    assert (await client.get("/internal/studies/1.2.3.4/instances")).json()["instances"] == []


async def test_studies_listing_pages_by_key(client, stored):
    first = (await client.get("/internal/studies", params={"limit": 1})).json()["studies"]
    assert len(first) == 1
    rest = (
        await client.get("/internal/studies", params={"after": first[0][0], "limit": 10})
    ).json()["studies"]
    studies = {uid for _, uid, _ in first + rest}
    assert sum(n for _, _, n in first + rest) == len(stored["described"])
    assert studies == {d.study for d, _ in stored["described"]}
    assert (await client.get("/internal/studies", params={"limit": 0})).status_code == 400


async def test_delete_removes_rows_feed_objects_and_caches(client, stored, settings):
    store = stored["store"]
    described = stored["described"]
    study = described[0][0].study
    other = described[-1]
    brainix = [i for d, i in described if d.study == study]
    conn = await asyncpg.connect(settings.database_url)
    try:
        feed_before = await conn.fetchval("SELECT max(seq) FROM change_feed")
        r = await client.delete(f"/studies/{study}")
        assert r.status_code == 204, r.text
        assert not r.content
        assert (
            await conn.fetchval("SELECT count(*) FROM study WHERE study_instance_uid = $1", study)
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM instance WHERE sop_instance_uid = ANY($1::text[])",
                [i.sop_instance_uid for i in brainix],
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM series WHERE series_instance_uid = ANY($1::text[])",
                list({i.series_instance_uid for i in brainix}),
            )
            == 0
        )
        # Brainix's patient had no other study; the other study and its patient stay
        assert await conn.fetchval("SELECT count(*) FROM patient") == 1
        assert await conn.fetchval("SELECT count(*) FROM study") == 1
        assert await conn.fetchval("SELECT number_of_instances FROM study") == 1
        feed = await conn.fetch(
            "SELECT action, study_instance_uid, series_instance_uid, sop_instance_uid"
            " FROM change_feed WHERE seq > $1",
            feed_before,
        )
    finally:
        await conn.close()
    assert sorted(tuple(f) for f in feed) == sorted(
        ("delete", study, i.series_instance_uid, i.sop_instance_uid) for i in brainix
    )
    for inst in brainix:
        assert not await store.exists(inst.storage_key)
    for key in stored["caches"]:
        assert not await store.exists(key), key
    assert await store.exists(other[1].storage_key)
    # the other study is still searchable and listed
    r = await client.get(f"/internal/studies/{other[0].study}/instances")
    assert len(r.json()["instances"]) == 1


async def test_second_delete_is_404(client, stored):
    study = stored["described"][0][0].study
    assert (await client.delete(f"/studies/{study}")).status_code == 204
    r = await client.delete(f"/studies/{study}")
    assert r.status_code == 404
    assert "no study" in r.text


async def test_delete_keeps_a_patient_with_other_studies(client, stored, settings):
    """Store a second study for Brainix's patient: deleting the first keeps the patient."""
    data, inst = stored["described"][0]
    twin = replace(
        inst,
        study_instance_uid=inst.study_instance_uid + ".9",
        series_instance_uid=inst.series_instance_uid + ".9",
        sop_instance_uid=inst.sop_instance_uid + ".9",
        sha256="f" * 64,
        storage_key="instances/ff/ff/" + "f" * 64 + ".dcm",
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert (await index_instances(conn, [twin]))[0].outcome == "stored"
        patients = await conn.fetchval("SELECT count(*) FROM patient")
        r = await client.delete(f"/studies/{data.study}")
        assert r.status_code == 204
        assert await conn.fetchval("SELECT count(*) FROM patient") == patients
    finally:
        await conn.close()


async def test_if_match_refuses_a_changed_study(client, stored):
    """A study that holds an instance the caller did not copy is not deleted (412)."""
    described = stored["described"]
    study = described[0][0].study
    brainix = [i for d, i in described if d.study == study]
    partial = study_digest((i.sop_instance_uid, i.sha256) for i in brainix[:-1])
    r = await client.delete(f"/studies/{study}", headers={"If-Match": f'"{partial}"'})
    assert r.status_code == 412, r.text
    r = await client.get(f"/internal/studies/{study}/instances")
    assert len(r.json()["instances"]) == len(brainix)
    assert (
        await client.delete(f"/studies/{study}", headers={"If-Match": "nonsense"})
    ).status_code == 400
    full = study_digest((i.sop_instance_uid, i.sha256) for i in brainix)
    r = await client.delete(f"/studies/{study}", headers={"If-Match": f'"{full}"'})
    assert r.status_code == 204, r.text


async def test_delete_is_not_a_bad_uid(client):
    assert (await client.delete("/studies/not-a-uid")).status_code == 400
    assert (await client.delete("/studies/1.2.3")).status_code == 404
