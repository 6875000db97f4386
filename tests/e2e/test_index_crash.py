"""SIGKILL the index worker in the middle of a stream of STOW requests, restart it:
every instance whose STOW reported success is indexed exactly once; those reported
failed (the index did not commit in time, 0xA700) are stored on a re-send."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
from pydicom.uid import generate_uid

from tests.support.dicomgen import make_instance, multipart


async def test_index_worker_killed_mid_stream(cluster, client):
    study = generate_uid()
    files = {generate_uid(): None for _ in range(60)}
    for sop in files:
        files[sop] = make_instance(study=study, sop=sop)
    results: dict[str, int] = {}
    enough = asyncio.Event()

    async def sender(sops: list[str]) -> None:
        for sop in sops:
            body, ctype = multipart([files[sop]])
            r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
            results[sop] = r.status_code
            if len(results) >= 12:
                enough.set()

    sops = list(files)
    senders = [asyncio.create_task(sender(sops[i::4])) for i in range(4)]
    await enough.wait()
    cluster.kill("index-worker", signal.SIGKILL)
    await asyncio.sleep(1.5)
    cluster.start("index-worker")
    await asyncio.gather(*senders)

    ok = [s for s, code in results.items() if code == 200]
    failed = [s for s, code in results.items() if code != 200]
    assert all(code in (200, 409) for code in results.values()), results
    assert len(ok) >= 12

    conn = await asyncpg.connect(cluster.settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT sop_instance_uid, count(*) AS n FROM change_feed"
            " WHERE study_instance_uid = $1 GROUP BY 1",
            study,
        )
        indexed = {r["sop_instance_uid"]: r["n"] for r in rows}
        for sop in ok:
            assert indexed.get(sop) == 1, f"{sop} reported stored but indexed {indexed.get(sop)}x"
        # what failed during the outage goes in when re-sent
        for sop in failed:
            body, ctype = multipart([files[sop]])
            r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 200, r.text
        n = await conn.fetchval(
            "SELECT number_of_instances FROM study WHERE study_instance_uid = $1", study
        )
        assert n == len(files)
        dupes = await conn.fetchval(
            "SELECT count(*) FROM (SELECT sop_instance_uid FROM change_feed"
            " WHERE study_instance_uid = $1 GROUP BY 1 HAVING count(*) > 1) d",
            study,
        )
        assert dupes == 0
    finally:
        await conn.close()
