"""XML answers through the router (issue 13): PS3.18 8.7.4 and PS3.19 A.1.

Search results and metadata as ``multipart/related; type="application/dicom+xml"`` (a
Native DICOM Model document per data set), the STOW-RS response as one document; each
document validated against the PS3.19 A.1.6 schema and read for its values. JSON stays
the default, a search without match is 204 in either form (8.3.4.4.1)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from lxml import etree
from pydicom.uid import generate_uid

from tessera.shared.dicomxml import NAMESPACE
from tests.support.dicomgen import make_instance, multipart, split_multipart

pytestmark = pytest.mark.e2e

SCHEMA = etree.RelaxNG(
    etree.parse(str(Path(__file__).parents[1] / "data" / "schemas" / "native_dicom_model.rng"))
)
NS = {"d": NAMESPACE}
XML_PARTS = 'multipart/related; type="application/dicom+xml"'


def documents(r: httpx.Response) -> list[etree._Element]:
    """Each part of a multipart XML answer, validated against the PS3.19 schema."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(XML_PARTS), r.headers["content-type"]
    roots = []
    for headers, payload in split_multipart(r.content, r.headers["content-type"]):
        assert headers["content-type"] == "application/dicom+xml"
        root = etree.fromstring(payload)
        SCHEMA.assertValid(root)
        roots.append(root)
    return roots


def text(root: etree._Element, tag: str) -> str | None:
    return root.findtext(f"d:DicomAttribute[@tag='{tag}']/d:Value[@number='1']", namespaces=NS)


@pytest.fixture
async def study(client: httpx.AsyncClient) -> tuple[str, list[str]]:
    uid, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    files = [make_instance(uid, series, sop, instance_number=n) for n, sop in enumerate(sops)]
    body, ctype = multipart(files)
    r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    return uid, sops


async def test_search_results_as_native_dicom_model_parts(client, study) -> None:
    uid, sops = study
    for accept in (XML_PARTS, "application/dicom+xml"):
        r = await client.get(
            "/studies", params={"StudyInstanceUID": uid}, headers={"Accept": accept}
        )
        [root] = documents(r)
        assert text(root, "0020000D") == uid
        assert text(root, "00201208") == "3"  # NumberOfStudyRelatedInstances
        name = root.find("d:DicomAttribute[@tag='00100010']", NS)
        assert name.get("keyword") == "PatientName"
        assert name.findtext("d:PersonName/d:Alphabetic/d:FamilyName", namespaces=NS) == "Test"
    # the accept query parameter (PS3.18 8.3.3.1), at the instance level of the study
    r = await client.get(f"/studies/{uid}/instances", params={"accept": "application/dicom+xml"})
    assert sorted(text(root, "00080018") for root in documents(r)) == sorted(sops)


async def test_json_stays_the_default_and_wins_ties(client, study) -> None:
    uid, _ = study
    for accept in (None, "*/*", "application/dicom+json, application/dicom+xml"):
        headers = {"Accept": accept} if accept else {}
        r = await client.get("/studies", params={"StudyInstanceUID": uid}, headers=headers)
        assert r.headers["content-type"] == "application/dicom+json", accept
    r = await client.get(
        "/studies",
        params={"StudyInstanceUID": uid},
        headers={"Accept": "application/dicom+json;q=0.5, application/dicom+xml"},
    )
    assert r.headers["content-type"].startswith(XML_PARTS)


async def test_no_match_is_204_in_xml_too(client) -> None:
    r = await client.get(
        "/studies", params={"PatientID": "nobody-" + generate_uid()}, headers={"Accept": XML_PARTS}
    )
    assert (r.status_code, r.content) == (204, b"")


async def test_metadata_as_native_dicom_model_parts(client, study) -> None:
    uid, sops = study
    r = await client.get(f"/studies/{uid}/metadata", headers={"Accept": XML_PARTS})
    roots = documents(r)
    assert sorted(text(root, "00080018") for root in roots) == sorted(sops)
    for root in roots:  # Pixel Data is bulk data, its URI retrievable
        uri = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", NS).get("uri")
        pixels = await client.get(
            uri, headers={"Accept": "multipart/related; type=application/octet-stream"}
        )
        assert pixels.status_code == 200, uri
    # an unknown study is 404 whatever the form
    r = await client.get(f"/studies/{generate_uid()}/metadata", headers={"Accept": XML_PARTS})
    assert r.status_code == 404


async def test_stow_response_as_one_native_dicom_model_document(client) -> None:
    uid, sop = generate_uid(), generate_uid()
    body, ctype = multipart([make_instance(uid, generate_uid(), sop)])
    r = await client.post(
        "/studies", content=body, headers={"Content-Type": ctype, "Accept": "application/dicom+xml"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+xml"
    root = etree.fromstring(r.content)
    SCHEMA.assertValid(root)
    item = root.find("d:DicomAttribute[@tag='00081199']/d:Item[@number='1']", NS)
    assert text(item, "00081155") == sop  # ReferencedSOPInstanceUID
    # a failure (PS3.18 10.5.3: 409 with the FailedSOPSequence) in XML as well
    body, ctype = multipart([b"not dicom at all"])
    r = await client.post(
        f"/studies/{uid}",
        content=body,
        headers={"Content-Type": ctype, "Accept": "application/dicom+xml"},
    )
    assert r.status_code == 409, r.text
    root = etree.fromstring(r.content)
    SCHEMA.assertValid(root)
    failed = root.find("d:DicomAttribute[@tag='00081198']/d:Item", NS)
    assert text(failed, "00081197") is not None  # FailureReason


async def test_capabilities_are_a_wadl_document_of_the_service_ps3_18_8_9(cluster) -> None:
    base = cluster.base_url  # the service root, e.g. http://127.0.0.1:PORT/dicom-web
    async with httpx.AsyncClient(timeout=30) as client:
        for url in (base, base + "/"):
            r = await client.options(url, headers={"Accept": "application/vnd.sun.wadl+xml"})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"] == "application/vnd.sun.wadl+xml"
            root = etree.fromstring(r.content)
            wadl = {"w": "http://wadl.dev.java.net/2009/02"}
            [resources] = root.findall("w:resources", wadl)
            assert resources.get("base") == base.rstrip("/") + "/"  # Annex H
            ids = {m.get("id") for m in root.iter("{http://wadl.dev.java.net/2009/02}method")}
            assert {"SearchForStudies", "StoreInstances", "RetrieveStudyMetadata",
                    "RetrieveFrames", "RetrieveInstanceRendered"} <= ids  # fmt: skip
        r = await client.options(base, headers={"Accept": "application/pdf"})
        assert r.status_code == 406
