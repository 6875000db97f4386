"""A deterministic synthetic archive at any size, for the QIDO-RS scale benchmark.

:class:`ScaleSet` describes ``studies`` studies (about ``instances`` instances in all)
as plain records and as the DICOM JSON metadata ingest would produce for each instance
(the 55 or so elements of a typical CT/MR/CR header, as ``parse_instance`` encodes them,
Pixel Data as a root-relative BulkDataURI). Everything derives from ``seed`` and the
position of the object, so a study can be rebuilt on its own, in any order, by the bulk
loader (:mod:`bench.scale_load`) and by the DICOM file writer for Orthanc alike.

Distributions, meant to look like a hospital's:

* patients: about 0.6 per study (every patient has at least one study); family names
  from the 50 commonest US census surnames with their weights for 12 % of patients
  (SMITH is 0.8 % of everyone, as in the census) and a long tail of made-up names for the
  rest; given names likewise; birth dates 1930-2020; PatientID an 8-digit number;
* studies: dates from 2010 to mid-2025, more of them recent, so a date has ~20 studies
  at 100,000; times 07:00-20:00; modality CT 30 %, MR 22 %, CR 18 %, US 10 %, DX 8 %,
  MG 7 %, PT (with its CT series) 5 %; series and instance counts by modality, scaled so
  the mean is ``instances / studies``; accession numbers, study IDs, descriptions and
  referring physicians from short lists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

UID_ROOT = "1.2.826.0.1.3680043.8.498.88"  # pydicom's root + a branch for this benchmark
START_DAY = 733773  # 2010-01-01 as a proleptic Gregorian ordinal
DAYS = 5660  # to mid-2025
SURNAMES = [
    ("SMITH", 828), ("JOHNSON", 655), ("WILLIAMS", 550), ("BROWN", 487), ("JONES", 483),
    ("GARCIA", 412), ("MILLER", 407), ("DAVIS", 380), ("RODRIGUEZ", 350), ("MARTINEZ", 343),
    ("HERNANDEZ", 341), ("LOPEZ", 287), ("GONZALEZ", 280), ("WILSON", 263), ("ANDERSON", 260),
    ("THOMAS", 247), ("TAYLOR", 241), ("MOORE", 233), ("JACKSON", 229), ("MARTIN", 228),
    ("LEE", 227), ("PEREZ", 209), ("THOMPSON", 208), ("WHITE", 207), ("HARRIS", 195),
    ("SANCHEZ", 192), ("CLARK", 183), ("RAMIREZ", 179), ("LEWIS", 173), ("ROBINSON", 170),
    ("WALKER", 169), ("YOUNG", 160), ("ALLEN", 157), ("KING", 155), ("WRIGHT", 155),
    ("SCOTT", 145), ("TORRES", 141), ("NGUYEN", 139), ("HILL", 138), ("FLORES", 137),
    ("GREEN", 136), ("ADAMS", 135), ("NELSON", 134), ("BAKER", 133), ("HALL", 129),
    ("RIVERA", 127), ("CAMPBELL", 121), ("MITCHELL", 121), ("CARTER", 119), ("MÜLLER", 118),
]  # fmt: skip
GIVEN = ["JAMES", "MARY", "JOHN", "PATRICIA", "ROBERT", "JENNIFER", "MICHAEL", "LINDA",
         "DAVID", "ELIZABETH", "WILLIAM", "BARBARA", "JOSÉ", "SUSAN", "JÉRÔME", "JESSICA",
         "THOMAS", "SARAH", "ANNA", "KENJI", "OLGA", "EMEKA", "SOPHIE", "LUCAS"]  # fmt: skip
SYLLABLES = ["ka", "ro", "len", "mar", "tin", "vel", "dor", "shi", "na", "bel", "gru", "so",
             "pa", "li", "zen", "or", "ham", "wick", "ber", "ton", "ley", "ska", "vo", "din",
             "ma", "th", "qu", "est", "ov", "ich", "ez", "ard", "mi", "ff", "y", "rk"]  # fmt: skip
# modality: (share, SOP Class UID, series count range, relative instances, descriptions)
MODALITIES: dict[str, tuple[float, str, tuple[int, int], float, tuple[str, ...]]] = {
    "CT": (0.30, "1.2.840.10008.5.1.4.1.1.2", (2, 4), 14, ("CT HEAD", "CT CHEST", "CT ABD")),
    "MR": (0.22, "1.2.840.10008.5.1.4.1.1.4", (3, 6), 16, ("MR BRAIN", "MR KNEE", "MR SPINE")),
    "CR": (0.18, "1.2.840.10008.5.1.4.1.1.1", (1, 2), 2, ("XR CHEST 2V", "XR HAND", "XR FOOT")),
    "US": (0.10, "1.2.840.10008.5.1.4.1.1.6.1", (1, 2), 6, ("US ABDOMEN", "US OB", "US NECK")),
    "DX": (0.08, "1.2.840.10008.5.1.4.1.1.1.1", (1, 2), 2, ("DX CHEST", "DX PELVIS")),
    "MG": (0.07, "1.2.840.10008.5.1.4.1.1.1.2", (2, 4), 4, ("MG SCREENING", "MG DIAG")),
    "PT": (0.05, "1.2.840.10008.5.1.4.1.1.128", (2, 3), 14, ("PET-CT WB", "PET-CT BRAIN")),
}  # fmt: skip
_MEAN_RELATIVE = sum(v[0] * v[3] for v in MODALITIES.values())
REFERRING = ["GREY^MEREDITH", "HOUSE^GREGORY", "QUINN^MICHAELA", "ROSS^DOUG", "KILDARE^JAMES"]
BODY = {"CT": "HEAD", "MR": "BRAIN", "CR": "CHEST", "US": "ABDOMEN", "DX": "CHEST",
        "MG": "BREAST", "PT": "WHOLEBODY"}  # fmt: skip


@dataclass(frozen=True)
class Study:
    index: int
    uid: str
    patient: int
    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    date: str
    time: str
    modality: str
    accession: str
    description: str
    referring: str
    series: tuple[tuple[str, str, int], ...]  # (SeriesInstanceUID, Modality, instances)


def _weighted(rng: random.Random, items: list[tuple[str, int]]) -> str:
    return rng.choices([n for n, _ in items], weights=[w for _, w in items])[0]


@dataclass(frozen=True)
class ScaleSet:
    studies: int
    instances: int
    seed: int = 1

    @property
    def patients(self) -> int:
        return max(1, self.studies * 6 // 10)

    def patient(self, p: int) -> tuple[str, str, str, str]:
        """(PatientName, PatientID, PatientBirthDate, PatientSex) of patient ``p``."""
        rng = random.Random(f"{self.seed}:patient:{p}")
        if rng.random() < 0.12:
            family = _weighted(rng, SURNAMES)
        else:  # the long tail: made-up names
            family = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).upper()
        name = f"{family}^{rng.choice(GIVEN)}"
        pid = str(10_000_000 + (p * 7919 + 1_234_567) % 90_000_000)  # unique per patient
        year = rng.randint(1930, 2020)
        birth = f"{year}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        return name, pid, birth, rng.choice("FM")

    def study(self, i: int) -> Study:
        rng = random.Random(f"{self.seed}:study:{i}")
        p = i if i < self.patients else rng.randrange(self.patients)
        name, pid, birth, sex = self.patient(p)
        modality = rng.choices(list(MODALITIES), [v[0] for v in MODALITIES.values()])[0]
        _, _, (lo, hi), relative, descriptions = MODALITIES[modality]
        mean = relative / _MEAN_RELATIVE * self.instances / self.studies
        count = max(1, int(mean) + (rng.random() < mean - int(mean)))  # the mean on average
        n_series = max(1, min(rng.randint(lo, hi), count))
        per = [count // n_series + (1 if k < count % n_series else 0) for k in range(n_series)]
        series = tuple(
            (f"{UID_ROOT}.2.{self.seed}.{i}.{k + 1}", "CT" if modality == "PT" and k == 0
             else modality, per[k])
            for k in range(n_series)
        )  # fmt: skip
        day = START_DAY + int(DAYS * rng.random() ** 0.7)  # more studies lately
        return Study(
            index=i,
            uid=f"{UID_ROOT}.1.{self.seed}.{i}",
            patient=p,
            patient_name=name,
            patient_id=pid,
            birth_date=birth,
            sex=sex,
            date=date.fromordinal(day).strftime("%Y%m%d"),
            time=f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
            modality=modality,
            accession=f"A{(i * 104729 + 7) % 10**9:09d}",
            description=rng.choice(descriptions),
            referring=rng.choice(REFERRING),
            series=series,
        )

    def all_studies(self) -> Iterator[Study]:
        return (self.study(i) for i in range(self.studies))


def _e(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [{"Alphabetic": name}]}


def series_base(study: Study, k: int) -> dict[str, Any]:
    """The elements every instance of series ``k`` shares, as DICOM JSON."""
    uid, modality, _ = study.series[k]
    sop_class = MODALITIES[modality][1]
    return {
        "00080005": _e("CS", "ISO_IR 192"),
        "00080008": _e("CS", "ORIGINAL", "PRIMARY", "AXIAL"),
        "00080016": _e("UI", sop_class),
        "00080020": _e("DA", study.date),
        "00080021": _e("DA", study.date),
        "00080030": _e("TM", study.time),
        "00080031": _e("TM", study.time),
        "00080050": _e("SH", study.accession),
        "00080060": _e("CS", modality),
        "00080070": _e("LO", "TESSERA SYNTHETIC"),
        "00080080": _e("LO", "TESSERA GENERAL HOSPITAL"),
        "00080090": _pn(study.referring),
        "00081030": _e("LO", study.description),
        "0008103E": _e("LO", f"{modality} SERIES {k + 1}"),
        "00081090": _e("LO", f"BENCH-{modality}"),
        "00100010": _pn(study.patient_name),
        "00100020": _e("LO", study.patient_id),
        "00100030": _e("DA", study.birth_date),
        "00100040": _e("CS", study.sex),
        "00180015": _e("CS", BODY[study.modality]),
        "00180050": _e("DS", 5.0),
        "00185100": _e("CS", "HFS"),
        "0020000D": _e("UI", study.uid),
        "0020000E": _e("UI", uid),
        "00200010": _e("SH", str(study.index % 100000)),
        "00200011": _e("IS", k + 1),
        "00200037": _e("DS", 1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        "00200052": _e("UI", f"{UID_ROOT}.4.{study.index}.{k + 1}"),
        "00280002": _e("US", 1),
        "00280004": _e("CS", "MONOCHROME2"),
        "00280010": _e("US", 512),
        "00280011": _e("US", 512),
        "00280030": _e("DS", 0.683594, 0.683594),
        "00280100": _e("US", 16),
        "00280101": _e("US", 12),
        "00280102": _e("US", 11),
        "00280103": _e("US", 0),
        "00281050": _e("DS", 40.0),
        "00281051": _e("DS", 400.0),
        "00281052": _e("DS", -1024.0),
        "00281053": _e("DS", 1.0),
    }


def sop_uid(study: Study, k: int, n: int) -> str:
    return f"{UID_ROOT}.3.{study.index}.{k + 1}.{n}"


def instance_metadata(study: Study, k: int, n: int, base: dict[str, Any]) -> dict[str, Any]:
    """DICOM JSON of instance ``n`` (1-based) of series ``k``: ``base`` plus its own
    elements, in tag order as ``parse_instance`` gives them."""
    sop, series_uid = sop_uid(study, k, n), study.series[k][0]
    instance_path = f"/studies/{study.uid}/series/{series_uid}/instances/{sop}"
    own = {
        "00080018": _e("UI", sop),
        "00200013": _e("IS", n),
        "00200032": _e("DS", -175.0, -175.0, -75.0 + 5.0 * n),
        "00201041": _e("DS", -75.0 + 5.0 * n),
        "7FE00010": {"vr": "OW", "BulkDataURI": f"{instance_path}/bulk/7FE00010"},
    }
    return dict(sorted({**base, **own}.items()))
