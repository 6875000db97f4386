"""DICOM Unique Identifiers (PS3.5 9.1)."""

from __future__ import annotations

import re

_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: object) -> bool:
    """PS3.5 9.1: ``0`` or ``[1-9][0-9]*`` components joined by dots, <= 64 chars."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID_RE.fullmatch(value))
