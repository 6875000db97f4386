"""``tessera store`` (issue 12's bulk import) against a running archive: folders, a zip
file and a DICOMDIR walked; other files skipped; what the archive refuses reported with
its reason (also in the JSON report); a second run sends nothing again; an interrupted
run (SIGINT) goes on where it stopped."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
FOLDER_FILES = ["Series/Lena-1.dcm", "Series/Lena-2.dcm", "Formats/Rle.dcm", "Formats/Jpeg.dcm"]
ZIPPED = ["Series/Lena-3.dcm", "Series/Lena-4.dcm", "MultiframeWindowing.dcm"]


def sop_of(data: bytes) -> str:
    import io

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def store(url: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tessera.importer", *args, "--url", url],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def found(client: httpx.Client, sop: str) -> int:
    r = client.get("/instances", params={"SOPInstanceUID": sop})
    assert r.status_code == 200, r.text
    return len(r.json()) if r.content else 0


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A folder (nested files, a zip, a text file, a file the archive refuses) and a
    DICOMDIR elsewhere; the SOP Instance UIDs that should be stored."""
    folder = tmp_path / "disk"
    (folder / "a" / "b").mkdir(parents=True)
    sops = []
    for n, name in enumerate(FOLDER_FILES):
        data = (CORPUS / name).read_bytes()
        (folder / ("a/b" if n % 2 else "a") / f"IM{n}").write_bytes(data)
        sops.append(sop_of(data))
    with zipfile.ZipFile(folder / "more.zip", "w") as z:
        for name in ZIPPED:
            data = (CORPUS / name).read_bytes()
            z.writestr(f"zipped/{Path(name).name}", data)
            sops.append(sop_of(data))
        z.writestr("zipped/notes.txt", "not DICOM")
    (folder / "README.txt").write_text("not DICOM either")
    # DICM, then no data set the archive can read: refused, with a reason
    (folder / "a" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00")
    # a DICOMDIR (PS3.10 File-set) of two instances, in a folder of its own
    fs = FileSet()
    media = tmp_path / "media"
    for _ in range(2):
        data = make_instance(study=generate_uid())
        import io

        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyTime, ds.StudyID, ds.SeriesNumber = "120000", "1", 1  # F.5: the records'
        ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
        fs.add(ds)
        sops.append(sop_of(data))
    fs.write(media)
    fs._stage["t"].cleanup()  # pydicom's staging folder, else left to the collector
    return folder, media / "DICOMDIR", sops


def test_a_folder_a_zip_and_a_dicomdir_are_stored_and_a_second_run_sends_nothing(
    cluster: Cluster, disk: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    folder, dicomdir, sops = disk
    report = tmp_path / "report.json"
    args = [str(folder), str(dicomdir), "--batch", "3", "--parallel", "2", "--report", str(report)]
    run = store(cluster.base_url, *args, cwd=tmp_path)
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 1, out  # the broken file failed
    doc = json.loads(report.read_text())
    assert doc["stored"] == len(sops), out
    (failure,) = doc["failed"]
    assert failure["file"].endswith("broken.dcm")
    assert failure["reason"] in (0xC000, 0xA900, 0x0110), failure
    assert failure["message"]
    skipped = {s["file"]: s["why"] for s in doc["skipped"]}
    assert skipped == {
        str(folder / "README.txt"): "not a DICOM file",
        f"{folder / 'more.zip'}!zipped/notes.txt": "not a DICOM file",
    }
    assert f"stored {len(sops)} instances" in out and "1 failed" in out
    with httpx.Client(base_url=cluster.base_url, timeout=60) as client:
        assert all(found(client, sop) == 1 for sop in sops)

    again = store(cluster.base_url, *args, cwd=tmp_path)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 1, out
    doc = json.loads(report.read_text())
    assert doc["stored"] == 0 and doc["already_stored"] == len(sops), out
    assert len(doc["failed"]) == 1


def test_files_sharing_a_sop_instance_uid_are_each_reported_with_their_own_outcome(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A STOW-RS answer names instances by SOPInstanceUID only (PS3.18 10.5.3): three
    files with the same one, in a batch of three, each get their own outcome (they went
    in one request and were all reported stored before)."""
    folder = tmp_path / "same-uid"
    folder.mkdir()
    sop, study = generate_uid(), generate_uid()
    (folder / "a.dcm").write_bytes(make_instance(study=study, sop=sop))
    # other bytes under the stored SOPInstanceUID: Duplicate SOP Instance (0x0111)
    (folder / "b.dcm").write_bytes(make_instance(study=study, sop=sop, patient_name="Other"))
    no_study = pydicom.dcmread(io.BytesIO(make_instance(study=study, sop=sop, size=16)))
    del no_study.StudyInstanceUID
    buffer = io.BytesIO()
    no_study.save_as(buffer, enforce_file_format=True)
    (folder / "c.dcm").write_bytes(buffer.getvalue())  # no StudyInstanceUID: 0xA900
    report = tmp_path / "same.json"
    run = store(cluster.base_url, str(folder), "--batch", "3", "--parallel", "1",
                "--report", str(report), cwd=tmp_path)  # fmt: skip
    out, _ = run.communicate(timeout=300)
    assert run.returncode == 1, out
    doc = json.loads(report.read_text())
    assert doc["stored"] == 1, out
    reasons = {Path(f["file"]).name: f["reason"] for f in doc["failed"]}
    assert reasons == {"b.dcm": 0x0111, "c.dcm": 0xA900}, doc["failed"]


def test_an_interrupted_run_goes_on_where_it_stopped(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    sops = []
    study = generate_uid()
    for n in range(120):
        sop = generate_uid()
        (folder / f"{n:04}.dcm").write_bytes(make_instance(study=study, sop=sop, size=128))
        sops.append(sop)
    journal = tmp_path / ".tessera-store.jsonl"
    args = [str(folder), "--batch", "2", "--parallel", "1"]
    first = store(cluster.base_url, *args, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not journal.exists() or len(journal.read_text().splitlines()) < 10:
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    assert "interrupted" in out
    done_before = len(journal.read_text().splitlines())
    assert 10 <= done_before < len(sops), out

    second = store(cluster.base_url, *args, cwd=tmp_path)
    out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, out
    assert f"{done_before} already stored by an earlier run" in out
    with httpx.Client(base_url=cluster.base_url, timeout=60) as client:
        r = client.get(f"/studies/{study}/instances", params={"limit": "1000"})
        assert sorted(i["00080018"]["Value"][0] for i in r.json()) == sorted(sops)
