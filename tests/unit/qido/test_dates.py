"""Date and time range arithmetic (PS3.4 C.2.2.2.5, C.2.2.2.5.1; PS3.5 6.2 DT offsets)."""

from __future__ import annotations

import pytest

from tessera.shared.qido.dates import combined_bounds, upper_bound, utc_bounds
from tessera.shared.qido.params import AnyOf, Range, Single, Universal


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        # no offset in the query: compared as written
        ("2024", "2025", None),
        # the offset moves the bound to UTC; the upper bound covers its whole unit
        ("20240101120000+0100", "", ("20240101110000.000000", None, "+0100")),
        ("", "202402+0000", (None, "20240229235959.999999", "+0000")),
        ("2024-0500", "", ("20240101050000.000000", None, "-0500")),
        # a bound without an offset takes the other's
        ("20240101+0200", "20240102", ("20231231220000.000000", "20240102215959.999999", "+0200")),
        ("20240101120000.5+0000", "", ("20240101120000.500000", None, "+0000")),
    ],
)
def test_utc_bounds(low, high, expected):
    assert utc_bounds(low, high) == expected


def test_impossible_dates_are_value_errors():
    with pytest.raises(ValueError):
        utc_bounds("20241340+0000", "")


@pytest.mark.parametrize(
    ("high", "vr", "bound"),
    [
        ("2024", "DT", "20241231235959.999999"),
        ("20240101120000+0100", "DT", "20240101120000.999999"),
    ],
)
def test_upper_bound_of_datetimes(high, vr, bound):
    assert upper_bound(high, vr) == bound


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        # C.2.2.2.5.1: <date1>-<date2> with <time1>-<time2> is date1 time1 to date2 time2
        (Range("20240101", "20240131"), Range("0800", "1700"),
         (("20240101", "0800"), ("20240131", "170059.999999"))),
        # a single date is the range of itself
        (Single("20240101"), Range("0800", ""),
         (("20240101", "0800"), ("20240101", "235959.999999"))),
        # an open date end stays open, whatever the time says
        (Range("", "20240131"), Range("0800", "1700"), (None, ("20240131", "170059.999999"))),
        (Range("20240101", ""), Single("0800"), (("20240101", "0800"), None)),
        # not combined: two single values, a list, universal matching
        (Single("20240101"), Single("0800"), None),
        (AnyOf((Single("20240101"), Single("20240102"))), Range("0800", ""), None),
        (Range("20240101", ""), Universal(), None),
    ],
)  # fmt: skip
def test_combined_bounds(date, time, expected):
    assert combined_bounds(date, time) == expected
