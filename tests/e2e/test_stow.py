"""STOW-RS response semantics through the router (PS3.18 10.5.3, Table 10.5.3-1, Annex I)."""

from __future__ import annotations

from pydicom.uid import generate_uid

from tests.support.dicomgen import make_instance, multipart

FAILED, REFERENCED = "00081198", "00081199"


def _reasons(doc: dict) -> list[int]:
    return [item["00081197"]["Value"][0] for item in doc.get(FAILED, {}).get("Value", [])]


async def _stow(client, parts, url="/studies", part_type="application/dicom"):
    body, ctype = multipart(parts, part_type)
    return await client.post(url, content=body, headers={"Content-Type": ctype})


async def test_all_stored_is_200_and_searchable_at_once(client):
    study = generate_uid()
    r = await _stow(client, [make_instance(study=study, instance_number=i) for i in range(3)])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom+json")
    doc = r.json()
    assert len(doc[REFERENCED]["Value"]) == 3 and FAILED not in doc
    item = doc[REFERENCED]["Value"][0]
    base = str(client.base_url).rstrip("/")
    assert item["00081190"]["Value"][0].startswith(f"{base}/studies/{study}/series/")
    # read-your-writes: no waiting between the STOW answer and the search
    q = await client.get("/studies", params={"StudyInstanceUID": study})
    assert q.json()[0]["00201208"]["Value"] == [3]


async def test_resending_the_same_instance_is_idempotent(client):
    data = make_instance()
    first = await _stow(client, [data])
    again = await _stow(client, [data, data])
    assert first.status_code == again.status_code == 200
    assert first.json()[REFERENCED] == {"vr": "SQ", "Value": first.json()[REFERENCED]["Value"]}
    study = first.json()["00081190"]["Value"][0].rsplit("/", 1)[1]
    q = await client.get("/studies", params={"StudyInstanceUID": study})
    assert q.json()[0]["00201208"]["Value"] == [1]


async def test_different_object_under_a_stored_uid_fails_alone_and_keeps_the_original(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    original = make_instance(study=study, series=series, sop=sop, patient_name="Orig^Inal")
    assert (await _stow(client, [original])).status_code == 200
    other = make_instance(study=study, series=series, sop=sop, patient_name="Chan^Ged")
    r = await _stow(client, [other, make_instance(study=study, series=series)])
    assert r.status_code == 202
    assert _reasons(r.json()) == [0x0111]
    back = await client.get(f"/studies/{study}/series/{series}/instances/{sop}/metadata")
    assert back.json()[0]["00100010"]["Value"][0]["Alphabetic"] == "Orig^Inal"


async def test_study_uid_mismatch_is_409_with_a900(client):
    r = await _stow(client, [make_instance()], url=f"/studies/{generate_uid()}")
    assert r.status_code == 409
    assert _reasons(r.json()) == [0xA900]
    assert REFERENCED not in r.json()


async def test_one_bad_part_never_fails_its_neighbours(client):
    good = make_instance()
    r = await _stow(client, [b"this is not DICOM at all", good, good[:200]])
    assert r.status_code == 202
    assert sorted(_reasons(r.json())) == [0xC000, 0xC000]
    assert len(r.json()[REFERENCED]["Value"]) == 1


async def test_wrong_media_types_are_415(client):
    r = await client.post("/studies", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 415
    r = await _stow(client, [b"{}"], part_type="application/pdf")
    assert r.status_code == 415, r.text
    # metadata + bulk data is a form of STOW-RS (tests/e2e/test_stow_metadata.py); an
    # empty list of data sets is a bad request
    r = await _stow(client, [b"[]"], part_type="application/dicom+json")
    assert r.status_code == 400, r.text


async def test_malformed_multipart_is_400_and_stores_nothing(client):
    r = await client.post(
        "/studies",
        content=b"--abc\r\nContent-Type: application/dicom\r\n\r\nDICM",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=abc'},
    )
    assert r.status_code == 400
    r = await client.post(
        "/studies", content=b"", headers={"Content-Type": "multipart/related; boundary=x"}
    )
    assert r.status_code == 400
    r = await client.post(
        "/studies", content=b"--x--\r\n", headers={"Content-Type": "multipart/related"}
    )
    assert r.status_code == 400
