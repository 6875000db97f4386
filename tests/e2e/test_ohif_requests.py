"""What OHIF 3.13 sends, byte for byte, is understood (through the router, real services).

The requests below are copied from what the viewer sent in Chromium (see
tests/browser/): the study list's QIDO with ``includefield`` comma-encoded as ``%2C``,
keyword and tag keys mixed, ``fuzzymatching=true|false``; the study's series and
instances; series metadata; frames with the multipart Accept quoted (our generated
config) and unquoted (OHIF's own default, ``omitQuotationForMultipartRequest: true``);
``thumbnailDirect``'s thumbnail; and the upload dialog's STOW-RS (one file per request,
boundary quoted in Content-Type).
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, split_multipart

pytestmark = pytest.mark.e2e

LIST = (
    "limit=101&offset=0&fuzzymatching={fuzzy}"
    "&includefield=00081030%2C00080060%2C00080090%2C00100030"
)
FRAME_ACCEPTS = [
    'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
]


@pytest.fixture(scope="module")
async def study(cluster: Cluster) -> dict[str, str]:
    """Two instances stored as OHIF's uploader stores them: one request per file."""
    tag = uuid.uuid4().hex[:6].upper()
    uids = {
        "patient": f"OHIF{tag}^Jane",
        "patient_id": f"OHIF-{tag}",
        "study": f"2.25.{uuid.uuid4().int}",
        "series": f"2.25.{uuid.uuid4().int}",
    }
    sops = [f"2.25.{uuid.uuid4().int}" for _ in range(2)]
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=60) as client:
        for n, sop in enumerate(sops, start=1):
            boundary = uuid.uuid4().hex
            body = (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + make_instance(
                    uids["study"], uids["series"], sop, uids["patient"], uids["patient_id"], n
                )
                + f"\r\n--{boundary}--".encode()  # dicomweb-client: no CRLF after the close
            )
            r = await client.post(
                "/studies",
                content=body,
                headers={
                    "Content-Type": (
                        f'multipart/related; type="application/dicom"; boundary="{boundary}"'
                    ),
                    "Accept": "application/dicom+json, application/json",
                },
            )
            assert r.status_code == 200, r.text
    uids["sop"] = sops[0]
    return uids


def _values(answer: list[dict[str, Any]], tag: str) -> list[object]:
    return [v for item in answer for v in item.get(tag, {}).get("Value", [])]


@pytest.mark.parametrize("fuzzy", ["true", "false"])
async def test_the_study_list_query(
    client: httpx.AsyncClient, study: dict[str, str], fuzzy: str
) -> None:
    family = study["patient"].split("^")[0]
    query = LIST.format(fuzzy=fuzzy)
    # the list, a lowercase partial name (OHIF wraps it in *...*), and PatientID by tag
    for filters in (
        f"PatientName=*{family[1:6].lower()}*",
        f"PatientName=*{family.lower()}*&00100020={study['patient_id']}",
        f"00100020=*{study['patient_id'][-4:]}*&StudyDescription=",
    ):
        r = await client.get(
            f"/studies?{filters}&{query}", headers={"Accept": "application/dicom+json"}
        )
        assert r.status_code == 200, (filters, r.text)
        assert _values(r.json(), "0020000D") == [study["study"]], filters
        assert _values(r.json(), "00080061") == ["MR"]  # ModalitiesInStudy
        assert _values(r.json(), "00201208") == [2]  # NumberOfStudyRelatedInstances


async def test_the_study_list_by_study_uid(
    client: httpx.AsyncClient, study: dict[str, str]
) -> None:
    r = await client.get(f"/studies?{LIST.format(fuzzy='true')}&StudyInstanceUID={study['study']}")
    assert r.status_code == 200
    assert _values(r.json(), "0020000D") == [study["study"]]


async def test_opening_the_study(client: httpx.AsyncClient, study: dict[str, str]) -> None:
    s, se = study["study"], study["series"]
    series = await client.get(
        f"/studies/{s}/series?includefield=00080021%2C00080031%2C0008103E%2C00200011"
    )
    assert series.status_code == 200
    assert _values(series.json(), "0020000E") == [se]
    first = await client.get(f"/studies/{s}/series/{se}/instances?limit=1&includefield=00080018")
    assert first.status_code == 200 and len(first.json()) == 1
    metadata = await client.get(
        f"/studies/{s}/series/{se}/metadata", headers={"Accept": "application/dicom+json"}
    )
    assert metadata.status_code == 200
    assert len(metadata.json()) == 2


@pytest.mark.parametrize("accept", FRAME_ACCEPTS)
async def test_frames_with_either_accept(
    client: httpx.AsyncClient, study: dict[str, str], accept: str
) -> None:
    path = f"/studies/{study['study']}/series/{study['series']}/instances/{study['sop']}"
    r = await client.get(f"{path}/frames/1", headers={"Accept": accept})
    assert r.status_code == 200, r.text
    parts = split_multipart(r.content, r.headers["content-type"])
    assert len(parts) == 1
    headers, payload = parts[0]
    assert headers["content-type"].startswith("application/octet-stream")
    assert len(payload) == 32 * 32 * 2  # the stored frame, uncompressed
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"


async def test_the_direct_thumbnail(client: httpx.AsyncClient, study: dict[str, str]) -> None:
    path = f"/studies/{study['study']}/series/{study['series']}/instances/{study['sop']}"
    r = await client.get(f"{path}/thumbnail?accept=image/jpeg")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.content.startswith(b"\xff\xd8")
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
