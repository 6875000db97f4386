"""DICOM Unique Identifiers (PS3.5 9.1)."""

from __future__ import annotations

import re
from typing import IO

from pydicom.filereader import dcmread

from tessera.shared.dicomjson import quiet_pydicom

_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def is_valid_uid(value: object) -> bool:
    """PS3.5 9.1: ``0`` or ``[1-9][0-9]*`` components joined by dots, <= 64 chars."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID_RE.fullmatch(value))


def read_uids(fp: IO[bytes]) -> tuple[str | None, str | None, str | None]:
    """(StudyInstanceUID, SOPClassUID, SOPInstanceUID) from a PS3.10 file's header; None
    where unreadable or not a valid UID. The pixel data is never read; ``fp`` is left at
    its start."""
    fp.seek(0)
    try:
        with quiet_pydicom():
            ds = dcmread(
                fp,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"],
            )
    except Exception:  # not a PS3.10 file: whoever stores it says why
        return None, None, None
    finally:
        fp.seek(0)

    def uid(keyword: str) -> str | None:
        value = str(ds.get(keyword, "") or "").strip("\0 ")
        return value if is_valid_uid(value) else None

    return uid("StudyInstanceUID"), uid("SOPClassUID"), uid("SOPInstanceUID")
