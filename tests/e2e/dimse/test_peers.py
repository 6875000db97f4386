"""DICOMweb peers (issue 13; README "Peers"), with real peers: Debian's Orthanc with its
DICOMweb plugin, and a second Tessera (the e2e cluster) as the archive mirrored.

* Tessera pulls a study from Orthanc and pushes one to it (jobs through the router's
  admin API, progress, verification by reading back);
* Orthanc, configured with Tessera as a DICOMweb server, pulls a study from Tessera
  (``/dicom-web/servers/tessera/retrieve``) with a read-only API key;
* a mirror of the second Tessera follows its change feed: stores, a delete, and the
  peer's router killed and restarted in the middle;
* a mirror of Orthanc (no change feed) polls its QIDO-RS by StudyDate;
* authentication to peers: HTTP Basic (Orthanc with its registered users), a bearer
  token (this Tessera as its own peer, an API key), and the refusals without them;
* a pull survives a SIGKILL of the gateway running it (taken up again, nothing lost);
* the CLI's pull, with its progress line.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from bench.orthanc import OrthancProcess, start_orthanc
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart, split_multipart
from tests.support.waiting import eventually

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
ORTHANC_USER = ("alice", "orthanc-password-of-the-test")


@pytest.fixture(scope="module")
def reader_token(admin: httpx.Client) -> str:
    r = admin.post("/admin/api-keys", json={"label": "orthanc peer", "permissions": ["read"]})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def orthanc(archive: Cluster, reader_token: str) -> Iterator[OrthancProcess]:
    tessera = f"http://127.0.0.1:{archive.settings.router_port}/dicom-web/"
    server = start_orthanc(
        tempfile.mkdtemp(prefix="tessera-orthanc-dicomweb-peer-"),
        overrides={
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER[0]: ORTHANC_USER[1]},
            "DicomWeb.Servers": {
                "tessera": {
                    "Url": tessera,
                    "HttpHeaders": {"Authorization": f"Bearer {reader_token}"},
                }
            },
        },
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def orthanc_peer(admin: httpx.Client, orthanc: OrthancProcess) -> Iterator[str]:
    username, password = ORTHANC_USER
    auth = {"type": "basic", "username": username, "password": password}
    r = admin.put("/admin/peers/orthanc", json={"url": orthanc.dicomweb_url, "auth": auth})
    assert r.status_code in (200, 201), r.text
    yield "orthanc"
    admin.delete("/admin/peers/orthanc")


def to_orthanc(orthanc: OrthancProcess, data: bytes) -> int:
    return httpx.post(orthanc.url + "/instances", content=data, auth=ORTHANC_USER).status_code


def study_files(count: int, patient: str) -> tuple[str, list[bytes]]:
    study, series = generate_uid(), generate_uid()
    return study, [
        make_instance(study, series, instance_number=i + 1, patient_id=patient, size=48)
        for i in range(count)
    ]


def wait_job(admin: httpx.Client, job: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = admin.get(f"/admin/peer-jobs/{job['id']}").json()
        if now["state"] in ("done", "failed", "cancelled"):
            return now
        time.sleep(0.3)
    raise AssertionError(f"job not done: {now}")


def sops(files: list[bytes]) -> dict[str, bytes]:
    return {pydicom.dcmread(io.BytesIO(f)).SOPInstanceUID: f for f in files}


def tessera_copy(admin: httpx.Client, study: str) -> dict[str, bytes]:
    """Each instance of ``study`` in the archive, as stored."""
    r = admin.get(f"/dicom-web/studies/{study}", headers={"Accept": AS_STORED})
    if r.status_code == 404:
        return {}
    assert r.status_code == 200, r.text
    return sops([p for _, p in split_multipart(r.content, r.headers["content-type"])])


def store_here(admin: httpx.Client, files: list[bytes]) -> None:
    body, ctype = multipart(files)
    r = admin.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


def test_a_peer_is_registered_checked_and_its_secrets_never_shown(
    admin, orthanc, orthanc_peer, archive: Cluster, admin_token: str
) -> None:
    assert admin.post(f"/admin/peers/{orthanc_peer}/check").json()["ok"] is True
    # without its credentials (or with wrong ones) the peer refuses: check says so
    wrong = {"url": orthanc.dicomweb_url, "auth": {"type": "basic", "username": "alice",
             "password": "wrong"}}  # fmt: skip
    assert admin.put("/admin/peers/no-pass", json=wrong).status_code == 201
    r = admin.post("/admin/peers/no-pass/check")
    assert r.status_code == 502 and r.json()["status"] == 401, r.text
    # a bearer token: this archive as its own peer, with an API key (access control on)
    me = f"http://127.0.0.1:{archive.settings.router_port}/dicom-web"
    for token, ok in ((admin_token, True), ("tsk_not_a_key", False)):
        body = {"url": me, "kind": "tessera", "auth": {"type": "bearer", "token": token}}
        assert admin.put("/admin/peers/myself", json=body).status_code in (200, 201)
        assert admin.post("/admin/peers/myself/check").json()["ok"] is ok
    assert admin.delete("/admin/peers/myself").status_code == 204
    assert admin.delete("/admin/peers/no-pass").status_code == 204
    r = admin.put("/admin/peers/secret", json={"url": "https://example.invalid/dicom-web",
                  "auth": {"type": "basic", "username": "u", "password": "p4ss"}})  # fmt: skip
    assert r.status_code == 201 and r.json()["auth"]["password"] == "***"
    listed = admin.get("/admin/peers").text
    assert "p4ss" not in listed and '"secret"' in listed
    # "***" sent back keeps the stored secret; a bad body is 400 with the reason
    r = admin.put("/admin/peers/secret", json={**r.json(), "description": "changed"})
    assert r.status_code == 200, r.text
    r = admin.put("/admin/peers/bad", json={"url": "ftp://x", "auth": {"type": "none"}})
    assert r.status_code == 400 and "url" in r.text
    assert admin.post("/admin/peers/secret/pull", json={}).status_code == 400
    assert admin.delete("/admin/peers/secret").status_code == 204


def test_pull_a_study_from_orthanc(admin, orthanc, orthanc_peer) -> None:
    study, files = study_files(5, "PEER-PULL")
    for data in files:
        assert to_orthanc(orthanc, data) == 200
    r = admin.post(f"/admin/peers/{orthanc_peer}/pull", json={"studies": [study]})
    assert r.status_code == 202, r.text
    job = wait_job(admin, r.json())
    assert job["state"] == "done", job
    assert job["progress"]["completed"] == 5 and job["progress"]["failed"] == 0
    here = tessera_copy(admin, study)
    assert set(here) == set(sops(files))
    for sop, data in sops(files).items():  # as stored there: the same data set
        assert (
            pydicom.dcmread(io.BytesIO(here[sop])).PixelData
            == pydicom.dcmread(io.BytesIO(data)).PixelData
        )
    # a second pull finds everything here already
    job = wait_job(
        admin, admin.post(f"/admin/peers/{orthanc_peer}/pull", json={"studies": [study]}).json()
    )
    assert (job["state"], job["progress"]["skipped"], job["progress"]["completed"]) == (
        "done",
        5,
        0,
    )


def test_push_a_study_to_orthanc(admin, orthanc, orthanc_peer) -> None:
    study, files = study_files(4, "PEER-PUSH")
    store_here(admin, files)
    r = admin.post(f"/admin/peers/{orthanc_peer}/push", json={"studies": [study]})
    job = wait_job(admin, r.json())
    assert job["state"] == "done", job
    assert job["progress"]["completed"] == 4
    found = httpx.post(orthanc.url + "/tools/find", auth=ORTHANC_USER, json={"Level": "Instance",
                       "Query": {"StudyInstanceUID": study}}).json()  # fmt: skip
    assert len(found) == 4


def test_orthanc_pulls_a_study_from_tessera(admin, orthanc) -> None:
    study, files = study_files(3, "PEER-ORTHANC")
    store_here(admin, files)
    r = httpx.post(
        orthanc.url + "/dicom-web/servers/tessera/retrieve",
        auth=ORTHANC_USER,
        json={"Resources": [{"Study": study}], "Synchronous": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    found = httpx.post(orthanc.url + "/tools/find", auth=ORTHANC_USER, json={"Level": "Instance",
                       "Query": {"StudyInstanceUID": study}}).json()  # fmt: skip
    assert len(found) == 3
    # the same bytes as Tessera holds
    for orthanc_id in found:
        data = httpx.get(f"{orthanc.url}/instances/{orthanc_id}/file", auth=ORTHANC_USER).content
        sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(sops(files)[sop]).hexdigest()


def test_a_mirror_follows_a_tessera_peer_through_its_change_feed(admin, cluster: Cluster) -> None:
    r = admin.put("/admin/peers/other-tessera", json={"url": cluster.base_url, "kind": "tessera"})
    assert r.status_code in (200, 201), r.text
    job = admin.post("/admin/peers/other-tessera/mirror", json={"from": "now"}).json()
    source = httpx.Client(base_url=cluster.base_url, timeout=60)
    try:
        study, files = study_files(3, "MIRROR-1")
        body, ctype = multipart(files)
        assert (
            source.post("/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        eventually(lambda: set(tessera_copy(admin, study)) == set(sops(files)))
        # a delete there is a delete here
        gone = pydicom.dcmread(io.BytesIO(files[0]))
        url = f"/studies/{study}/series/{gone.SeriesInstanceUID}/instances/{gone.SOPInstanceUID}"
        assert source.delete(url).status_code == 204
        eventually(lambda: gone.SOPInstanceUID not in tessera_copy(admin, study))
        # the peer's router dies and comes back in the middle of the job
        cluster.kill("router", signal.SIGKILL)
        time.sleep(1.0)
        cluster.start("router")
        cluster.wait_ready("router")
        later, more = study_files(2, "MIRROR-2")
        body, ctype = multipart(more)
        assert (
            source.post("/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        eventually(lambda: set(tessera_copy(admin, later)) == set(sops(more)))
        state = admin.get(f"/admin/peer-jobs/{job['id']}").json()
        assert state["state"] == "running" and state["progress"]["deleted"] == 1
        assert state["progress"]["failed"] == 0, state
    finally:
        source.close()
        cancelled = admin.delete(f"/admin/peer-jobs/{job['id']}").json()
        assert cancelled["state"] == "cancelled", (cancelled["detail"], cancelled["progress"])
        admin.delete("/admin/peers/other-tessera")


def test_a_mirror_of_a_plain_dicomweb_peer_polls_its_qido_by_date(
    admin, orthanc, orthanc_peer
) -> None:
    r = admin.post(f"/admin/peers/{orthanc_peer}/mirror", json={"since": "20240101", "interval": 1})
    assert r.status_code == 202, r.text
    job = r.json()
    try:
        study, files = study_files(3, "PEER-MIRROR")  # StudyDate 20240102
        for data in files:
            assert to_orthanc(orthanc, data) == 200
        eventually(lambda: set(tessera_copy(admin, study)) == set(sops(files)))
        state = admin.get(f"/admin/peer-jobs/{job['id']}").json()
        assert state["state"] == "running" and state["progress"]["polled"], state
    finally:
        assert admin.delete(f"/admin/peer-jobs/{job['id']}").json()["state"] == "cancelled"


def test_a_pull_survives_the_gateway_killed_mid_job(
    admin, archive: Cluster, orthanc, orthanc_peer
) -> None:
    study, files = study_files(16, "PEER-KILL")
    for data in files:
        assert to_orthanc(orthanc, data) == 200
    job = admin.post(f"/admin/peers/{orthanc_peer}/pull", json={"studies": [study]}).json()
    eventually(
        lambda: (
            admin.get(f"/admin/peer-jobs/{job['id']}").json()["progress"].get("completed", 0) >= 3
        )
    )
    archive.kill("dimse", signal.SIGKILL)
    archive.start("dimse")
    archive.wait_ready("dimse")
    done = wait_job(admin, job, timeout=180)  # taken up again after dimse_job_stale
    assert done["state"] == "done", done
    assert set(tessera_copy(admin, study)) == set(sops(files))


def test_the_cli_pulls_with_a_progress_line(
    admin, admin_token, archive, orthanc, orthanc_peer
) -> None:
    study, files = study_files(3, "PEER-CLI")
    for data in files:
        assert to_orthanc(orthanc, data) == 200
    env = {**os.environ, "TESSERA_TOKEN": admin_token}
    url = f"http://127.0.0.1:{archive.settings.router_port}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.local",
            "peers",
            "--url",
            url,
            "pull",
            orthanc_peer,
            "--study",
            study,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "3/3 instances" in out.stdout and "(done)" in out.stdout
    assert set(tessera_copy(admin, study)) == set(sops(files))
