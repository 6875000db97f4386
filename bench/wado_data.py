"""The WADO benchmark's dataset: one CT study with a 500-instance series, cached on disk.

Issue 4 asks for series ``/metadata`` of a 500-instance series, frames of CT-sized images
(512×512, 16-bit) on distinct instances, renderings of a 512×512 CT and a whole-study
retrieval. One study serves all of them:

- series 1: ``--instances`` (500) slices of 512×512 16-bit CT in Explicit VR Little
  Endian (native frames, ≈ 0.53 MB each), consecutive 1.25 mm slices of one phantom;
- series 2: ``--encapsulated`` (200) slices of the same kind stored as JPEG 2000 Image
  Compression (Lossless Only), 1.2.840.10008.1.2.4.90 (encapsulated frames, ≈ 0.2 MB).

The headers are those of :mod:`bench.dataset` (patient, study, series, CT image, geometry,
window and rescale attributes), the study forced to a CT protocol. UIDs and pixels are
seeded the same way, so a given spec always gives byte-identical files, written once under
``bench/.data/<key>/`` with the ``manifest.json`` :func:`bench.dataset.load` reads.

    .venv/bin/python bench/wado_data.py               # generate (or find) the set
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import pydicom
from pydicom.uid import JPEG2000Lossless

from bench import dataset
from bench.dataset import DATA_ROOT, GeneratedSet, Spec

FORMAT_VERSION = 1
CT_PROTOCOL = dataset.PROTOCOLS["CT"][0]  # CT CHEST W/O CONTRAST
SLICE_MM = 1.25


@dataclass(frozen=True)
class WadoSpec:
    """What to generate; every field is part of the cache key."""

    instances: int = 500  # native series
    encapsulated: int = 200  # JPEG 2000 lossless series
    size: int = 512
    seed: int = 7

    @property
    def key(self) -> str:
        return (
            f"wado-v{FORMAT_VERSION}-n{self.instances}-j2k{self.encapsulated}"
            f"-{self.size}x{self.size}-seed{self.seed}"
        )


def _series_spec(spec: WadoSpec, instances: int) -> Spec:
    """The :class:`bench.dataset.Spec` the shared header helpers read (rows, seed)."""
    return Spec(1, 2, instances, spec.size, spec.size, spec.seed)


def generate(spec: WadoSpec, folder: Path) -> None:
    """Write both series and ``manifest.json`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _series_spec(spec, spec.instances)
    patient = dataset._patients(base)[0]
    study = dataset._study(base, 0, patient)
    study.Modality, study.StudyDescription, study.BodyPartExamined = "CT", *CT_PROTOCOL[:2]
    study.ManufacturerModelName = "BENCH-CT"
    files: list[dict[str, Any]] = []
    series_uids = []
    for se, (count, compressed) in enumerate([(spec.instances, False), (spec.encapsulated, True)]):
        if count == 0:
            continue
        series = dataset._series(base, 0, se, study)
        series_uids.append(series.SeriesInstanceUID)
        rel_dir = Path(f"series{se:02d}")
        (folder / rel_dir).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            ds = dataset._instance(_series_spec(spec, count), 0, se, i, study, series)
            z = -300.0 + i * SLICE_MM
            ds.SliceThickness, ds.SliceLocation = SLICE_MM, z
            ds.ImagePositionPatient = [-175.0, -175.0, z]
            if compressed:
                ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
            rel = rel_dir / f"{i:05d}.dcm"
            ds.save_as(folder / rel, enforce_file_format=True)
            files.append(
                {
                    "path": str(rel),
                    "study": study.StudyInstanceUID,
                    "series": series.SeriesInstanceUID,
                    "sop": ds.SOPInstanceUID,
                    "size": (folder / rel).stat().st_size,
                }
            )
    uids = [f["sop"] for f in files]
    if len(set(uids)) != len(uids):
        raise RuntimeError("generated UIDs are not unique")
    studies = [
        {
            "uid": study.StudyInstanceUID,
            "patient_name": str(study.PatientName),
            "patient_id": study.PatientID,
            "study_date": study.StudyDate,
            "modality": "CT",
            "series": series_uids,
        }
    ]
    manifest = {
        "spec": asdict(base),
        "wado_spec": asdict(spec),
        "pydicom": pydicom.__version__,
        "files": files,
        "studies": studies,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def ensure(spec: WadoSpec, root: Path = DATA_ROOT) -> GeneratedSet:
    """The set for ``spec``, generated into ``root/<spec.key>`` unless already there."""
    folder = root / spec.key
    if not (folder / "manifest.json").is_file():
        scratch = root / f".{spec.key}.tmp-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            generate(spec, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        shutil.rmtree(folder, ignore_errors=True)
        scratch.rename(folder)
    return dataset.load(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=WadoSpec.instances)
    parser.add_argument("--encapsulated", type=int, default=WadoSpec.encapsulated)
    parser.add_argument("--size", type=int, default=WadoSpec.size, help="rows = columns")
    parser.add_argument("--seed", type=int, default=WadoSpec.seed)
    parser.add_argument("--root", type=Path, default=DATA_ROOT, help="cache folder")
    args = parser.parse_args(argv)
    spec = WadoSpec(args.instances, args.encapsulated, args.size, args.seed)
    data = ensure(spec, args.root)
    print(
        f"{data.folder}: {len(data.instances)} instances, {data.total_bytes / 1e6:.1f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
