"""Byte ranges of a bulk data value: the ``Range`` and ``If-Range`` request header fields
(RFC 9110 14.1-14.4, 13.1.5), pure functions so they can be tested without a server.

PS3.18 (2016b 6.5.5.2.1, WADO-RS Bulk Data Response): "If the Range header is specified
in the request, the server shall return only the specified bytes of the bulk data
object", citing RFC 7233 (now RFC 9110 14). The ranges count bytes of the *value*;
:mod:`tessera.retrieve.bulkdata` says how they sit in the multipart answer.

What :func:`requested_ranges` decides, per RFC 9110:

* no ``Range``, a unit other than ``bytes``, or a malformed range set (a ``last-pos``
  before its ``first-pos``, a non-number): ``None``, the whole value, 200 (14.2: a
  server MAY ignore an invalid ranges-specifier, and MUST ignore an unknown unit);
* an ``If-Range`` that is not our entity tag by strong comparison (a weak tag, another
  tag, or an HTTP-date, since bulk data answers carry no Last-Modified): ``None``, 200
  (13.1.5);
* a zero-length value: ``None`` (nothing to cut; the empty value is sent whole);
* no satisfiable range (every ``first-pos`` at or past the end, or ``-0``):
  :class:`NotSatisfiable`, 416 with ``Content-Range: bytes */<length>`` (15.5.17);
* otherwise the satisfiable ranges, in the order asked, ``last-pos`` clipped to the
  end and suffix ranges longer than the value taken as the whole value (14.1.1).
  Overlapping ranges, or ranges closer than :data:`COALESCE_GAP` bytes, are sorted and
  merged (14.2 allows coalescing them "regardless of the order"); more than
  :data:`MAX_RANGES` ranges left are served as the one range covering them, so many tiny
  ranges cost one read, not one read each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Merging two ranges this close costs less than a part's boundary and headers would.
COALESCE_GAP = 80
MAX_RANGES = 16
MAX_HEADER = 4096  # a longer Range field is ignored (RFC 9110 14.2: likely an attack)

Spec = tuple[int | None, int | None]  # (first-pos, last-pos); (None, n) is "-n"


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` of a value, both included (RFC 9110 14.1.2)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, complete_length: int) -> str:
        """The ``Content-Range`` field value of this range (RFC 9110 14.4)."""
        return f"bytes {self.start}-{self.end}/{complete_length}"


class NotSatisfiable(Exception):
    """No range of the request lies within the value (answer 416)."""

    def __init__(self, complete_length: int) -> None:
        super().__init__(f"no requested range lies within the {complete_length} bytes")
        self.complete_length = complete_length

    @property
    def content_range(self) -> str:
        return f"bytes */{self.complete_length}"


def parse_range(value: str | None) -> list[Spec] | None:
    """The range specs of a ``Range`` field value, or None when it is absent, another
    unit, or malformed (RFC 9110 14.1.1 ``ranges-specifier``, 14.2)."""
    if value is None or len(value) > MAX_HEADER:
        return None
    unit, eq, range_set = value.partition("=")
    if not eq or unit.lower() != "bytes":  # no whitespace around "=" (14.1.1)
        return None
    specs: list[Spec] = []
    for element in range_set.split(","):
        element = element.strip(" \t")
        if not element:  # empty list elements are allowed (RFC 9110 5.6.1)
            continue
        first, dash, last = element.partition("-")
        if not dash or not _digits(last, allow_empty=bool(first)):
            return None
        if not first:
            specs.append((None, int(last)))
            continue
        if not _digits(first, allow_empty=False):
            return None
        if last and int(last) < int(first):
            return None
        specs.append((int(first), int(last) if last else None))
    return specs or None


def _digits(text: str, *, allow_empty: bool) -> bool:
    return (allow_empty and not text) or (text.isascii() and text.isdigit())


def resolve(specs: Sequence[Spec], complete_length: int) -> list[ByteRange]:
    """The satisfiable specs as ranges of a value of ``complete_length`` bytes, in order
    (RFC 9110 14.1.1, 14.1.2)."""
    out = []
    for first, last in specs:
        if first is None:
            suffix = last or 0
            if suffix > 0 and complete_length > 0:
                out.append(ByteRange(max(complete_length - suffix, 0), complete_length - 1))
        elif first < complete_length:
            end = complete_length - 1 if last is None else min(last, complete_length - 1)
            out.append(ByteRange(first, end))
    return out


def coalesce(ranges: Sequence[ByteRange], gap: int = COALESCE_GAP) -> list[ByteRange]:
    """``ranges`` as asked when they are apart; sorted and merged when any two overlap or
    are closer than ``gap`` bytes; one covering range past :data:`MAX_RANGES`."""
    ordered = sorted(ranges, key=lambda r: r.start)
    merged: list[ByteRange] = []
    for r in ordered:
        if merged and r.start <= merged[-1].end + 1 + gap:
            merged[-1] = ByteRange(merged[-1].start, max(merged[-1].end, r.end))
        else:
            merged.append(r)
    result = list(ranges) if len(merged) == len(ranges) else merged
    if len(result) > MAX_RANGES:
        return [ByteRange(merged[0].start, max(r.end for r in merged))]
    return result


def if_range_holds(if_range: str | None, etag: str) -> bool:
    """True when there is no ``If-Range``, or it is ``etag`` by strong comparison (both
    strong and the same opaque tag, RFC 9110 8.8.3.2, 13.1.5). A date never holds: bulk
    data answers have no Last-Modified to compare it with."""
    if if_range is None:
        return True
    tag = if_range.strip()
    return tag.startswith('"') and not etag.startswith("W/") and tag == etag


def requested_ranges(
    range_field: str | None, if_range: str | None, etag: str, complete_length: int
) -> list[ByteRange] | None:
    """The ranges to send (206), or None for the whole value (200); raises
    :class:`NotSatisfiable` (416). See the module docstring."""
    specs = parse_range(range_field)
    if specs is None or not if_range_holds(if_range, etag) or complete_length == 0:
        return None
    ranges = resolve(specs, complete_length)
    if not ranges:
        raise NotSatisfiable(complete_length)
    return coalesce(ranges)
