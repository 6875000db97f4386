"""The same :class:`~bench.scale_data.ScaleSet` for Orthanc: real DICOM files through its REST API.

Orthanc has no bulk load, so each instance is written as a small PS3.10 file (the same
DICOM JSON as the Tessera rows, read back with ``Dataset.from_json``; no Pixel Data, so
files stay around 2 KB and QIDO is what gets measured) and POSTed to ``/instances``,
a few requests at a time. Its DICOMweb plugin then answers the same QIDO-RS queries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from bench.scale_data import ScaleSet, instance_metadata, series_base


def datasets(data: ScaleSet) -> Iterator[Dataset]:
    for st in data.all_studies():
        for k, (_, _, count) in enumerate(st.series):
            base = series_base(st, k)
            for n in range(1, count + 1):
                md = instance_metadata(st, k, n, base)
                del md["7FE00010"]
                ds = Dataset.from_json(md)
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = ds.SOPClassUID
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta = meta
                yield ds


def write_files(data: ScaleSet, folder: Path) -> list[Path]:
    """Every instance of ``data`` as a PS3.10 file under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ds in enumerate(datasets(data)):
        path = folder / f"{i:08d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


async def upload(orthanc_url: str, paths: list[Path], concurrency: int = 4) -> dict[str, float]:
    """POST every file to Orthanc's ``/instances``; instances per second and failures."""
    todo = iter(paths)
    failures = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=orthanc_url, trust_env=False, timeout=120) as http:

        async def worker() -> None:
            nonlocal failures
            for path in todo:
                answer = await http.post(
                    "/instances",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                )
                failures += answer.status_code != 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    return {
        "instances": len(paths),
        "seconds": round(seconds, 1),
        "instances_per_s": round(len(paths) / seconds, 1),
        "failures": failures,
    }
