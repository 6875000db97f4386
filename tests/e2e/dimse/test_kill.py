"""SIGKILL of the gateway while storescu sends 200 instances: every instance that got a
success status is in the archive, once; the gateway started again takes the whole
batch resent, and storescu completes (issue 11: nothing acknowledged is lost)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

from tests.e2e.dimse.conftest import CALLING, dicom_port
from tests.support.cluster import Cluster
from tests.support.dcmtk import run, tool
from tests.support.dicomgen import make_instance

COUNT = 200


def test_sigkill_during_storescu_loses_no_acknowledged_instance(
    archive: Cluster, modality: str, admin: httpx.Client, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    for i in range(COUNT):
        data = make_instance(study, series, instance_number=i + 1, size=128)
        (tmp_path / f"{i:04}.dcm").write_bytes(data)
    proc = subprocess.Popen(
        [
            tool("storescu"),
            "-v",
            "-aet",
            CALLING,
            "-aec",
            "TESSERA",
            "127.0.0.1",
            dicom_port(archive),
            *sorted(tmp_path.iterdir()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    current = None
    killed = False
    for line in proc.stdout:
        if "Sending Store Request" in line:
            current = line
        if "Received Store Response (Success)" in line and current:
            acknowledged.append(current)
            if len(acknowledged) == 40 and not killed:
                archive.kill("dimse", signal.SIGKILL)
                killed = True
    proc.wait(60)
    proc.stdout.close()
    assert killed and 40 <= len(acknowledged) < COUNT

    archive.start("dimse")
    archive.wait_ready("dimse")
    r = admin.get(f"/dicom-web/studies/{study}/instances", params={"limit": "1000"})
    held = [i["00080018"]["Value"][0] for i in r.json()]
    assert len(held) == len(set(held))  # once each
    assert len(held) >= len(acknowledged)  # (one more may have been stored unanswered)

    # the whole batch again: those held are stored unchanged, the others now
    for _ in range(20):  # the gateway's DICOM port opens with its app
        if run("echoscu", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
               dicom_port(archive)).returncode == 0:  # fmt: skip
            break
        time.sleep(0.5)
    again = run("storescu", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1", dicom_port(archive),
                *sorted(tmp_path.iterdir()), timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stdout[-2000:]
    r = admin.get(f"/dicom-web/studies/{study}/instances", params={"limit": "1000"})
    assert len({i["00080018"]["Value"][0] for i in r.json()}) == COUNT


def test_with_the_router_down_c_store_and_c_find_answer_out_of_resources(
    archive: Cluster, modality: str, tmp_path: Path
) -> None:
    """The archive unreachable is A700 (PS3.4 B.2.3, C.4.1.1.4: refused, out of
    resources) with an Error Comment, not a dropped association; and it passes."""
    path = tmp_path / "one.dcm"
    path.write_bytes(make_instance())
    archive.kill("router", signal.SIGKILL)
    try:
        stored = run("storescu", "-v", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
                     dicom_port(archive), path)  # fmt: skip
        assert "Out of Resources" in stored.stdout or "OutOfResources" in stored.stdout, (
            stored.stdout
        )
        found = run("findscu", "-v", "-S", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
                    dicom_port(archive), "-k", "QueryRetrieveLevel=STUDY",
                    "-k", "StudyInstanceUID").stdout  # fmt: skip
        assert "Refused: OutOfResources" in found, found
        assert archive.alive("dimse")
    finally:
        archive.start("router")
        archive.wait_ready("router")
    again = run("storescu", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1", dicom_port(archive),
                path)  # fmt: skip
    assert again.returncode == 0, again.stdout
