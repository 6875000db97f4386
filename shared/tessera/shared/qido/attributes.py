"""Attributes as QIDO-RS names them: keyword or tag (PS3.18 8.3.4.1), VR and level.

Names and VRs come from pydicom's data dictionary (PS3.6). The level of an attribute is
where this index keeps it (:mod:`tessera.shared.levels`): patient and study attributes
on the study row, series attributes on the series row, everything else on the instance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_VR,
    keyword_for_tag,
    repeater_has_tag,
    tag_for_keyword,
)

from tessera.shared.errors import QueryError
from tessera.shared.levels import SERIES_TAGS, STUDY_TAGS

_TAG = re.compile(r"[0-9A-Fa-f]{8}")


class Level(Enum):
    """Query/Retrieve level of a search (PS3.4 C.6.1.1), ordered top to bottom."""

    STUDY = 0
    SERIES = 1
    INSTANCE = 2

    @property
    def label(self) -> str:
        return self.name.lower()


# Attributes the index computes rather than copies from an instance (PS3.4 Table C.3-1):
# ModalitiesInStudy, SOPClassesInStudy, NumberOfStudyRelatedSeries/-Instances,
# NumberOfSeriesRelatedInstances.
STUDY_COMPUTED = frozenset({"00080061", "00080062", "00201206", "00201208"})
SERIES_COMPUTED = frozenset({"00201209"})
# Return-only: present in results, never a matching key with a value.
RETURN_ONLY = frozenset({"00080056", "00081190", "00201206", "00201208", "00201209"})


def level_of(tag: str) -> Level:
    """The level an attribute belongs to in this index (see :mod:`tessera.shared.levels`)."""
    if tag in STUDY_TAGS or tag in STUDY_COMPUTED:
        return Level.STUDY
    if tag in SERIES_TAGS or tag in SERIES_COMPUTED:
        return Level.SERIES
    return Level.INSTANCE


@dataclass(frozen=True, slots=True)
class Attribute:
    """A data element as named in a query: tag as in DICOM JSON (upper-case hex)."""

    tag: str
    keyword: str  # '' for private or unknown elements
    vr: str  # the first VR of the dictionary entry ('UN' when not in the dictionary)

    @property
    def level(self) -> Level:
        return level_of(self.tag)


def resolve_attribute(name: str) -> Attribute:
    """An attribute by keyword or 8-hex-digit tag; :class:`QueryError` if neither."""
    if _TAG.fullmatch(name):
        number = int(name, 16)
        if not (dictionary_has_tag(number) or repeater_has_tag(number)):  # 60xx overlays
            if number >> 16 & 1:  # private group: any VR, known only to its creator
                return Attribute(name.upper(), "", "UN")
            raise QueryError(f"{name}: no such data element in the DICOM dictionary")
        return Attribute(name.upper(), keyword_for_tag(number), _first_vr(number))
    found = tag_for_keyword(name) if name.isidentifier() else None
    if found is None:
        raise QueryError(f"{name}: unknown attribute keyword or malformed tag")
    return Attribute(f"{found:08X}", name, _first_vr(found))


def _first_vr(number: int) -> str:
    return dictionary_VR(number).split(" or ")[0]
