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

Higher ``q`` wins; between equal ``q`` the representation that needs no conversion wins.
A ``q=0`` range naming the part type excludes its Transfer Syntax (``*``: all of them).
The ``accept`` query parameter, when present, replaces the Accept header (8.3.3.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.requests import Request

from tessera.retrieve.transcoding import EXPLICIT_VR_LITTLE_ENDIAN
from tessera.shared.errors import BadRequest, NotAcceptable
from tessera.shared.http import DICOM_JSON
from tessera.shared.mediatypes import AcceptRange, parse_accept, parse_media_type

DEFAULT_TRANSFER_SYNTAX = EXPLICIT_VR_LITTLE_ENDIAN
ANY = "*"


def accept_ranges(request: Request) -> list[AcceptRange]:
    """The request's acceptable media types, best first (PS3.18 8.3.3.1, 8.7.5)."""
    values = request.query_params.getlist("accept")
    ranges = parse_accept(", ".join(values) if values else request.headers.get("accept"))
    if not ranges:
        raise NotAcceptable("the Accept header has no valid media range")
    return ranges


def describe(ranges: Iterable[AcceptRange]) -> str:
    return ", ".join(str(r) for r in ranges)


@dataclass(frozen=True, slots=True)
class _Wanted:
    transfer_syntax: str  # ANY: as stored
    q: float
    order: int


class PartNegotiation:
    """The Transfer Syntax to send parts of ``multipart/related; type=<part_type>`` in."""

    def __init__(self, ranges: list[AcceptRange], part_type: str) -> None:
        self.ranges = ranges
        self.part_type = part_type
        self.wanted: list[_Wanted] = []
        self.excluded: set[str] = set()
        self.bare_part_type = False
        for order, r in enumerate(ranges):
            ts = self._transfer_syntax(r)
            if ts is None:
                continue
            if r.q > 0:
                self.wanted.append(_Wanted(ts, r.q, order))
            elif r.essence == "multipart/related" and "type" in r.params:
                self.excluded.add(ts)

    def _transfer_syntax(self, r: AcceptRange) -> str | None:
        if r.essence in ("*/*", "multipart/*"):
            return ANY
        if r.essence == self.part_type:
            self.bare_part_type = self.bare_part_type or r.q > 0
            return None
        if r.essence != "multipart/related":
            return None
        if "type" not in r.params:
            return r.params.get("transfer-syntax") or ANY
        try:
            inner = parse_media_type(r.params["type"])
        except BadRequest:
            return None
        if inner.essence != self.part_type:
            return None
        ts = r.params.get("transfer-syntax") or inner.params.get("transfer-syntax")
        return ts or DEFAULT_TRANSFER_SYNTAX

    def choose(self, stored_ts: str, convertible: Callable[[str, str], bool]) -> str | None:
        """The Transfer Syntax to send a part stored in ``stored_ts``; None: not acceptable."""
        best: tuple[float, bool, int] | None = None
        chosen = None
        for w in self.wanted:
            ts = stored_ts if w.transfer_syntax == ANY else w.transfer_syntax
            if ts in self.excluded or ANY in self.excluded:
                continue
            if ts != stored_ts and not convertible(stored_ts, ts):
                continue
            key = (-w.q, ts != stored_ts, w.order)
            if best is None or key < best:
                best, chosen = key, ts
        return chosen

    def not_acceptable(self, stored: Iterable[str], noun: str = "instance") -> NotAcceptable:
        """A 406 saying what was asked and what is stored."""
        response = f'multipart/related; type="{self.part_type}"'
        if not self.wanted:
            if self.bare_part_type:
                return NotAcceptable(
                    f"{self.part_type} alone is not a WADO-RS response: {noun}s are returned"
                    f" as {response} (PS3.18 8.7.5); Accept was {describe(self.ranges)!r}"
                )
            return NotAcceptable(
                f"Accept {describe(self.ranges)!r} allows no representation of this resource;"
                f" it is available as {response}; transfer-syntax=*"
            )
        asked = sorted({w.transfer_syntax for w in self.wanted})
        return NotAcceptable(
            f"Accept asks for {response} with transfer-syntax {', '.join(asked)}; the {noun}"
            f" is stored as {', '.join(sorted(set(stored)))} and cannot be converted to it"
            f" (ask for transfer-syntax=* to get it as stored)"
        )


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
