"""The router's QIDO merge: the shard order recomputed from DICOM JSON, owners, paging."""

from __future__ import annotations

import random

import pytest

from tessera.router.qido_fanout import ShardPage, merge, order_key
from tessera.shared.qido.attributes import Level


def _study(uid: str, date: str = "", time: str = "") -> dict:
    row: dict = {"0020000D": {"vr": "UI", "Value": [uid]}}
    row["00080020"] = {"vr": "DA", "Value": [date]} if date else {"vr": "DA"}
    if time:
        row["00080030"] = {"vr": "TM", "Value": [time]}  # absent when empty (Type C-like)
    return row


def _uid(row: dict) -> str:
    return row["0020000D"]["Value"][0]


def test_studies_newest_first_then_uid_descending_in_byte_order() -> None:
    rows = [
        _study("1.2.3", "20240101", "120000"),
        _study("1.2.29", "20240101", "120000"),
        _study("1.2.9", "20240101", "120000"),
        _study("1.2.4", "20240102"),
        _study("1.2.5"),  # no date: last, as '' sorts last descending
        _study("1.2.6", "20240101", "1200"),  # TM as written: "1200" < "120000"
        _study("1.2.7", "20240101", "120000.5"),
    ]
    ordered = sorted(rows, key=lambda r: order_key(Level.STUDY, r))
    assert [_uid(r) for r in ordered] == [
        "1.2.4",
        "1.2.7",
        "1.2.9",  # "1.2.9" > "1.2.3" > "1.2.29" byte by byte
        "1.2.3",
        "1.2.29",
        "1.2.6",
        "1.2.5",
    ]


def _series(study: str, uid: str, number: object) -> dict:
    row = _study(study, "20240101")
    row["0020000E"] = {"vr": "UI", "Value": [uid]}
    row["00200011"] = {"vr": "IS", "Value": [number]} if number is not None else {"vr": "IS"}
    return row


def test_series_by_number_as_integer_then_text_then_uid_with_empty_numbers_last() -> None:
    rows = [
        _series("1.1", "1.1.5", None),
        _series("1.1", "1.1.4", 10),
        _series("1.1", "1.1.3", 2),
        _series("1.1", "1.1.2", 2),
        _series("1.1", "1.1.1", "1234567890"),  # 10 digits: not an integer in the SQL
    ]
    ordered = sorted(rows, key=lambda r: order_key(Level.SERIES, r))
    assert [r["0020000E"]["Value"][0] for r in ordered] == [
        "1.1.2",
        "1.1.3",
        "1.1.4",
        "1.1.5",  # NULL integer: text '' sorts before '1234567890'
        "1.1.1",
    ]


def test_instances_by_number_within_their_series() -> None:
    def inst(sop: str, number: object) -> dict:
        row = _series("1.1", "1.1.1", 1)
        row["00080018"] = {"vr": "UI", "Value": [sop]}
        row["00200013"] = {"vr": "IS", "Value": [number]}
        return row

    rows = [inst("9", 3), inst("8", " 1"), inst("7", "x"), inst("6", 1)]
    ordered = sorted(rows, key=lambda r: order_key(Level.INSTANCE, r))
    # " 1" and 1 are both the integer 1; then the text decides: " 1" < "1" (space first)
    assert [r["00080018"]["Value"][0] for r in ordered] == ["8", "6", "9", "7"]


def _pages(rows: list[dict], shards: list[str], place: dict[str, str]) -> list[ShardPage]:
    pages = {s: ShardPage(s) for s in shards}
    for row in rows:
        pages[place[_uid(row)]].rows.append(row)
    for page in pages.values():
        page.rows.sort(key=lambda r: order_key(Level.STUDY, r))
    return list(pages.values())


@pytest.mark.parametrize("seed", range(5))
def test_merged_pages_equal_the_pages_of_one_shard(seed: int) -> None:
    rng = random.Random(seed)
    dates = ["20240101", "20240102", ""]
    rows = [_study(f"1.2.{i}", rng.choice(dates), rng.choice(["", "0800"])) for i in range(40)]
    oracle = sorted(rows, key=lambda r: order_key(Level.STUDY, r))
    shards = ["a", "b", "c"]
    place = {_uid(r): rng.choice(shards) for r in rows}
    for limit in (1, 7, 40):
        for offset in range(0, 45, limit):
            # each shard answers its first offset+limit rows, as asked
            pages = _pages(rows, shards, place)
            for page in pages:
                page.remaining = max(0, len(page.rows) - (offset + limit))
                page.rows = page.rows[: offset + limit]
            got, remaining = merge(pages, Level.STUDY, place.__getitem__, offset, limit)
            assert got == oracle[offset : offset + limit]
            assert remaining == max(0, len(rows) - offset - len(got))


def test_rows_of_a_study_owned_by_another_shard_are_dropped() -> None:
    moving = _study("1.2.1", "20240101")
    pages = [ShardPage("a", [moving, _study("1.2.2")]), ShardPage("b", [moving])]
    got, _ = merge(pages, Level.STUDY, {"1.2.1": "b", "1.2.2": "a"}.__getitem__, 0, 10)
    assert [_uid(r) for r in got] == ["1.2.1", "1.2.2"]  # once, from its owner


def test_an_offset_past_the_end_is_an_empty_page() -> None:
    pages = [ShardPage("a", [_study("1.2.1")])]
    assert merge(pages, Level.STUDY, lambda uid: "a", 5, 10) == ([], 0)
