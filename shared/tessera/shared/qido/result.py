"""DICOM JSON search results (PS3.18 10.6.3.3, F.2) from the rows of :mod:`.sql`.

Each result holds, in tag order:

* the attributes of the level's table, PS3.18 Table 10.6.3-3 (study), 10.6.3-4 (series),
  10.6.3-5 (instance): Type R and U always (``{"vr": ...}`` without a Value when the
  entity has none), Type C "if known";
* for All Series, the study table too, and for a search of instances, the tables of the
  levels above that the path does not fix (10.6.3.3.2, 10.6.3.3.3); the UIDs of the
  parent entities are always given;
* every matching key and every ``includefield`` attribute of this level or above
  (attributes of lower levels are not returned, 10.6.3.3.1); ``includefield=all`` adds
  every attribute the index holds for the entity.

Values come from ``study.attrs`` / ``series.attrs`` (study and series results) or the
instance's stored metadata (instance results); counts, ModalitiesInStudy and
RetrieveURL are computed. The document is serialized once, as UTF-8 JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

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
# What a builder returns: every attribute it can give (by tag), and the tags that
# includefield=all adds: the entity's own level's attributes.
Built = tuple[dict[str, Any], set[str]]
_RETRIEVE_URL = "00081190"
# bulk data is not returned by a search, even for includefield=all
_PIXEL_TAGS = frozenset({"7FE00008", "7FE00009", "7FE00010"})


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


def render(rows: Iterable[Mapping[str, Any]], query: QidoQuery, base_url: str) -> bytes:
    """The response body: a JSON array of one DICOM JSON object per row."""
    wanted = return_attributes(query)
    build = {Level.STUDY: _study, Level.SERIES: _series, Level.INSTANCE: _instance}[query.level]
    results = []
    for row in rows:
        source, own = build(row, base_url)
        tags = set(wanted) | own if query.include_all else set(wanted)
        results.append(_select(source, wanted, tags))
    return json.dumps(results, ensure_ascii=False, separators=(",", ":")).encode()


def _select(
    source: dict[str, Any], wanted: dict[str, str | None], tags: set[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tag in sorted(tags):
        element = source.get(tag)
        if element is not None:
            out[tag] = element
        elif (vr := wanted.get(tag)) is not None:
            out[tag] = {"vr": vr}
    return out


def _element(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _study_computed(row: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    return {
        "00080056": _element("CS", "ONLINE"),
        "00080061": _element("CS", *row["modalities_in_study"]),
        "00080062": _element("UI", *row["sop_classes_in_study"]),
        "00201206": _element("IS", row["number_of_series"]),
        "00201208": _element("IS", row["study_instances"]),
        _RETRIEVE_URL: _element("UR", f"{base_url}/studies/{row['study_instance_uid']}"),
    }


def _study(row: Mapping[str, Any], base_url: str) -> Built:
    computed = _study_computed(row, base_url)
    return {**row["study_attrs"], **computed}, set(row["study_attrs"]) | set(computed)


def _series_url(row: Mapping[str, Any], base_url: str) -> str:
    return f"{base_url}/studies/{row['study_instance_uid']}/series/{row['series_instance_uid']}"


def _series(row: Mapping[str, Any], base_url: str) -> Built:
    source = {
        **row["study_attrs"],
        **_study_computed(row, base_url),
        **row["series_attrs"],
        "00201209": _element("IS", row["series_instances"]),
        _RETRIEVE_URL: _element("UR", _series_url(row, base_url)),
    }
    return source, set(row["series_attrs"])


def _instance(row: Mapping[str, Any], base_url: str) -> Built:
    metadata = json.loads(row["metadata"])
    for tag in _PIXEL_TAGS & metadata.keys():
        del metadata[tag]
    _absolute_bulk_uris(metadata, base_url)
    url = f"{_series_url(row, base_url)}/instances/{row['sop_instance_uid']}"
    source = {
        **metadata,
        **_study_computed(row, base_url),
        "00201209": _element("IS", row["series_instances"]),
        _RETRIEVE_URL: _element("UR", url),
    }
    return source, set(metadata)


def _absolute_bulk_uris(dataset: dict[str, Any], base_url: str) -> None:
    """Stored BulkDataURIs are root-relative ("/studies/..."); a client needs them whole."""
    for element in dataset.values():
        uri = element.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("/"):
            element["BulkDataURI"] = base_url + uri
        if element.get("vr") == "SQ":
            for item in element.get("Value") or ():
                if isinstance(item, dict):
                    _absolute_bulk_uris(item, base_url)


def more_results_warning(agent: str, remaining: int) -> str:
    """The Warning header value of PS3.18 8.3.4.4.1 when the server's maximum cut a page.

    The standard's text is ``299 {+service}: There are {remaining} additional results
    that can be requested``; the warn-text is quoted here as RFC 9111 5.5 requires
    (``warn-code SP warn-agent SP warn-text``).
    """
    return f'299 {agent} "There are {remaining} additional results that can be requested"'
