"""Small, valid PS3.10 files made on the fly, and multipart/related bodies to send them."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_instance(
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    patient_name: str = "Test^Patient",
    patient_id: str = "TST-1",
    instance_number: int = 1,
    size: int = 32,
) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.StudyDate = "20240102"
    ds.Modality = "MR"
    ds.InstanceNumber = instance_number
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(size * size, dtype=np.uint16).tobytes()
    return part10(ds)


def part10(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file in Explicit VR Little Endian (its File Meta made here)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def multipart(parts: Iterable[bytes], part_type: str = "application/dicom") -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/related request (PS3.18 8.6.1.2)."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        body += p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f'multipart/related; type="{part_type}"; boundary={boundary}'


def split_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Parts of a multipart response, read strictly (CRLF, RFC 2046 5.1.1)."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params["boundary"].strip('"').encode()
    chunks = body.split(b"--" + boundary)
    assert chunks[-1].startswith(b"--"), "no close delimiter"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n") and chunk.endswith(b"\r\n"), "parts need CRLF"
        head, _, payload = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts
