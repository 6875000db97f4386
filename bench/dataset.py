"""A seeded, realistic synthetic DICOM dataset for the benchmark, cached on disk.

Every instance is a single-frame 16-bit CT or MR image (512×512 by default, about
0.5 MB) in Explicit VR Little Endian with a PS3.10 preamble and file meta. Patients,
studies and series carry the attributes a study list shows (names, IDs, birth dates,
study dates spread over 2015-2024, accession numbers, descriptions, modality, body part).

The same parameters always give byte-identical files: UIDs come from
``pydicom.uid.generate_uid`` with a fixed prefix and entropy derived from the seed and
the position of the object, and pixels from a numpy generator seeded the same way. A set
is written once under ``bench/.data/<key>/`` (``key`` names every parameter) together
with ``manifest.json``; later runs reuse it. One patient in five has a family name
containing "SMI" so that a ``PatientName=*smi*`` search has something to find.

Command line (from the repository root)::

    .venv/bin/python bench/dataset.py --studies 8          # 8 × 2 × 25 ≈ 210 MB
    .venv/bin/python bench/dataset.py --studies 20 --seed 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

FORMAT_VERSION = 2  # bump when the generated content changes, so old caches are not reused
UID_PREFIX = "1.2.826.0.1.3680043.8.498.77."  # pydicom's root + a branch for this benchmark
DATA_ROOT = Path(__file__).resolve().parent / ".data"

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

FAMILY_NAMES = [
    "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ",
    "MARTINEZ", "HERNANDEZ", "LOPEZ", "WILSON", "ANDERSON", "THOMAS", "TAYLOR", "MOORE",
    "JACKSON", "MARTIN", "LEE", "PEREZ", "THOMPSON", "WHITE", "HARRIS", "CLARK", "LEWIS",
    "MUELLER", "SCHMIDT", "DUBOIS", "ROSSI", "NOWAK", "JANSSEN", "PETERS", "OKAFOR", "TANAKA",
]  # fmt: skip
SMI_FAMILY_NAMES = ["SMITH", "GOLDSMITH", "SMIRNOVA", "SMITS", "ARROWSMITH"]
GIVEN_NAMES = {
    "F": ["MARY", "ANNA", "OLGA", "SOPHIE", "EMMA", "LINDA", "MARIA", "YUKI", "CHIDINMA"],
    "M": ["JOHN", "PETER", "LUCAS", "DAVID", "JAMES", "HANS", "MARCO", "KENJI", "EMEKA"],
}

# modality -> (study descriptions, body part, series descriptions)
PROTOCOLS: dict[str, list[tuple[str, str, list[str]]]] = {
    "CT": [
        ("CT CHEST W/O CONTRAST", "CHEST", ["AX 5.0 SOFT TISSUE", "AX 1.25 LUNG", "COR MPR 3.0"]),
        ("CT ABDOMEN PELVIS W CONTRAST", "ABDOMEN", ["AX 5.0 PORTAL VENOUS", "COR MPR 3.0"]),
        ("CT HEAD W/O CONTRAST", "HEAD", ["AX 5.0 BRAIN", "AX 2.5 BONE"]),
    ],
    "MR": [
        ("MRI BRAIN W/WO CONTRAST", "BRAIN", ["AX T1", "AX T2 FLAIR", "AX DWI", "SAG T1 POST"]),
        ("MR LUMBAR SPINE W/O CONTRAST", "LSPINE", ["SAG T2", "SAG T1", "AX T2"]),
        ("MR KNEE LEFT W/O CONTRAST", "KNEE", ["COR PD FS", "SAG PD FS", "AX T2 FS"]),
    ],
}
INSTITUTIONS = ["TESSERA GENERAL HOSPITAL", "NORTHSIDE IMAGING CENTER", "ST. LUKE CLINIC"]
PHYSICIANS = ["HOUSE^GREGORY", "GREY^MEREDITH", "SHEPHERD^DEREK", "YANG^CRISTINA"]


@dataclass(frozen=True)
class Spec:
    """What to generate; every field is part of the cache key."""

    studies: int = 8
    series_per_study: int = 2
    instances_per_series: int = 25
    rows: int = 512
    columns: int = 512
    seed: int = 1

    @property
    def key(self) -> str:
        return (
            f"v{FORMAT_VERSION}-st{self.studies}-se{self.series_per_study}"
            f"-in{self.instances_per_series}-{self.rows}x{self.columns}-seed{self.seed}"
        )

    @property
    def instance_count(self) -> int:
        return self.studies * self.series_per_study * self.instances_per_series


@dataclass(frozen=True)
class Instance:
    """One file of the set, as listed in the manifest."""

    path: Path
    study: str
    series: str
    sop: str
    size: int


@dataclass(frozen=True)
class StudyInfo:
    """Study-level facts the QIDO workload picks its queries from."""

    uid: str
    patient_name: str
    patient_id: str
    study_date: str
    modality: str
    series: tuple[str, ...]


@dataclass(frozen=True)
class GeneratedSet:
    """A generated set on disk: its folder, its files and its studies."""

    spec: Spec
    folder: Path
    instances: tuple[Instance, ...]
    studies: tuple[StudyInfo, ...]

    @property
    def total_bytes(self) -> int:
        return sum(i.size for i in self.instances)

    def study_bytes(self, study_uid: str) -> int:
        return sum(i.size for i in self.instances if i.study == study_uid)

    def study_instances(self, study_uid: str) -> int:
        return sum(1 for i in self.instances if i.study == study_uid)


def _uid(seed: int, *path: object) -> UID:
    """A deterministic UID for the object at ``path`` (e.g. ``("series", 3, 1)``). The
    parts are joined with "/" into one entropy source: pydicom concatenates several
    sources as they are, so ``(1, 10)`` and ``(11, 0)`` would collide."""
    entropy = "/".join(["tessera-bench", str(seed), *map(str, path)])
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=[entropy])


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def _date(rng: np.random.Generator, first: dt.date, last: dt.date) -> dt.date:
    return first + dt.timedelta(days=int(rng.integers(0, (last - first).days + 1)))


@dataclass(frozen=True)
class _Patient:
    name: str
    patient_id: str
    birth_date: dt.date
    sex: str


def _patients(spec: Spec) -> list[_Patient]:
    count = max(1, round(spec.studies * 0.75))  # about one patient in three has two studies
    out = []
    for p in range(count):
        rng = _rng(spec.seed, 1, p)
        sex = "F" if rng.random() < 0.5 else "M"
        family = (
            SMI_FAMILY_NAMES[(p // 5) % len(SMI_FAMILY_NAMES)]
            if p % 5 == 0
            else str(rng.choice(FAMILY_NAMES))
        )
        given = str(rng.choice(GIVEN_NAMES[sex]))
        birth = _date(rng, dt.date(1935, 1, 1), dt.date(2005, 12, 31))
        out.append(
            _Patient(f"{family}^{given}", f"TSR{100000 + p * 7919 % 900000:06d}", birth, sex)
        )
    return out


def _phantom(rng: np.random.Generator, modality: str, rows: int, cols: int, z: float) -> np.ndarray:
    """A body-like ellipse with an inner structure and noise, as stored values (uint16)."""
    y, x = np.ogrid[-1.0 : 1.0 : rows * 1j, -1.0 : 1.0 : cols * 1j]
    scale = 0.75 + 0.15 * np.cos(z)
    body = (x / (0.85 * scale)) ** 2 + (y / (0.65 * scale)) ** 2 <= 1.0
    organ = ((x - 0.25 * np.sin(z)) / 0.25) ** 2 + ((y + 0.1) / 0.3) ** 2 <= 1.0
    if modality == "CT":  # stored = HU + 1024 (RescaleIntercept -1024)
        base = np.where(body, 1024 + 40, 24).astype(np.float32)
        base[organ & body] = 1024 + 700
        noise = rng.normal(0.0, 12.0, (rows, cols))
    else:
        base = np.where(body, 600, 5).astype(np.float32)
        base[organ & body] = 1400
        noise = rng.normal(0.0, 25.0, (rows, cols))
    return np.clip(base + noise, 0, 4095).astype(np.uint16)


def _instance(
    spec: Spec,
    st: int,
    se: int,
    i: int,
    study: Dataset,
    series: Dataset,
) -> Dataset:
    ds = Dataset()
    ds.update(study)
    ds.update(series)
    modality = ds.Modality
    sop = _uid(spec.seed, "instance", st, se, i)
    ds.SOPClassUID = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    ds.SOPInstanceUID = sop
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = i + 1
    ds.AcquisitionNumber = 1
    thickness = 5.0 if modality == "CT" else 4.0
    z = -100.0 + i * thickness
    ds.ImagePositionPatient = [-175.0, -175.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = thickness
    ds.SliceLocation = z
    ds.PixelSpacing = [0.683594, 0.683594]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = spec.rows
    ds.Columns = spec.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.KVP = 120
        ds.XRayTubeCurrent = 250
        ds.ConvolutionKernel = "STANDARD"
    else:
        ds.WindowCenter, ds.WindowWidth = 700, 1400
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = 500.0
        ds.EchoTime = 12.0
        ds.MagneticFieldStrength = 1.5
        ds.ImagingFrequency = 63.87
    pixels = _phantom(_rng(spec.seed, 3, st, se, i), modality, spec.rows, spec.columns, i / 6.0)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OW"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "TESSERA_BENCH"
    ds.file_meta = meta
    return ds


def _study(spec: Spec, st: int, patient: _Patient) -> Dataset:
    rng = _rng(spec.seed, 2, st)
    modality = "CT" if rng.random() < 0.5 else "MR"
    description, body_part, _ = PROTOCOLS[modality][int(rng.integers(len(PROTOCOLS[modality])))]
    date = _date(rng, dt.date(2015, 1, 1), dt.date(2024, 12, 31))
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "TESSERA"
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    age = (date - patient.birth_date).days // 365
    ds.PatientAge = f"{age:03d}Y"
    ds.StudyInstanceUID = _uid(spec.seed, "study", st)
    ds.StudyDate = date.strftime("%Y%m%d")
    ds.StudyTime = f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"
    ds.StudyID = str(1000 + st)
    ds.AccessionNumber = f"ACC{spec.seed:02d}{st:06d}"
    ds.StudyDescription = description
    ds.ReferringPhysicianName = PHYSICIANS[int(rng.integers(len(PHYSICIANS)))]
    ds.InstitutionName = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
    ds.Manufacturer = "TESSERA SYNTHETIC"
    ds.ManufacturerModelName = "BENCH-CT" if modality == "CT" else "BENCH-MR 1.5T"
    ds.Modality = modality
    ds.BodyPartExamined = body_part
    ds.FrameOfReferenceUID = _uid(spec.seed, "frame-of-reference", st)
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    return ds


def _series(spec: Spec, st: int, se: int, study: Dataset) -> Dataset:
    protocol = next(p for p in PROTOCOLS[study.Modality] if p[0] == study.StudyDescription)
    ds = Dataset()
    ds.SeriesInstanceUID = _uid(spec.seed, "series", st, se)
    ds.SeriesNumber = se + 1
    ds.SeriesDescription = protocol[2][se % len(protocol[2])]
    ds.SeriesDate = study.StudyDate
    ds.SeriesTime = study.StudyTime
    ds.ProtocolName = study.StudyDescription
    return ds


def generate(spec: Spec, folder: Path) -> None:
    """Write the whole set and its ``manifest.json`` into ``folder`` (which must be empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    patients = _patients(spec)
    files: list[dict[str, Any]] = []
    studies: list[dict[str, Any]] = []
    for st in range(spec.studies):
        patient = patients[st % len(patients)]
        study = _study(spec, st, patient)
        series_uids = []
        for se in range(spec.series_per_study):
            series = _series(spec, st, se, study)
            series_uids.append(series.SeriesInstanceUID)
            rel_dir = Path(f"study{st:04d}") / f"series{se:02d}"
            (folder / rel_dir).mkdir(parents=True, exist_ok=True)
            for i in range(spec.instances_per_series):
                ds = _instance(spec, st, se, i, study, series)
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
        studies.append(
            {
                "uid": study.StudyInstanceUID,
                "patient_name": str(study.PatientName),
                "patient_id": study.PatientID,
                "study_date": study.StudyDate,
                "modality": study.Modality,
                "series": series_uids,
            }
        )
    uids = [f["sop"] for f in files] + [s["uid"] for s in studies]
    uids += [uid for s in studies for uid in s["series"]]
    if len(set(uids)) != len(uids):
        raise RuntimeError("generated UIDs are not unique")  # a bug in _uid: never ship it
    manifest = {"spec": asdict(spec), "pydicom": pydicom.__version__, "files": files}
    manifest["studies"] = studies
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def load(folder: Path) -> GeneratedSet:
    """Read a generated set from its ``manifest.json``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    instances = tuple(
        Instance(folder / f["path"], f["study"], f["series"], f["sop"], f["size"])
        for f in manifest["files"]
    )
    studies = tuple(
        StudyInfo(
            s["uid"],
            s["patient_name"],
            s["patient_id"],
            s["study_date"],
            s["modality"],
            tuple(s["series"]),
        )
        for s in manifest["studies"]
    )
    return GeneratedSet(Spec(**manifest["spec"]), folder, instances, studies)


def ensure(spec: Spec, root: Path = DATA_ROOT) -> GeneratedSet:
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
    return load(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=Spec.studies)
    parser.add_argument("--series", type=int, default=Spec.series_per_study)
    parser.add_argument("--instances", type=int, default=Spec.instances_per_series)
    parser.add_argument("--size", type=int, default=Spec.rows, help="rows = columns")
    parser.add_argument("--seed", type=int, default=Spec.seed)
    parser.add_argument("--root", type=Path, default=DATA_ROOT, help="cache folder")
    args = parser.parse_args(argv)
    spec = Spec(args.studies, args.series, args.instances, args.size, args.size, args.seed)
    data = ensure(spec, args.root)
    print(
        f"{data.folder}: {len(data.studies)} studies, {len(data.instances)} instances, "
        f"{data.total_bytes / 1e6:.1f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
