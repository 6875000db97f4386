"""What the ingest, which answers a STOW-RS request, and the router, which splits one over
its shards and merges their answers, must do alike (PS3.18 10.5): accept the same
requests, and answer the same outcome with the same failure items, status and Warning.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

from tessera.shared.errors import UnsupportedMediaType
from tessera.shared.mediatypes import parse_media_type
from tessera.shared.multipart import Part, read_parts
from tessera.shared.settings import Settings

DICOM = "application/dicom"


def read_stow_parts(
    chunks: AsyncIterable[bytes], content_type: str, settings: Settings
) -> AsyncGenerator[Part, None]:
    """The parts of a STOW-RS body, read with the deployment's limits (spooling, the
    largest part and request: 413 above them)."""
    return read_parts(
        chunks,
        content_type,
        spool_threshold=settings.spool_threshold,
        max_part_size=settings.max_part_size,
        max_total_size=settings.max_request_size,
        spool_dir=settings.spool_dir or None,
    )


def check_content_type(value: str) -> None:
    """PS3.18 10.5.1.1: multipart/related with type application/dicom. The metadata +
    bulk data forms (``type="application/dicom+json"`` / ``+xml``) are turned into
    instances by the router before they reach a shard (:mod:`tessera.router.stow_metadata`);
    a shard's ingest answers 415 to them."""
    if not value:
        raise UnsupportedMediaType("Content-Type is missing; send multipart/related")
    mt = parse_media_type(value)
    if mt.essence != "multipart/related":
        raise UnsupportedMediaType(
            f'{mt.essence} is not supported; send multipart/related; type="application/dicom"'
        )
    part_type = mt.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"multipart/related type {part_type} is not supported; only application/dicom"
        )


def failed_item(
    sop_class_uid: str | None, sop_instance_uid: str | None, reason: int, comment: str
) -> dict[str, Any]:
    """A FailedSOPSequence (0008,1198) item (PS3.18 Table 10.5.3-3): the UIDs where they
    could be read (empty otherwise), the Failure Reason (Table I.2-2), and the reason in
    words as Error Comment (0000,0902, LO: 64 characters at most), as other archives
    also send it."""

    def ui(value: str | None) -> dict[str, Any]:
        return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}

    return {
        "00081150": ui(sop_class_uid),
        "00081155": ui(sop_instance_uid),
        "00081197": {"vr": "US", "Value": [int(reason)]},
        "00000902": {"vr": "LO", "Value": [comment[:64]]},
    }


def response_status(
    referenced: list[dict[str, Any]], any_failed: bool, body_error: str | None
) -> int:
    """PS3.18 Table 10.5.3-1: 409 when nothing was stored; 202 when some instances
    failed, were stored with a Warning Reason (0008,1196), or the body broke off after
    some parts; 200 when all were stored as sent."""
    if not referenced:
        return 409
    warned = any("00081196" in item for item in referenced)
    if any_failed or warned or body_error:
        return 202
    return 200


def damaged_body_warning(body_error: str) -> str:
    """The Warning header (RFC 9110 299) of an answer to the parts read before the
    multipart body broke off."""
    return f'299 tessera "multipart body damaged after some parts: {body_error}"'
