"""What each search result holds (PS3.18 10.6.3.3, Tables 10.6.3-3/-4/-5), and the Warning.

Each result holds, in tag order:

* the attributes of the level's table, PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series),
  10.6.3-5 (instance): Type R and U always (``{"vr": ...}`` without a Value when the
  entity has none), Type C "if known";
* for All Series, the study table too, and for a search of instances, the tables of the
  levels above that the path does not fix (10.6.3.3.2, 10.6.3.3.3); the UIDs of the
  parent entities are always given;
* every matching key and every ``includefield`` attribute of this level or above
  (attributes of lower levels are not returned, 10.6.3.3.1); ``includefield=all`` adds
  every attribute the index holds for the entity (for studies, also the computed ones
  such as NumberOfPatientRelatedStudies); bulk data (Pixel Data) is never returned.

:func:`return_attributes` decides that list; :mod:`.render` has PostgreSQL build each
document from it.
"""

from __future__ import annotations

from tessera.shared.qido.attributes import Level
from tessera.shared.qido.params import QidoQuery

# PS3.18 Table 10.6.3-3/-4/-5: tag -> VR of the Type R and U attributes (always present)
REQUIRED: dict[Level, dict[str, str]] = {
    Level.STUDY: {
        "00080020": "DA",  # StudyDate
        "00080030": "TM",  # StudyTime
        "00080050": "SH",  # AccessionNumber
        "00080061": "CS",  # ModalitiesInStudy
        "00080090": "PN",  # ReferringPhysicianName
        "00100010": "PN",  # PatientName
        "00100020": "LO",  # PatientID
        "00100030": "DA",  # PatientBirthDate
        "00100040": "CS",  # PatientSex
        "0020000D": "UI",  # StudyInstanceUID
        "00200010": "SH",  # StudyID
        "00201206": "IS",  # NumberOfStudyRelatedSeries
        "00201208": "IS",  # NumberOfStudyRelatedInstances
    },
    Level.SERIES: {
        "00080060": "CS",  # Modality
        "0020000E": "UI",  # SeriesInstanceUID
        "00200011": "IS",  # SeriesNumber
        "00201209": "IS",  # NumberOfSeriesRelatedInstances
    },
    Level.INSTANCE: {
        "00080016": "UI",  # SOPClassUID
        "00080018": "UI",  # SOPInstanceUID
        "00200013": "IS",  # InstanceNumber
    },
}
# Type C, "shall be present if known"
CONDITIONAL: dict[Level, frozenset[str]] = {
    Level.STUDY: frozenset(
        {
            "00080005",  # SpecificCharacterSet
            "00080056",  # InstanceAvailability
            "00080201",  # TimezoneOffsetFromUTC
            "00081190",  # RetrieveURL
        }
    ),
    Level.SERIES: frozenset(
        {
            "00080005",
            "00080056",
            "00080201",
            "0008103E",  # SeriesDescription
            "00081190",
            "00400244",  # PerformedProcedureStepStartDate
            "00400245",  # PerformedProcedureStepStartTime
            "00400275",  # RequestAttributesSequence
        }
    ),
    Level.INSTANCE: frozenset(
        {
            "00080005",
            "00080056",
            "00080201",
            "00081190",
            "00280008",  # NumberOfFrames
            "00280010",  # Rows
            "00280011",  # Columns
            "00280100",  # BitsAllocated
        }
    ),
}


def return_attributes(query: QidoQuery) -> dict[str, str | None]:
    """What each result of ``query`` holds: tag -> the VR to send when the entity has no
    value, or None for an attribute that is left out unless known (Type C)."""
    level, scope = query.level, query.scope
    wanted: dict[str, str | None] = {}
    levels = [level]
    if level is not Level.STUDY and scope.study_instance_uid is None:
        levels.append(Level.STUDY)
    if level is Level.INSTANCE and scope.series_instance_uid is None:
        levels.append(Level.SERIES)
    for each in levels:
        for tag in CONDITIONAL[each]:
            wanted.setdefault(tag, None)
        wanted.update(REQUIRED[each])
    wanted["0020000D"] = "UI"
    if level is not Level.STUDY:
        wanted["0020000E"] = "UI"
    extra = [k.attribute for k in query.matches] + list(query.includefields)
    for attribute in extra:
        if attribute.level.value <= level.value:
            wanted[attribute.tag] = attribute.vr if attribute.vr != "UN" else None
    return wanted


def more_results_warning(agent: str, remaining: int) -> str:
    """The Warning header value of PS3.18 8.3.4.4.1 when the server's maximum cut a page.

    The standard's text is ``299 {+service}: There are {remaining} additional results
    that can be requested``; the warn-text is quoted here as RFC 9111 5.5 requires
    (``warn-code SP warn-agent SP warn-text``).
    """
    return f'299 {agent} "There are {remaining} additional results that can be requested"'
