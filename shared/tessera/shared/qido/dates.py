"""Date and time range arithmetic for QIDO-RS matching (PS3.4 C.2.2.2.5).

* An upper bound covers the whole of its last given unit: TM ``10`` is up to
  ``105959.999999``, DT ``2024`` up to the last microsecond of 2024 (:func:`upper_bound`).
* DT values may carry a UTC offset (``&ZZXX``, PS3.5 6.2). When a bound of the query
  does, both the bounds and the stored values are compared in UTC
  (:func:`utc_bounds`); a stored value without an offset is taken in the entity's
  Timezone Offset From UTC (0008,0201), or failing that in the query's offset. Without
  an offset in the query, values compare as written (local time), their offsets ignored.
* Combined date and time (C.2.2.2.5.1): a DA key and its TM partner (StudyDate and
  StudyTime...) given together, one of them a range, match as one datetime range from
  the lower date at the lower time to the upper date at the upper time
  (:func:`combined_bounds`).
"""

from __future__ import annotations

import datetime as dt
import re

from tessera.shared.qido.params import Matcher, Range, Single

# an upper bound is padded with the end of these to the full precision of its VR
_UPPER = {"TM": "235959.999999", "DT": "99991231235959.999999"}
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")
_OFFSET = re.compile(r"[+-]\d{4}$")
UTC_FORMAT = "%Y%m%d%H%M%S.%f"  # what tessera_dt_utc() gives: fixed width, sortable

# (date, time) pairs that C.2.2.2.5.1 combines, by tag
DATE_TIME_PAIRS = (
    ("00080020", "00080030"),  # StudyDate, StudyTime
    ("00080021", "00080031"),  # SeriesDate, SeriesTime
    ("00080022", "00080032"),  # AcquisitionDate, AcquisitionTime
    ("00080023", "00080033"),  # ContentDate, ContentTime
    ("00400244", "00400245"),  # PerformedProcedureStepStartDate, -Time
)


def upper_bound(high: str, vr: str) -> str:
    """An inclusive upper bound padded to full precision: TM ``10`` -> ``105959.999999``."""
    if vr == "DT":
        high = _OFFSET.sub("", high)  # compared as written; see utc_bounds for offsets
    full = _UPPER.get(vr, "")
    return high + full[len(high) :] if len(high) < len(full) else high


def strip_offset(value: str) -> str:
    return _OFFSET.sub("", value)


def has_offset(value: str) -> bool:
    return bool(_OFFSET.search(value))


def _parse(value: str) -> tuple[dt.datetime, dt.datetime, str | None]:
    """First and last microsecond a DT value covers (local), and its offset if any."""
    m = _DT.fullmatch(value)
    if m is None:
        raise ValueError(f"not a DT value: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    first = dt.datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(hour or 0),
        int(minute or 0),
        int(second or 0),
        int((fraction or "0").ljust(6, "0")),
    )
    if day is None:  # a year, or a year and month: up to the start of the next one
        if month is None:
            end = first.replace(year=first.year + 1)
        else:
            end = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return first, end - dt.timedelta(microseconds=1), offset
    if fraction is not None:
        step = dt.timedelta(microseconds=10 ** (6 - len(fraction)))
    elif second is not None:
        step = dt.timedelta(seconds=1)
    elif minute is not None:
        step = dt.timedelta(minutes=1)
    elif hour is not None:
        step = dt.timedelta(hours=1)
    else:
        step = dt.timedelta(days=1)
    return first, first + step - dt.timedelta(microseconds=1), offset


def _offset(text: str) -> dt.timedelta:
    sign = -1 if text[0] == "-" else 1
    return sign * dt.timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))


def utc_bounds(low: str, high: str) -> tuple[str | None, str | None, str] | None:
    """UTC forms of a DT range's bounds, and the offset for stored values that have none;
    None when neither bound has an offset (then values compare as written)."""
    offsets = [o for o in (_parse(b)[2] for b in (low, high) if b) if o]
    if not offsets:
        return None
    default = offsets[0]
    out: list[str | None] = []
    for bound, upper in ((low, False), (high, True)):
        if not bound:
            out.append(None)
            continue
        first, last, offset = _parse(bound)
        moment = (last if upper else first) - _offset(offset or default)
        out.append(moment.strftime(UTC_FORMAT))
    return out[0], out[1], default


def as_range(matcher: Matcher) -> Range | None:
    """A Single or Range matcher as a range (a single value is the range of itself)."""
    if isinstance(matcher, Range):
        return matcher
    if isinstance(matcher, Single):
        return Range(matcher.value, matcher.value)
    return None


def combined_bounds(
    date: Matcher, time: Matcher
) -> tuple[tuple[str, str] | None, tuple[str, str] | None] | None:
    """The (date, time) lower and upper bounds of C.2.2.2.5.1 combined matching, or None
    when the pair is not combined (not both single values or ranges, or neither a range).

    A time bound applies only with its date bound: ``-20240131`` with ``1000-1800`` is
    everything up to 2024-01-31 18:00; the open lower end stays open. An empty stored
    time counts as the start of its day."""
    if not (isinstance(date, Range) or isinstance(time, Range)):
        return None
    dates, times = as_range(date), as_range(time)
    if dates is None or times is None:
        return None
    low = (dates.low, times.low) if dates.low else None
    high = (dates.high, upper_bound(times.high, "TM")) if dates.high else None
    return low, high
