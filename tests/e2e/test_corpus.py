"""Every .dcm file of the corpus (real-world and malformed) through STOW-RS, one per
request: each is stored and retrievable byte-identical, or rejected with a PS3.18
Table I.2-2 failure reason. No service dies, and what was stored before is still there."""

from __future__ import annotations

from pathlib import Path

from pydicom.uid import generate_uid

from tests.support.dicomgen import make_instance, multipart, split_multipart

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
FILES = sorted(CORPUS.rglob("*.dcm"))
ALL_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'
KNOWN_REASONS = {0xA700, 0xA900, 0xC000, 0xC122, 0x0110, 0x0122, 0x0111}


async def _stow(client, data: bytes):
    body, ctype = multipart([data])
    return await client.post("/studies", content=body, headers={"Content-Type": ctype})


async def test_every_corpus_file_is_stored_or_rejected_with_a_reason(cluster, client):
    assert len(FILES) > 150, "tests/data/corpus is incomplete"
    sentinel_study = generate_uid()
    sentinel = make_instance(study=sentinel_study)
    assert (await _stow(client, sentinel)).status_code == 200

    stored, rejected = [], []
    for path in FILES:
        data = path.read_bytes()
        r = await _stow(client, data)
        name = str(path.relative_to(CORPUS))
        assert r.status_code in (200, 202, 409), f"{name}: {r.status_code} {r.text[:300]}"
        doc = r.json()
        refs = doc.get("00081199", {}).get("Value", [])
        fails = doc.get("00081198", {}).get("Value", [])
        assert len(refs) + len(fails) == 1, f"{name}: {doc}"
        if refs:
            stored.append((name, data, refs[0]["00081190"]["Value"][0]))
        else:
            reason = fails[0]["00081197"]["Value"][0]
            assert reason in KNOWN_REASONS, f"{name}: failure reason {reason:#06x}"
            rejected.append((name, reason))

    for name in ("index", "ingest", "retrieve", "router", "index-worker"):
        assert cluster.alive(name), f"{name} died:\n{cluster.log(name)}"

    # stored means retrievable, byte for byte (a later file with other bytes under a
    # stored SOPInstanceUID is rejected with 0x0111, so what comes back is what was sent)
    for name, data, url in stored:
        r = await client.get(url, headers={"Accept": ALL_TS})
        assert r.status_code == 200, f"{name}: {r.status_code}"
        ((_headers, payload),) = split_multipart(r.content, r.headers["content-type"])
        assert payload == data, f"{name} came back different"

    # nothing stored before was lost
    q = await client.get("/studies", params={"StudyInstanceUID": sentinel_study})
    assert q.json()[0]["00201208"]["Value"] == [1]
    assert len(stored) > len(rejected)
    print(f"\ncorpus: {len(stored)} stored, {len(rejected)} rejected:")
    for name, reason in rejected:
        print(f"  {reason:#06x} {name}")
