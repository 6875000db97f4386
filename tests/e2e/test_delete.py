"""DELETE of studies, series and instances through the router (issue 13), as Microsoft's
and Google's DICOM services and Orthanc offer it: 204 and gone from QIDO-RS and WADO-RS
when the answer is sent, 404 for what is not there, the counts and ModalitiesInStudy of
what remains recomputed, the stored objects removed, and a STOW of the same instances
afterwards works. On one shard (the e2e cluster) and on three (the federation)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest
from pydicom.uid import CTImageStorage, generate_uid

from tessera.shared.storage import instance_key, open_store
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart, split_multipart
from tests.support.shards import Federation

pytestmark = pytest.mark.e2e

ALL_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def ct(study: str, series: str, sop: str) -> bytes:
    """A CT instance (make_instance makes MR ones): a study of two modalities."""
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_instance(study=study, series=series, sop=sop)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.Modality = "CT"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


class Study:
    """A study of an MR series (3 instances) and a CT series (2), stored."""

    def __init__(self) -> None:
        self.uid = generate_uid()
        self.mr, self.ct = generate_uid(), generate_uid()
        self.files: dict[str, tuple[str, bytes]] = {}
        for n in range(3):
            sop = generate_uid()
            self.files[sop] = (self.mr, make_instance(self.uid, self.mr, sop, instance_number=n))
        for _ in range(2):
            sop = generate_uid()
            self.files[sop] = (self.ct, ct(self.uid, self.ct, sop))

    def url(self, sop: str | None = None, series: str | None = None) -> str:
        url = f"/studies/{self.uid}"
        if sop is not None:
            series = self.files[sop][0]
        if series is not None:
            url += f"/series/{series}"
        return url + (f"/instances/{sop}" if sop is not None else "")

    def of(self, series: str) -> list[str]:
        return [sop for sop, (s, _) in self.files.items() if s == series]


async def store(client: httpx.AsyncClient, files: list[bytes]) -> None:
    body, ctype = multipart(files)
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


async def study_row(client: httpx.AsyncClient, study: str) -> dict[str, Any] | None:
    r = await client.get("/studies", params={"StudyInstanceUID": study, "includefield": "00080061"})
    assert r.status_code in (200, 204), r.text  # 204: no match (PS3.18 8.3.4.4.1)
    rows = r.json() if r.content else []
    return rows[0] if rows else None


def value(row: dict[str, Any], tag: str) -> list[Any]:
    return list(row.get(tag, {}).get("Value", []))


async def check_deletes(client: httpx.AsyncClient, object_exists: Any) -> None:
    s = Study()
    await store(client, [data for _, data in s.files.values()])
    mr_sops, ct_sops = s.of(s.mr), s.of(s.ct)

    # one instance: gone from QIDO and WADO, the counts follow, its object too
    gone = mr_sops[0]
    r = await client.delete(s.url(gone))
    assert r.status_code == 204, r.text
    assert not r.content
    assert (await client.get(s.url(gone), headers={"Accept": ALL_TS})).status_code == 404
    q = await client.get("/instances", params={"SOPInstanceUID": gone})
    assert (q.status_code, q.content) == (204, b"")  # no match (PS3.18 8.3.4.4.1)
    row = await study_row(client, s.uid)
    assert row is not None
    assert value(row, "00201208") == [4]  # NumberOfStudyRelatedInstances
    assert value(row, "00201206") == [2]  # NumberOfStudyRelatedSeries
    assert not await object_exists(s.files[gone][1])
    assert await object_exists(s.files[mr_sops[1]][1])

    # unknown UIDs: 404, nothing else touched
    assert (await client.delete(s.url(gone))).status_code == 404
    assert (await client.delete(s.url(series=generate_uid()))).status_code == 404
    assert (await client.delete(f"/studies/{generate_uid()}")).status_code == 404
    assert (await client.delete("/studies/not..a..uid")).status_code == 400

    # a series: ModalitiesInStudy loses CT
    r = await client.delete(s.url(series=s.ct))
    assert r.status_code == 204, r.text
    row = await study_row(client, s.uid)
    assert row is not None
    assert value(row, "00080061") == ["MR"]
    assert value(row, "00201206") == [1] and value(row, "00201208") == [2]
    series = await client.get(f"/studies/{s.uid}/series")
    assert [value(x, "0020000E") for x in series.json()] == [[s.mr]]
    for sop in ct_sops:
        assert not await object_exists(s.files[sop][1])

    # the study: gone everywhere, its objects too; again: 404
    r = await client.delete(s.url())
    assert r.status_code == 204, r.text
    assert await study_row(client, s.uid) is None
    assert (await client.get(s.url(), headers={"Accept": ALL_TS})).status_code == 404
    assert (await client.get(f"{s.url()}/metadata")).status_code == 404
    assert (await client.delete(s.url())).status_code == 404
    for sop in mr_sops[1:]:
        assert not await object_exists(s.files[sop][1])

    # stored again: all there, byte for byte
    await store(client, [data for _, data in s.files.values()])
    r = await client.get(s.url(), headers={"Accept": ALL_TS})
    assert r.status_code == 200
    parts = split_multipart(r.content, r.headers["content-type"])
    assert sorted(p for _, p in parts) == sorted(data for _, data in s.files.values())
    row = await study_row(client, s.uid)
    assert row is not None and value(row, "00080061") == ["CT", "MR"]

    # the last instance of a series takes the series, the last series the study
    for sop in s.of(s.ct):
        assert (await client.delete(s.url(sop))).status_code == 204
    assert [value(x, "0020000E") for x in (await client.get(f"{s.url()}/series")).json()] == [
        [s.mr]
    ]
    for sop in s.of(s.mr):
        assert (await client.delete(s.url(sop))).status_code == 204
    assert await study_row(client, s.uid) is None


def stored_objects(settings: Any):  # type: ignore[no-untyped-def]
    async def exists(data: bytes) -> bool:
        store = open_store(settings)
        try:
            return await store.exists(instance_key(hashlib.sha256(data).hexdigest()))
        finally:
            await store.close()

    return exists


async def test_delete_instance_series_and_study_on_one_shard(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    await check_deletes(client, stored_objects(cluster.settings))


async def test_delete_through_three_shards(federation: Federation) -> None:
    """Studies land on different shards; each delete goes to the owner's index."""
    stacks = federation.stacks

    async def exists(data: bytes) -> bool:
        found = await asyncio.gather(
            *(stored_objects(stack.settings)(data) for stack in stacks.values())
        )
        return any(found)

    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as client:
        for _ in range(3):
            await check_deletes(client, exists)
