"""Attributes as QIDO-RS names them: keyword or tag (PS3.18 8.3.4.1), VR and level.

Names and VRs come from pydicom's data dictionary (PS3.6). The level of an attribute is
where this index keeps it (:class:`tessera.shared.levels.Layout`): patient and study
attributes on the study row, series attributes on the series row, everything else on the
instance, plus the extra attributes the operator moved up a level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VR,
    keyword_for_tag,
    repeater_has_tag,
    tag_for_keyword,
)

from tessera.shared.errors import QueryError
from tessera.shared.levels import Layout, Level

__all__ = ["Attribute", "Level", "resolve_attribute"]

_TAG = re.compile(r"[0-9A-Fa-f]{8}")
DEFAULT_LAYOUT = Layout()

# Attributes the index computes rather than copies from an instance (PS3.4 Table C.3-1,
# C.6-1): ModalitiesInStudy, SOPClassesInStudy, NumberOfStudyRelatedSeries/-Instances,
# NumberOfPatientRelatedStudies/-Series/-Instances (Patient IE attributes, which a Study
# Root search treats as study attributes), NumberOfSeriesRelatedInstances.
PATIENT_COUNTS = frozenset({"00201200", "00201202", "00201204"})
STUDY_COMPUTED = frozenset({"00080061", "00080062", "00201206", "00201208"} | PATIENT_COUNTS)
SERIES_COMPUTED = frozenset({"00201209"})
# AvailableTransferSyntaxUID (PS3.18 Table 10.6.3-5): the Transfer Syntax stored
INSTANCE_COMPUTED = frozenset({"00083002"})
# Return-only: present in results, never a matching key with a value.
RETURN_ONLY = frozenset(
    {"00080056", "00081190", "00201206", "00201208", "00201209"}
    | PATIENT_COUNTS
    | INSTANCE_COMPUTED
)


def level_of(tag: str, layout: Layout = DEFAULT_LAYOUT) -> Level:
    """The level an attribute belongs to in this index."""
    if tag in STUDY_COMPUTED:
        return Level.STUDY
    if tag in SERIES_COMPUTED:
        return Level.SERIES
    return layout.level_of(tag)


@dataclass(frozen=True, slots=True)
class Attribute:
    """A data element as named in a query: tag as in DICOM JSON (upper-case hex)."""

    tag: str
    keyword: str  # '' for private or unknown elements
    vr: str  # the first VR of the dictionary entry ('UN' when not in the dictionary)
    level: Level = Level.INSTANCE


def resolve_attribute(name: str, layout: Layout = DEFAULT_LAYOUT) -> Attribute:
    """An attribute by keyword or 8-hex-digit tag; :class:`QueryError` if neither."""
    if _TAG.fullmatch(name):
        number = int(name, 16)
        tag = name.upper()
        if not (dictionary_has_tag(number) or repeater_has_tag(number)):  # 60xx overlays
            if number >> 16 & 1:  # private group: any VR, known only to its creator
                return Attribute(tag, "", "UN", level_of(tag, layout))
            raise QueryError(f"{name}: no such data element in the DICOM dictionary")
        return Attribute(tag, keyword_for_tag(number), _first_vr(number), level_of(tag, layout))
    found = tag_for_keyword(name) if name.isidentifier() else None
    if found is None:
        raise QueryError(f"{name}: unknown attribute keyword or malformed tag")
    tag = f"{found:08X}"
    return Attribute(tag, name, _first_vr(found), level_of(tag, layout))


def _first_vr(number: int) -> str:
    return str(dictionary_VR(number)).split(" or ")[0]
