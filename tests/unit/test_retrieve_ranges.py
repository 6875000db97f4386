"""Range / If-Range parsing and selection (RFC 9110 14.1-14.4, 13.1.5) for bulk data."""

from __future__ import annotations

import pytest

from tessera.retrieve.ranges import (
    COALESCE_GAP,
    MAX_RANGES,
    ByteRange,
    NotSatisfiable,
    coalesce,
    if_range_holds,
    parse_range,
    requested_ranges,
    resolve,
)

ETAG = '"0123abcd"'


@pytest.mark.parametrize(
    ("field", "specs"),
    [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=500-", [(500, None)]),
        ("bytes=-500", [(None, 500)]),
        ("bytes=0-0,-1", [(0, 0), (None, 1)]),
        ("BYTES=1-2, ,4-5", [(1, 2), (4, 5)]),  # unit is case-insensitive; empty elements
        ("bytes=1-2,\t4-5", [(1, 2), (4, 5)]),
    ],
)
def test_parse_range_valid(field, specs):
    assert parse_range(field) == specs


@pytest.mark.parametrize(
    "field",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=5-1",  # last-pos before first-pos: invalid (14.1.1)
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=+1-2",
        "bytes=1 -2",
        "bytes =1-2",  # no whitespace around "=" in ranges-specifier (14.1.1)
        "bytes=0-1,x",
        "items=0-1",  # a unit we do not know: ignored (14.2)
        "bytes=" + ",".join(["0-1"] * 2000),  # longer than any sane client sends
        "bytes=١-٢",  # non-ASCII digits
    ],
)
def test_parse_range_ignored(field):
    assert parse_range(field) is None


def test_resolve_clips_and_drops_unsatisfiable():
    specs = [(0, 9), (95, 200), (100, None), (None, 10), (None, 500), (None, 0), (50, None)]
    assert resolve(specs, 100) == [
        ByteRange(0, 9),
        ByteRange(95, 99),  # last-pos past the end is the end
        ByteRange(90, 99),
        ByteRange(0, 99),  # a suffix longer than the value is the whole value
        ByteRange(50, 99),
    ]
    assert resolve([(100, 101), (None, 0)], 100) == []


def test_byte_range_content_range():
    r = ByteRange(10, 19)
    assert (r.length, r.content_range(100)) == (10, "bytes 10-19/100")
    assert NotSatisfiable(100).content_range == "bytes */100"


def test_coalesce_keeps_order_of_apart_ranges():
    apart = [ByteRange(1000, 1099), ByteRange(0, 99)]
    assert coalesce(apart) == apart


def test_coalesce_merges_overlapping_and_close_ranges():
    assert coalesce([ByteRange(500, 599), ByteRange(0, 99), ByteRange(50, 149)]) == [
        ByteRange(0, 149),
        ByteRange(500, 599),
    ]
    close = [ByteRange(0, 99), ByteRange(100 + COALESCE_GAP, 300)]
    assert coalesce(close) == [ByteRange(0, 300)]


def test_coalesce_many_small_ranges_into_one():
    many = [ByteRange(i * 1000, i * 1000 + 1) for i in range(MAX_RANGES + 1)]
    assert coalesce(many) == [ByteRange(0, MAX_RANGES * 1000 + 1)]
    assert coalesce(many[:MAX_RANGES]) == many[:MAX_RANGES]


@pytest.mark.parametrize(
    ("if_range", "holds"),
    [
        (None, True),
        (ETAG, True),
        (f" {ETAG} ", True),
        ('"other"', False),
        (f"W/{ETAG}", False),  # weak tags never match strongly (13.1.5)
        ("Wed, 21 Oct 2015 07:28:00 GMT", False),  # no Last-Modified to compare with
    ],
)
def test_if_range(if_range, holds):
    assert if_range_holds(if_range, ETAG) is holds
    assert if_range_holds(ETAG, f"W/{ETAG}") is False


def test_requested_ranges():
    assert requested_ranges(None, None, ETAG, 100) is None
    assert requested_ranges("bytes=9-0", None, ETAG, 100) is None  # malformed: 200
    assert requested_ranges("bytes=0-9", '"stale"', ETAG, 100) is None  # stale If-Range
    assert requested_ranges("bytes=0-9", ETAG, ETAG, 100) == [ByteRange(0, 9)]
    assert requested_ranges("bytes=-10", None, ETAG, 100) == [ByteRange(90, 99)]
    assert requested_ranges("bytes=0-9", None, ETAG, 0) is None  # nothing to cut
    with pytest.raises(NotSatisfiable) as e:
        requested_ranges("bytes=100-", None, ETAG, 100)
    assert e.value.content_range == "bytes */100"
    # one satisfiable range among unsatisfiable ones is served alone
    assert requested_ranges("bytes=200-300,5-6", None, ETAG, 100) == [ByteRange(5, 6)]
