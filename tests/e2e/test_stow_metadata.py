"""STOW-RS of metadata plus bulk data through the router (PS3.18 10.5.1.1.2, 8.6.1.2).

Each instance sent as DICOM JSON (F.2) or a Native DICOM Model document (PS3.19 A.1)
with its bulk data in parts named by Content-Location is read back, as stored, equal to
the same instance sent as a PS3.10 file: every attribute, and the pixel data (native,
or a JPEG frame kept compressed in its Transfer Syntax). Data sets that give no instance
are FailedSOPSequence items (0xC000) beside the ones stored (202), or alone (409)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from tessera.shared.dicomjson import dataset_to_json
from tessera.shared.dicomxml import dataset_to_xml
from tests.support.dicomgen import make_instance, split_multipart

pytestmark = pytest.mark.e2e

JPEG = (
    Path(__file__).parents[1]
    / "data"
    / "corpus"
    / "TransferSyntaxes"
    / "1.2.840.10008.1.2.4.50.dcm"
)
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def body_of(parts: list[tuple[dict[str, str], bytes]], part_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = bytearray()
    for headers, payload in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + payload + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f'multipart/related; type="{part_type}"; boundary={boundary}'


def metadata_and_bulk(data: bytes, location: str) -> tuple[dict, bytes]:
    """The DICOM JSON of a PS3.10 file with its Pixel Data as a BulkDataURI, and the
    Pixel Data value."""
    ds = pydicom.dcmread(io.BytesIO(data))
    doc = dataset_to_json(ds, location, bulk_data_threshold=64).json
    return doc, ds.PixelData


async def read_back(client: httpx.AsyncClient, ds: pydicom.Dataset) -> pydicom.Dataset:
    uids = (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    url = "/studies/{}/series/{}/instances/{}".format(*uids)
    r = await client.get(url, headers={"Accept": AS_STORED})
    assert r.status_code == 200, r.text
    [(_, payload)] = split_multipart(r.content, r.headers["content-type"])
    return pydicom.dcmread(io.BytesIO(payload))


def same_data_set(a: pydicom.Dataset, b: pydicom.Dataset) -> None:
    assert [e.tag for e in a] == [e.tag for e in b]
    for element in a:
        assert element.value == b[element.tag].value, element.tag


@pytest.mark.parametrize("form", ["application/dicom+json", "application/dicom+xml"])
async def test_metadata_and_bulk_data_read_back_equal_to_the_ps3_10_file(client, form) -> None:
    data = make_instance(generate_uid(), generate_uid(), generate_uid(), size=64)
    location = f"https://client.example/bulk/{uuid.uuid4().hex}"
    doc, pixels = metadata_and_bulk(data, location)
    uri = doc["7FE00010"]["BulkDataURI"]
    if form == "application/dicom+json":
        metadata = (json.dumps([doc]).encode(), form)
    else:
        metadata = (dataset_to_xml(doc), form)
    body, ctype = body_of(
        [
            ({"Content-Type": metadata[1]}, metadata[0]),
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, pixels),
        ],
        form,
    )
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    original = pydicom.dcmread(io.BytesIO(data))
    stored = await read_back(client, original)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    same_data_set(stored, original)


async def test_compressed_pixel_data_part_keeps_its_transfer_syntax(client) -> None:
    original = pydicom.dcmread(JPEG)
    original.StudyInstanceUID, original.SOPInstanceUID = generate_uid(), generate_uid()
    original.SeriesInstanceUID = generate_uid()  # the corpus file may be stored already
    original.file_meta.MediaStorageSOPInstanceUID = original.SOPInstanceUID
    frames = list(generate_frames(original.PixelData, number_of_frames=1))
    doc = dataset_to_json(original, "cid:unused", bulk_data_threshold=64).json
    doc["7FE00010"] = {"vr": "OB", "BulkDataURI": "cid:frame-1"}
    body, ctype = body_of(
        [
            ({"Content-Type": "application/dicom+json"}, json.dumps([doc]).encode()),
            (
                {
                    "Content-Type": "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50",
                    "Content-ID": "<frame-1>",
                },
                frames[0],
            ),
        ],
        "application/dicom+json",
    )
    r = await client.post(
        f"/studies/{original.StudyInstanceUID}", content=body, headers={"Content-Type": ctype}
    )
    assert r.status_code == 200, r.text
    stored = await read_back(client, original)
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert list(generate_frames(stored.PixelData, number_of_frames=1)) == frames
    assert stored.PatientName == original.PatientName and stored.Rows == original.Rows


async def test_data_sets_without_an_instance_fail_alone_with_0xc000(client) -> None:
    good = make_instance(generate_uid(), generate_uid(), generate_uid())
    doc, pixels = metadata_and_bulk(good, "https://client.example/bulk")
    uri = doc["7FE00010"]["BulkDataURI"]
    no_uid = {k: v for k, v in doc.items() if k != "00080018"}
    no_bulk = json.loads(json.dumps(doc))
    no_bulk["00080018"] = {"vr": "UI", "Value": [generate_uid()]}
    no_bulk["7FE00010"] = {"vr": "OW", "BulkDataURI": "https://client.example/missing"}
    body, ctype = body_of(
        [
            (
                {"Content-Type": "application/dicom+json"},
                json.dumps([doc, no_uid, no_bulk]).encode(),
            ),
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, pixels),
        ],
        "application/dicom+json",
    )
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 202, r.text  # PS3.18 Table 10.5.3-1: some failed
    answer = r.json()
    assert len(answer["00081199"]["Value"]) == 1
    failed = answer["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[0xC000], [0xC000]]
    comments = [f["00000902"]["Value"][0] for f in failed]
    assert "SOPInstanceUID" in comments[0] and "bulk data" in comments[1]
    # nothing usable: 409
    body, ctype = body_of(
        [({"Content-Type": "application/dicom+json"}, json.dumps([no_uid]).encode())],
        "application/dicom+json",
    )
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 409, r.text
    # not JSON at all: the request is refused
    body, ctype = body_of(
        [({"Content-Type": "application/dicom+json"}, b"{not json")], "application/dicom+json"
    )
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400, r.text


async def test_metadata_stow_and_xml_searches_over_three_shards(federation) -> None:
    """The router converts before it splits by study: studies land on their shards and
    an XML search over all of them finds each one."""
    studies = [generate_uid() for _ in range(4)]
    parts, docs = [], []
    for n, study in enumerate(studies):
        data = make_instance(study, generate_uid(), generate_uid(), patient_id="META-3")
        doc, pixels = metadata_and_bulk(data, f"https://client.example/{n}")
        docs.append(doc)
        uri = doc["7FE00010"]["BulkDataURI"]
        parts.append(
            ({"Content-Type": "application/octet-stream", "Content-Location": uri}, pixels)
        )
    metadata = ({"Content-Type": "application/dicom+json"}, json.dumps(docs).encode())
    body, ctype = body_of([metadata, *parts], "application/dicom+json")
    async with httpx.AsyncClient(base_url=federation.base_url, timeout=60) as client:
        r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 200, r.text
        assert len(r.json()["00081199"]["Value"]) == 4
        r = await client.get(
            "/studies", params={"PatientID": "META-3"}, headers={"Accept": "application/dicom+xml"}
        )
        assert r.status_code == 200, r.text
        found = [p for _, p in split_multipart(r.content, r.headers["content-type"])]
        assert sorted(s for s in studies if any(s.encode() in p for p in found)) == sorted(studies)
