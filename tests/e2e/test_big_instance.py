"""A big instance through ``tessera run`` (what ``make run`` starts) in bounded memory
(issue 12): STOW-RS through the router to ingest, then WADO-RS back through the router
from retrieve, streamed both ways, while the peak resident memory (VmHWM) of the router,
ingest and retrieve stays far below the instance's size.

``make test`` sends 256 MiB; ``make big`` (TESSERA_BIG=1) sends 1 GiB.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support.make_run import pid_of, tessera_run

MIB = 1024 * 1024
SIZE = (1024 if os.environ.get("TESSERA_BIG") == "1" else 256) * MIB
FRAME = 1024 * 1024 * 2  # 1024 x 1024, 16 bits
# what a service may grow by while the instance passes: its buffers (the router's 1 MiB
# read buffer, ingest's in-memory spool up to 4 MiB...), never the instance
GROWTH_BOUND = 96 * MIB
CHUNK = 4 * MIB
BOUNDARY = "tessera-big-instance"


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def header(frames: int) -> tuple[bytes, str, str, str]:
    """A PS3.10 file's bytes up to the Pixel Data value: a 16-bit MONOCHROME2 multi-frame
    CT whose Pixel Data (OW) holds ``frames`` frames of 1024 x 1024."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName, ds.Modality = "BIG-1", "Big^Instance", "CT"
    ds.Rows = ds.Columns = 1024
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    fp = DicomBytesIO()
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    pixel_header = b"\xe0\x7f\x10\x00OW\0\0" + (frames * FRAME).to_bytes(4, "little")
    return fp.getvalue() + body.getvalue() + pixel_header, study, series, sop


def pixels(frames: int) -> Iterator[bytes]:
    """The frames' bytes, made as they are sent (frame n is filled with n's low byte)."""
    for n in range(frames):
        block = bytes([n % 251]) * CHUNK
        for _ in range(FRAME // CHUNK or 1):
            yield block[: min(CHUNK, FRAME)]


@pytest.fixture(scope="module")
def run():
    with tessera_run() as cluster:
        yield cluster


def test_a_big_instance_goes_through_the_router_both_ways_in_bounded_memory(run):
    frames = SIZE // FRAME
    head, study, series, sop = header(frames)
    digest = hashlib.sha256(head)
    for block in pixels(frames):
        digest.update(block)
    services = {name: pid_of(run, name) for name in ("router", "ingest", "retrieve")}
    before = {name: peak_rss(pid) for name, pid in services.items()}

    def body() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + head
        yield from pixels(frames)
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    with httpx.Client(base_url=run.dicomweb_url, timeout=600) as client:
        r = client.post("/studies", content=body(), headers={"Content-Type": content_type})
        assert r.status_code == 200, r.text
        assert r.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sop]
        url = f"/studies/{study}/series/{series}/instances/{sop}"
        size = 0
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        with client.stream("GET", url, headers={"Accept": accept}) as answer:
            assert answer.status_code == 200
            for chunk in answer.iter_bytes():
                size += len(chunk)
        assert size > SIZE  # the whole object, in its multipart envelope
        octets = 'multipart/related; type="application/octet-stream"'
        frame = client.get(url + "/frames/2", headers={"Accept": octets})
        assert frame.status_code == 200 and bytes([1]) * 1024 in frame.content
    grown = {name: peak_rss(pid) - before[name] for name, pid in services.items()}
    print(
        f"{SIZE // MIB} MiB instance: peak memory grew by",
        {k: f"{v // MIB} MiB" for k, v in grown.items()},
    )
    assert all(g < GROWTH_BOUND for g in grown.values()), (
        f"peak memory grew by {grown} for a {SIZE // MIB} MiB instance"
    )
    # the stored object is the file sent, byte for byte
    objects = run.data_dir / "state" / "objects" / "instances"
    stored = [p for p in objects.rglob("*.dcm") if p.stat().st_size > SIZE]
    assert len(stored) == 1
    assert stored[0].name.startswith(digest.hexdigest())
