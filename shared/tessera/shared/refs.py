"""Identifier value types: a study, series, instance or frame, by its DICOM UIDs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tessera.shared.errors import BadRequest

# PS3.5 9.1: components of digits separated by '.', no leading zero in a component
# (except the component "0"), at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def check_uid(value: str, name: str) -> str:
    """A UID from a URL path; 400 if it cannot be a UID (PS3.18 8.5)."""
    # Real archives hold non-conformant UIDs (leading zeros, trailing spaces stripped
    # by some writers), so we only refuse what can never be a stored UID.
    if not value or len(value) > 64 or not all(c.isdigit() or c == "." for c in value):
        raise BadRequest(f"{name} {value!r} is not a valid UID")
    return value


@dataclass(frozen=True, slots=True)
class StudyRef:
    study_instance_uid: str

    @property
    def path(self) -> str:
        return f"/studies/{self.study_instance_uid}"


@dataclass(frozen=True, slots=True)
class SeriesRef:
    study_instance_uid: str
    series_instance_uid: str

    @property
    def study(self) -> StudyRef:
        return StudyRef(self.study_instance_uid)

    @property
    def path(self) -> str:
        return f"/studies/{self.study_instance_uid}/series/{self.series_instance_uid}"


@dataclass(frozen=True, slots=True)
class InstanceRef:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str

    @property
    def series(self) -> SeriesRef:
        return SeriesRef(self.study_instance_uid, self.series_instance_uid)

    @property
    def path(self) -> str:
        return f"{self.series.path}/instances/{self.sop_instance_uid}"


@dataclass(frozen=True, slots=True)
class FrameRef:
    instance: InstanceRef
    frame_number: int  # 1-based, PS3.18 8.3.3.1
