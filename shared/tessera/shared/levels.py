"""Which attributes belong to which Query/Retrieve level (PS3.4 C.6.1.1, PS3.3 IE modules).

The index keeps each level's attributes as DICOM JSON on its row (``study.attrs``,
``series.attrs``), taken from the instance that created the row; the instance row keeps
the full instance JSON. Tags are the 8-hex-digit upper-case keys of DICOM JSON.
"""

from __future__ import annotations

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
    first = values[0]
    if isinstance(first, dict):
        if element.get("vr") == "PN":
            groups = [first.get(k, "") for k in ("Alphabetic", "Ideographic", "Phonetic")]
            while groups and not groups[-1]:
                groups.pop()
            return "=".join(groups)
        return ""
    return str(first)
