"""C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): to a registered move destination (DCMTK's
storescp, pynetdicom) and back on the same association (getscu, pynetdicom), with
sub-operation counts that add up (C.4.2.1.5), the stored Transfer Syntax kept when the
receiver takes it and decoded when it does not, and A801 for an unknown destination."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt

from tessera.local.processes import free_port
from tests.e2e.dimse.conftest import CALLING, CORPUS, dicom_port, send_files
from tests.support.cluster import Cluster
from tests.support.dcmtk import run, tool

STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
BRAINIX = "2.16.840.1.113669.632.20.1211.10000357775"


@pytest.fixture
def storescp(tmp_path: Path, nodes: Callable[..., dict[str, Any]]) -> Iterator[tuple[str, Path]]:
    """DCMTK's storescp as the registered move destination STORESCP (uncompressed only,
    its default)."""
    port = free_port()
    folder = tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen(
        [tool("storescp"), "-aet", "STORESCP", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    nodes("STORESCP", port=port, operations=["echo"])
    try:
        yield "STORESCP", folder
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def study_instances(admin: httpx.Client, study: str) -> list[dict]:
    r = admin.get(f"/dicom-web/studies/{study}/instances", params={"includefield": "00083002"})
    assert r.status_code == 200
    return r.json()


def test_movescu_moves_a_study_to_storescp(
    archive: Cluster, seeded: None, modality: str, storescp: tuple[str, Path],
    admin: httpx.Client,
) -> None:  # fmt: skip
    dest, folder = storescp
    out = run("movescu", "-v", "-S", "-aet", CALLING, "-aec", "TESSERA", "-aem", dest,
              "127.0.0.1", dicom_port(archive), "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={BRAINIX}").stdout  # fmt: skip
    expected = study_instances(admin, BRAINIX)
    received = list(folder.iterdir())
    assert len(received) == len(expected), out
    assert {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received} == {
        e["00080018"]["Value"][0] for e in expected
    }


def _move(archive: Cluster, destination: str, keys: dict[str, Any]) -> list[Dataset]:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    assoc = ae.associate("127.0.0.1", archive.settings.dimse_port, ae_title="TESSERA")
    assert assoc.is_established
    query = Dataset()
    for k, v in keys.items():
        setattr(query, k, v)
    try:
        return [status for status, _ in assoc.send_c_move(query, destination, STUDY_ROOT_MOVE)]
    finally:
        assoc.release()


def test_c_move_counts_add_up_and_compressed_instances_are_decoded_for_the_receiver(
    archive: Cluster, seeded: None, modality: str, storescp: tuple[str, Path],
    admin: httpx.Client,
) -> None:  # fmt: skip
    dest, folder = storescp
    statuses = _move(archive, dest, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": BRAINIX})
    total = len(study_instances(admin, BRAINIX))
    pending, final = statuses[:-1], statuses[-1]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == total
    assert final.NumberOfFailedSuboperations == 0 and final.NumberOfWarningSuboperations == 0
    for i, p in enumerate(pending, start=1):  # C.4.2.1.5: remaining + done = total
        assert p.Status == 0xFF00
        done = p.NumberOfCompletedSuboperations + p.NumberOfFailedSuboperations
        assert p.NumberOfRemainingSuboperations + done + p.NumberOfWarningSuboperations == total
        assert done == i

    # a JPEG Lossless instance: storescp takes only uncompressed ones, so it is decoded
    path = CORPUS / "Formats" / "JpegLossless.dcm"
    ct = pydicom.dcmread(path)
    assert send_files(archive, [path])[0] in (0x0000, 0x0111)
    statuses = _move(archive, dest, {"QueryRetrieveLevel": "IMAGE",
                                     "StudyInstanceUID": ct.StudyInstanceUID,
                                     "SeriesInstanceUID": ct.SeriesInstanceUID,
                                     "SOPInstanceUID": ct.SOPInstanceUID})  # fmt: skip
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == 1
    got = [pydicom.dcmread(p) for p in folder.iterdir()]
    moved = next(d for d in got if d.SOPInstanceUID == ct.SOPInstanceUID)
    assert not moved.file_meta.TransferSyntaxUID.is_compressed
    assert (moved.pixel_array == ct.pixel_array).all()


def test_an_unknown_move_destination_is_a801(
    archive: Cluster,
    seeded: None,
    modality: str,
) -> None:
    statuses = _move(archive, "NOWHERE", {"QueryRetrieveLevel": "STUDY",
                                          "StudyInstanceUID": BRAINIX})  # fmt: skip
    assert [s.Status for s in statuses] == [0xA801]


def test_a_move_without_the_unique_key_is_refused(
    archive: Cluster,
    seeded: None,
    modality: str,
    storescp: tuple[str, Path],
) -> None:
    dest, folder = storescp
    statuses = _move(archive, dest, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": BRAINIX})
    assert statuses[-1].Status == 0xA900
    assert not list(folder.iterdir())


def test_getscu_gets_a_series_on_the_same_association(
    archive: Cluster,
    seeded: None,
    modality: str,
    admin: httpx.Client,
    tmp_path: Path,
) -> None:
    series = admin.get(f"/dicom-web/studies/{BRAINIX}/series").json()[0]["0020000E"]["Value"][0]
    keys = [f"StudyInstanceUID={BRAINIX}", f"SeriesInstanceUID={series}"]
    out = run("getscu", "-v", "-S", "-aet", CALLING, "-aec", "TESSERA", "-od", tmp_path,
              "127.0.0.1", dicom_port(archive), "-k", "QueryRetrieveLevel=SERIES",
              "-k", keys[0], "-k", keys[1]).stdout  # fmt: skip
    expected = admin.get(f"/dicom-web/studies/{BRAINIX}/series/{series}/instances").json()
    assert len(list(tmp_path.iterdir())) == len(expected), out


def test_pynetdicom_c_get_keeps_the_stored_transfer_syntax(
    archive: Cluster,
    seeded: None,
    modality: str,
    admin: httpx.Client,
) -> None:
    received: list[Dataset] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title=CALLING)
    ae.add_requested_context(STUDY_ROOT_GET)
    roles = []
    for cx in StoragePresentationContexts[:120]:
        ae.add_requested_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1"])
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    assoc = ae.associate("127.0.0.1", archive.settings.dimse_port, ae_title="TESSERA",
                         ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = BRAINIX
    try:
        statuses = [s for s, _ in assoc.send_c_get(query, STUDY_ROOT_GET)]
    finally:
        assoc.release()
    expected = study_instances(admin, BRAINIX)
    assert statuses[-1].Status == 0x0000
    assert statuses[-1].NumberOfCompletedSuboperations == len(expected) == len(received)
    assert {d.file_meta.TransferSyntaxUID for d in received} == {"1.2.840.10008.1.2.1"}
