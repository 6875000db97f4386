"""The gateway as an SCU, driven from the admin API, with Debian's Orthanc as the remote
PACS: C-ECHO it, C-FIND on it, C-MOVE a study from it into Tessera, C-STORE a study from
Tessera to it (jobs with progress); and Orthanc moving a study out of Tessera, with
Tessera as its C-MOVE SCP."""

from __future__ import annotations

import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from bench.orthanc import OrthancProcess, start_orthanc
from tests.e2e.dimse.conftest import ALL
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart


@pytest.fixture(scope="module")
def orthanc(archive: Cluster) -> Iterator[OrthancProcess]:
    port = archive.settings.dimse_port
    server = start_orthanc(
        tempfile.mkdtemp(prefix="tessera-orthanc-peer-"),
        overrides={
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomModalities": {"tessera": ["TESSERA", "127.0.0.1", port]},
            "DicomCheckCalledAet": True,
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def peer(orthanc: OrthancProcess, nodes: Callable[..., dict[str, Any]]) -> str:
    nodes("ORTHANC", port=orthanc.dicom_port, operations=ALL)
    return "ORTHANC"


def study_files(count: int = 5, size: int = 32) -> tuple[str, list[bytes]]:
    study, series = generate_uid(), generate_uid()
    return study, [
        make_instance(study, series, instance_number=i + 1, patient_id="PEER-1", size=size)
        for i in range(count)
    ]


def job_done(admin: httpx.Client, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = admin.get(f"/admin/dimse-jobs/{job['id']}").json()
        if now["state"] in ("done", "failed"):
            return now
        time.sleep(0.2)
    raise AssertionError(f"job not done: {now}")


def orthanc_study_instances(orthanc: OrthancProcess, study: str) -> int:
    r = httpx.post(orthanc.url + "/tools/find", json={"Level": "Instance",
                   "Query": {"StudyInstanceUID": study}})  # fmt: skip
    return len(r.json())


def test_c_echo_of_orthanc(admin: httpx.Client, peer: str) -> None:
    r = admin.post(f"/admin/dicom-nodes/{peer}/echo")
    assert r.status_code == 200 and r.json() == {"status": 0}, r.text


def test_c_find_on_orthanc(admin: httpx.Client, peer: str, orthanc: OrthancProcess) -> None:
    study, files = study_files(2)
    for data in files:
        assert httpx.post(orthanc.url + "/instances", content=data).status_code == 200
    keys = {"StudyInstanceUID": study, "PatientID": "", "NumberOfStudyRelatedInstances": ""}
    r = admin.post(f"/admin/dicom-nodes/{peer}/find", json={"level": "STUDY", "keys": keys})
    assert r.status_code == 200, r.text
    (found,) = r.json()
    assert found["0020000D"]["Value"] == [study]
    assert found["00100020"]["Value"] == ["PEER-1"]


def test_c_move_from_orthanc_into_tessera(
    admin: httpx.Client, peer: str, orthanc: OrthancProcess
) -> None:
    study, files = study_files(6)
    for data in files:
        assert httpx.post(orthanc.url + "/instances", content=data).status_code == 200
    r = admin.post(f"/admin/dicom-nodes/{peer}/move",
                   json={"level": "STUDY", "keys": {"StudyInstanceUID": study}})  # fmt: skip
    assert r.status_code == 202, r.text
    job = job_done(admin, r.json())
    assert job["state"] == "done", job
    assert (job["total"], job["completed"], job["failed"]) == (6, 6, 0)
    held = admin.get(f"/dicom-web/studies/{study}/instances").json()
    assert len(held) == 6


def test_c_store_from_tessera_to_orthanc(
    admin: httpx.Client, peer: str, orthanc: OrthancProcess
) -> None:
    study, files = study_files(4)
    body, ctype = multipart(files)
    assert admin.post("/dicom-web/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 200  # fmt: skip
    r = admin.post(f"/admin/dicom-nodes/{peer}/store",
                   json={"level": "STUDY", "keys": {"StudyInstanceUID": study}})  # fmt: skip
    assert r.status_code == 202, r.text
    job = job_done(admin, r.json())
    assert job["state"] == "done" and job["completed"] == 4, job
    assert orthanc_study_instances(orthanc, study) == 4
    assert any(j["id"] == job["id"] for j in admin.get("/admin/dimse-jobs").json()["jobs"])


def test_orthanc_moves_a_study_out_of_tessera(
    admin: httpx.Client, peer: str, orthanc: OrthancProcess
) -> None:
    """Orthanc asks Tessera (C-MOVE SCU, its /modalities/.../move) to send a study to
    Orthanc itself: Tessera associates with ORTHANC at its registered port."""
    study, files = study_files(3)
    body, ctype = multipart(files)
    assert admin.post("/dicom-web/studies", content=body,
                      headers={"Content-Type": ctype}).status_code == 200  # fmt: skip
    move = {"Level": "Study", "Resources": [{"StudyInstanceUID": study}], "TargetAet": "ORTHANC"}
    r = httpx.post(orthanc.url + "/modalities/tessera/move", timeout=60, json=move)
    assert r.status_code == 200, r.text
    assert orthanc_study_instances(orthanc, study) == 3


def test_an_unreachable_node_is_a_clear_502(
    admin: httpx.Client, nodes: Callable[..., dict[str, Any]]
) -> None:
    nodes("DOWN", port=1, operations=["echo"])
    r = admin.post("/admin/dicom-nodes/DOWN/echo")
    assert r.status_code == 502 and "DOWN" in r.json()["error"]


def test_a_store_job_survives_a_killed_gateway(
    archive: Cluster, admin: httpx.Client, peer: str, orthanc: OrthancProcess
) -> None:
    """The job's row outlives the gateway: a new one takes up the job the dead one left
    running (after dimse_job_stale, 3 s here) and carries on after the instances it
    counted."""
    count = 120
    study, files = study_files(count, size=512)
    for i in range(0, count, 20):
        body, ctype = multipart(files[i : i + 20])
        assert admin.post("/dicom-web/studies", content=body,
                          headers={"Content-Type": ctype}).status_code == 200  # fmt: skip
    r = admin.post(f"/admin/dicom-nodes/{peer}/store",
                   json={"level": "STUDY", "keys": {"StudyInstanceUID": study}})  # fmt: skip
    job = r.json()
    deadline = time.monotonic() + 60
    while admin.get(f"/admin/dimse-jobs/{job['id']}").json()["completed"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    archive.kill("dimse", signal.SIGKILL)
    left = admin.get(f"/admin/dimse-jobs/{job['id']}")
    assert left.status_code == 503  # the router says the gateway is away
    archive.start("dimse")
    archive.wait_ready("dimse")
    done = job_done(admin, job, timeout=120)
    assert done["state"] == "done" and done["completed"] == count, done
    assert orthanc_study_instances(orthanc, study) == count
