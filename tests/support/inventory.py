"""What every shard holds, read back through the shard services themselves."""

from __future__ import annotations

import hashlib

import httpx

from tessera.router.shards import Shard
from tests.support.dicomgen import split_multipart

ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
Inventory = dict[str, tuple[str, str, str]]  # SOPInstanceUID -> (shard, study, sha256)


async def inventory(http: httpx.AsyncClient, shards: list[Shard]) -> Inventory:
    """Every instance on every shard, hashed from the bytes WADO-RS returns; asserts that
    no SOPInstanceUID is on two shards and that the bytes match the index's SHA-256."""
    found: Inventory = {}
    for shard in shards:
        r = await http.get(shard.index_url + "/internal/studies", params={"limit": 10000})
        assert r.status_code == 200, r.text
        for _, study, _ in r.json()["studies"]:
            listed = (
                await http.get(f"{shard.index_url}/internal/studies/{study}/instances")
            ).json()
            r = await http.get(f"{shard.retrieve_url}/studies/{study}", headers={"Accept": ANY_TS})
            assert r.status_code == 200, (shard.name, study, r.text)
            got = {
                h["content-location"].rsplit("/", 1)[1]: hashlib.sha256(data).hexdigest()
                for h, data in split_multipart(r.content, r.headers["content-type"])
            }
            assert got == {i["sop"]: i["sha256"] for i in listed["instances"]}
            for sop, sha in got.items():
                assert sop not in found, f"{sop} on {found[sop][0]} and {shard.name}"
                found[sop] = (shard.name, study, sha)
    return found
