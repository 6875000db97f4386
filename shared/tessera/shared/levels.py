"""Which attributes belong to which Query/Retrieve level (PS3.4 C.6.1.1, PS3.3 IE modules).

The index keeps each level's attributes as DICOM JSON on its row (``study.attrs``,
``series.attrs``), taken from the instance that created the row; the instance row keeps
the full instance JSON, and ``instance.attrs`` every attribute of it that is neither a
study nor a series attribute nor bulk data. Tags are the 8-hex-digit upper-case keys of
DICOM JSON.

The operator may add attributes to a level (``TESSERA_QIDO_EXTRA_ATTRIBUTES``, see
:class:`Layout`): they are then kept in that level's ``attrs`` too, so they can be
matched and returned at that level (PS3.18 10.6.1.2 lets an origin server support more
matching keys than Table 10.6.1-5 requires), and ``python -m tessera.index.search_indexes``
indexes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pydicom.datadict import dictionary_has_tag, dictionary_VR, tag_for_keyword


class Level(Enum):
    """Query/Retrieve level of a search (PS3.4 C.6.1.1), ordered top to bottom."""

    STUDY = 0
    SERIES = 1
    INSTANCE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


# Patient IE (Patient Module, C.7.1.1) and Study IE (General Study C.7.2.1,
# Patient Study C.7.2.2), plus the Specific Character Set that governs their text.
STUDY_TAGS: frozenset[str] = frozenset(
    {
        "00080005",  # SpecificCharacterSet
        "00080020",  # StudyDate
        "00080030",  # StudyTime
        "00080050",  # AccessionNumber
        "00080051",  # IssuerOfAccessionNumberSequence
        "00080090",  # ReferringPhysicianName
        "00080201",  # TimezoneOffsetFromUTC
        "00081030",  # StudyDescription
        "00081032",  # ProcedureCodeSequence
        "00081060",  # NameOfPhysiciansReadingStudy
        "00081080",  # AdmittingDiagnosesDescription
        "00081110",  # ReferencedStudySequence
        "00100010",  # PatientName
        "00100020",  # PatientID
        "00100021",  # IssuerOfPatientID
        "00100024",  # IssuerOfPatientIDQualifiersSequence
        "00100030",  # PatientBirthDate
        "00100032",  # PatientBirthTime
        "00100040",  # PatientSex
        "00101000",  # OtherPatientIDs (retired, still sent)
        "00101001",  # OtherPatientNames
        "00101002",  # OtherPatientIDsSequence
        "00101010",  # PatientAge
        "00101020",  # PatientSize
        "00101030",  # PatientWeight
        "00102160",  # EthnicGroup
        "00104000",  # PatientComments
        "0020000D",  # StudyInstanceUID
        "00200010",  # StudyID
        "00321032",  # RequestingPhysician
        "00321060",  # RequestedProcedureDescription
    }
)

# Series IE: General Series (C.7.3.1), General Equipment (C.7.5.1), Frame of Reference.
SERIES_TAGS: frozenset[str] = frozenset(
    {
        "00080005",  # SpecificCharacterSet
        "00080021",  # SeriesDate
        "00080031",  # SeriesTime
        "00080060",  # Modality
        "00080070",  # Manufacturer
        "00080080",  # InstitutionName
        "00081010",  # StationName
        "0008103E",  # SeriesDescription
        "0008103F",  # SeriesDescriptionCodeSequence
        "00081050",  # PerformingPhysicianName
        "00081070",  # OperatorsName
        "00081090",  # ManufacturerModelName
        "00081111",  # ReferencedPerformedProcedureStepSequence
        "00180015",  # BodyPartExamined
        "00185100",  # PatientPosition
        "0020000E",  # SeriesInstanceUID
        "00200011",  # SeriesNumber
        "00200052",  # FrameOfReferenceUID
        "00200060",  # Laterality
        "00400244",  # PerformedProcedureStepStartDate
        "00400245",  # PerformedProcedureStepStartTime
        "00400253",  # PerformedProcedureStepID
        "00400254",  # PerformedProcedureStepDescription
        "00400275",  # RequestAttributesSequence
    }
)


def pick(metadata: dict, tags: frozenset[str]) -> dict:
    """The part of an instance's DICOM JSON that belongs to a level."""
    return {t: v for t, v in metadata.items() if t in tags}


def text(metadata: dict, tag: str) -> str:
    """First value of an attribute as a DICOM string ('' when absent or empty).

    PN values are rendered as the DICOM string form: the Alphabetic, Ideographic and
    Phonetic component groups joined by '=' (trailing empty groups dropped).
    """
    element = metadata.get(tag)
    if not element:
        return ""
    values = element.get("Value")
    if not values:
        return ""
    return value_text(values[0], element.get("vr"))


def value_text(first: object, vr: str | None) -> str:
    """One DICOM JSON value as a DICOM string: a PN object's component groups joined by
    '=' (trailing empty groups dropped), another object '', anything else ``str``."""
    if isinstance(first, dict):
        if vr == "PN":
            groups = [first.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            return "=".join(groups)
        return ""
    return str(first)


def instance_number_int(value: str) -> int | None:
    """InstanceNumber (IS) as the index stores it in ``instance.instance_number_int`` to
    order instances by it: the integer, or None when it is not one or does not fit the
    column's 32 bits. The router orders its merged QIDO-RS pages with the same value."""
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return n if -(2**31) <= n < 2**31 else None


def instance_attrs(metadata: dict) -> dict:
    """The instance-level attributes QIDO matches on: everything that is not a study or
    series attribute and not bulk data (PS3.18 10.6.1.2 allows any attribute as a key)."""
    return {
        tag: value
        for tag, value in metadata.items()
        if tag not in STUDY_TAGS
        and tag not in SERIES_TAGS
        and "BulkDataURI" not in value
        and "InlineBinary" not in value
    }


_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True)
class Layout:
    """Which attributes each level's ``attrs`` holds: the defaults above plus the extras
    the operator configured. ``instance_extra`` only asks for indexes: ``instance.attrs``
    already holds every instance attribute."""

    study_extra: frozenset[str] = frozenset()
    series_extra: frozenset[str] = frozenset()
    instance_extra: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Layout:
        """``level:name`` entries (name: keyword or tag), e.g. ``study:InstitutionName``;
        a bare name stays at its own level and is only indexed. ValueError if an entry
        names no attribute, an unknown level, or moves an attribute down a level."""
        extra: dict[Level, set[str]] = {level: set() for level in Level}
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            label, _, name = (p.strip() for p in entry.rpartition(":"))
            tag = _tag_of(name, entry)
            home = default_level(tag)
            if label and label.upper() not in Level.__members__:
                raise ValueError(f"{entry!r}: level must be study, series or instance")
            level = Level[label.upper()] if label else home
            if level.value > home.value:
                raise ValueError(f"{entry!r}: a {home.label} attribute cannot go down a level")
            extra[level].add(tag)
        return cls(
            frozenset(extra[Level.STUDY] - STUDY_TAGS),
            frozenset(extra[Level.SERIES] - SERIES_TAGS),
            frozenset(extra[Level.INSTANCE]),
        )

    @property
    def study_tags(self) -> frozenset[str]:
        return STUDY_TAGS | self.study_extra

    @property
    def series_tags(self) -> frozenset[str]:
        return SERIES_TAGS | self.series_extra

    def level_of(self, tag: str) -> Level:
        """The level whose ``attrs`` an attribute is matched on."""
        if tag in self.study_tags:
            return Level.STUDY
        if tag in self.series_tags:
            return Level.SERIES
        return Level.INSTANCE

    def study_attrs(self, metadata: dict) -> dict:
        return pick(metadata, self.study_tags)

    def series_attrs(self, metadata: dict) -> dict:
        return pick(metadata, self.series_tags)

    def extras(self) -> list[tuple[Level, str]]:
        """Every configured extra attribute with its level, for the search indexes."""
        return sorted(
            [(Level.STUDY, t) for t in self.study_extra]
            + [(Level.SERIES, t) for t in self.series_extra]
            + [(Level.INSTANCE, t) for t in self.instance_extra],
            key=lambda pair: (pair[0].value, pair[1]),
        )


def default_level(tag: str) -> Level:
    """The level an attribute belongs to without any extras."""
    return Layout().level_of(tag)


def _tag_of(name: str, entry: str) -> str:
    if _TAG.fullmatch(name) and dictionary_has_tag(int(name, 16)):
        return name.upper()
    number = tag_for_keyword(name) if name.isidentifier() else None
    if number is None:
        raise ValueError(f"{entry!r}: {name!r} is not a DICOM keyword or tag")
    return f"{number:08X}"


def vr_of(tag: str) -> str:
    """First VR of the dictionary entry of a public tag."""
    return str(dictionary_VR(int(tag, 16))).split(" or ")[0]
