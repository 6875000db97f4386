"""Accept negotiation for WADO-RS responses (PS3.18 8.7.3, 8.7.5, 8.3.3.1).

Instances and bulk data are returned as ``multipart/related; type=<part type>`` and each
part carries a ``transfer-syntax`` parameter. From the Accept ranges we derive, for each
stored Transfer Syntax, the one to send:

* ``*/*``, ``multipart/*``, ``multipart/related`` without ``type`` (or a missing Accept):
  the client named no DICOM media type, so any representation is acceptable and the
  part is sent as stored (labelled with its real Transfer Syntax);
* ``multipart/related; type="<part type>"; transfer-syntax=*``: as stored;
* ``...; transfer-syntax=<UID>``: that Transfer Syntax (a conversion if not the stored one);
* ``...`` without ``transfer-syntax``: Explicit VR Little Endian, the default of
  Table 8.7.3-2 (PS3.18 8.7.3.5.2: an absent transfer-syntax *requests* the default);
* the part type alone (``application/dicom``) is not a WADO-RS response type (10.4.1.1).

Frames (8.7.3.3, 10.4.1.1.x) are parts of ``application/octet-stream`` (any Transfer
Syntax; OHIF asks ``type=application/octet-stream; transfer-syntax=*`` for frames as
stored) or of a compressed media type of Table 8.7.3-5 (``image/jpeg``, ``image/jls``,
``image/jp2``, ``image/jphc``...), which carries only its own Transfer Syntaxes: one named
without ``transfer-syntax`` (or with ``*``) gets the stored one if it is among them, else
the type's default (D), converted by transcode. The part is labelled with the type the
client named, or for a wildcard with the Transfer Syntax's own type
(:data:`COMPRESSED_MEDIA_TYPES`; native pixel data is octet-stream).

Instances (``application/dicom``, Table 8.7.3-2) can be asked in any Transfer Syntax the
transcode service makes (:data:`~tessera.shared.transcode.syntaxes.TARGETS`: the native and
compressed ones of PS3.5 Annex A it has an encoder for); whether the pixels fit the
target (8-bit for JPEG Baseline...) only the worker knows, and it answers 406 if not.

Higher ``q`` wins; between equal ``q`` the representation that needs no conversion wins.
A ``q=0`` range naming the part type excludes its Transfer Syntax (``*``: all of them).
The ``accept`` query parameter, when present, replaces the Accept header (8.3.3.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tessera.shared.errors import BadRequest, NotAcceptable
from tessera.shared.http import DICOM_JSON
from tessera.shared.mediatypes import AcceptRange, parse_media_type
from tessera.shared.transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN

DEFAULT_TRANSFER_SYNTAX = EXPLICIT_VR_LITTLE_ENDIAN
ANY = "*"


def describe(ranges: Iterable[AcceptRange]) -> str:
    return ", ".join(str(r) for r in ranges)


# PS3.18 Table 8.7.3-5 (Media Types and Transfer Syntax UIDs for Compressed Data in
# Bulkdata): the media type of each compressed Transfer Syntax, the default (D) first.
COMPRESSED_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "image/jxl": ("1.2.840.10008.1.2.4.110", "1.2.840.10008.1.2.4.111", "1.2.840.10008.1.2.4.112"),
}
# names that older clients (and older editions of PS3.18) use
MEDIA_TYPE_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


def compressed_media_type(transfer_syntax: str) -> str | None:
    """The Table 8.7.3-5 media type of a compressed Transfer Syntax, None if not there."""
    for media_type, syntaxes in COMPRESSED_MEDIA_TYPES.items():
        if transfer_syntax in syntaxes:
            return media_type
    return None


@dataclass(frozen=True, slots=True)
class _Wanted:
    media_type: str | None  # None: any (the Transfer Syntax's own media type)
    transfer_syntax: str  # ANY: as stored (within media_type's Transfer Syntaxes)
    q: float
    order: int


class PartNegotiation:
    """The representation to send parts of ``multipart/related; type=<part type>`` in.

    ``part_type`` (``application/dicom``, ``application/octet-stream``) carries any
    Transfer Syntax, Explicit VR Little Endian when none is named. ``media_types`` are
    the other part types accepted, each with the Transfer Syntaxes it carries (frames:
    Table 8.7.3-5); one named without ``transfer-syntax`` accepts any of its own, the
    stored one first (PS3.18 names a default per type, but a JPEG stored as baseline
    asked as ``image/jpeg`` is served as stored rather than converted), else the type's
    default (D, listed first), which is a conversion.
    """

    def __init__(
        self,
        ranges: list[AcceptRange],
        part_type: str,
        media_types: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.ranges = ranges
        self.part_type = part_type
        ordered = {k: tuple(v) for k, v in (media_types or {}).items()}
        self.media_types = {k: frozenset(v) for k, v in ordered.items()}
        self.defaults = {k: v[0] for k, v in ordered.items() if v}
        self.wanted: list[_Wanted] = []
        self.excluded: set[tuple[str | None, str]] = set()
        self.bare_part_type = False
        for order, r in enumerate(ranges):
            wanted = self._wanted(r)
            if wanted is None:
                continue
            media_type, ts = wanted
            if r.q > 0:
                self.wanted.append(_Wanted(media_type, ts, r.q, order))
            elif r.essence == "multipart/related" and "type" in r.params:
                self.excluded.add((media_type, ts))

    def _known(self, media_type: str) -> str | None:
        media_type = MEDIA_TYPE_ALIASES.get(media_type, media_type)
        if media_type == self.part_type or media_type in self.media_types:
            return media_type
        return None

    def _wanted(self, r: AcceptRange) -> tuple[str | None, str] | None:
        if r.essence in ("*/*", "multipart/*"):
            return None, ANY
        if self._known(r.essence):
            self.bare_part_type = self.bare_part_type or r.q > 0
            return None
        if r.essence != "multipart/related":
            return None
        if "type" not in r.params:
            return None, r.params.get("transfer-syntax") or ANY
        try:
            inner = parse_media_type(r.params["type"])
        except BadRequest:
            return None
        media_type = self._known(inner.essence)
        if media_type is None:
            return None
        ts = r.params.get("transfer-syntax") or inner.params.get("transfer-syntax")
        if ts:
            return media_type, ts
        return media_type, DEFAULT_TRANSFER_SYNTAX if media_type == self.part_type else ANY

    def natural_type(self, transfer_syntax: str) -> str:
        """The part type for ``transfer_syntax`` when the client named none."""
        for media_type, syntaxes in self.media_types.items():
            if transfer_syntax in syntaxes:
                return media_type
        return self.part_type

    def choose_part(
        self, stored_ts: str, convertible: Callable[[str, str], bool]
    ) -> tuple[str, str] | None:
        """(part media type, Transfer Syntax) to send a part stored in ``stored_ts``;
        None: not acceptable."""
        ranked = self.ranked(stored_ts, convertible)
        return ranked[0] if ranked else None

    def ranked(
        self, stored_ts: str, convertible: Callable[[str, str], bool]
    ) -> list[tuple[str, str]]:
        """Every acceptable (part media type, Transfer Syntax) for a part stored in
        ``stored_ts``, best first. A conversion the transcode worker then refuses for
        this object's pixels (JPEG Baseline for 16-bit data: retrieve cannot tell from
        the index) gives way to the next one, as HTTP negotiation would."""
        best: dict[tuple[str, str], tuple[float, bool, int]] = {}
        for w in self.wanted:
            ts = stored_ts if w.transfer_syntax == ANY else w.transfer_syntax
            media_type = w.media_type or self.natural_type(ts)
            if media_type != self.part_type and ts not in self.media_types[media_type]:
                if w.transfer_syntax != ANY or media_type not in self.defaults:
                    continue
                ts = self.defaults[media_type]  # Table 8.7.3-5: the type's default (D)
            if {(media_type, ts), (media_type, ANY)} & self.excluded:
                continue
            if ts != stored_ts and not convertible(stored_ts, ts):
                continue
            key = (-w.q, ts != stored_ts, w.order)
            if (media_type, ts) not in best or key < best[(media_type, ts)]:
                best[(media_type, ts)] = key
        return sorted(best, key=best.__getitem__)

    def choose(self, stored_ts: str, convertible: Callable[[str, str], bool]) -> str | None:
        """The Transfer Syntax to send a part stored in ``stored_ts``; None: not acceptable."""
        chosen = self.choose_part(stored_ts, convertible)
        return None if chosen is None else chosen[1]

    def not_acceptable(self, stored: Iterable[str], noun: str = "instance") -> NotAcceptable:
        """A 406 saying what was asked and what is stored."""
        response = f'multipart/related; type="{self.part_type}"'
        if not self.wanted:
            if self.bare_part_type:
                return NotAcceptable(
                    f"a part media type alone is not a WADO-RS response: {noun}s are returned"
                    f" as {response} (PS3.18 8.7.5); Accept was {describe(self.ranges)!r}"
                )
            return NotAcceptable(
                f"Accept {describe(self.ranges)!r} allows no representation of this resource;"
                f" it is available as {response}; transfer-syntax=*"
            )
        asked = sorted({_asked(w) for w in self.wanted})
        return NotAcceptable(
            f"Accept asks for multipart/related with {', '.join(asked)}; the {noun}"
            f" is stored as {', '.join(sorted(set(stored)))} and cannot be converted to it"
            f" (ask for transfer-syntax=* to get it as stored)"
        )


def _asked(w: _Wanted) -> str:
    media_type = f'type="{w.media_type}"' if w.media_type else "any type"
    return f"{media_type}; transfer-syntax={w.transfer_syntax}"


def metadata_media_type(ranges: list[AcceptRange]) -> str:
    """``application/dicom+json`` (or ``application/json`` when that is what was asked):
    the media types of WADO-RS metadata this service produces (PS3.18 10.4.1.2)."""
    excluded = {r.essence for r in ranges if r.q == 0}
    xml = False
    for r in ranges:
        if r.q <= 0:
            continue
        if r.essence == "application/json" and r.essence not in excluded:
            return "application/json"
        if r.matches(DICOM_JSON) and DICOM_JSON not in excluded:
            return DICOM_JSON
        xml = xml or "xml" in r.essence or "xml" in r.params.get("type", "")
    reason = "metadata is available as application/dicom+json only"
    if xml:
        reason = "application/dicom+xml metadata is not supported; ask for application/dicom+json"
    raise NotAcceptable(f"{reason} (Accept was {describe(ranges)!r})")
