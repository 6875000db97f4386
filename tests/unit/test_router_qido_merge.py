"""The router's QIDO merge: shard answers read as spliced documents plus sort keys, the
shard order recomputed from DICOM JSON, owners, paging, and asking shards for their share."""

from __future__ import annotations

import json
import math
import random

import pytest

from tessera.router.qido_fanout import share
from tessera.router.qido_merge import (
    MalformedAnswer,
    Result,
    ShardPage,
    body,
    in_order,
    merge,
    parse_results,
)
from tessera.shared.qido.attributes import Level


def _study(uid: str, date: str = "", time: str = "") -> dict:
    row: dict = {"0020000D": {"vr": "UI", "Value": [uid]}}
    row["00080020"] = {"vr": "DA", "Value": [date]} if date else {"vr": "DA"}
    if time:
        row["00080030"] = {"vr": "TM", "Value": [time]}  # absent when empty (Type C-like)
    return row


def _results(rows: list[dict], level: Level = Level.STUDY, shard: str = "a") -> list[Result]:
    return parse_results(json.dumps(rows).encode(), level, shard)


def _docs(results: list[Result]) -> list[dict]:
    return json.loads(body(results))


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
    ordered = _docs(in_order(_results(rows)))
    assert [_uid(r) for r in ordered] == [
        "1.2.4",
        "1.2.7",
        "1.2.9",  # "1.2.9" > "1.2.3" > "1.2.29" byte by byte
        "1.2.3",
        "1.2.29",
        "1.2.6",
        "1.2.5",
    ]


def _series(study: str, uid: str, number: object, date: str = "20240101") -> dict:
    row = _study(study, date)
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
    ordered = _docs(in_order(_results(rows, Level.SERIES)))
    assert [r["0020000E"]["Value"][0] for r in ordered] == [
        "1.1.2",
        "1.1.3",
        "1.1.4",
        "1.1.5",  # NULL integer: text '' sorts before '1234567890'
        "1.1.1",
    ]


def test_series_of_studies_descending_then_their_series_ascending() -> None:
    rows = [
        _series("1.1", "1.1.2", 2, "20240101"),
        _series("1.2", "1.2.9", 9, "20240102"),
        _series("1.1", "1.1.1", 1, "20240101"),
        _series("1.2", "1.2.1", 1, "20240102"),
    ]
    ordered = _docs(in_order(_results(rows, Level.SERIES)))
    assert [r["0020000E"]["Value"][0] for r in ordered] == ["1.2.1", "1.2.9", "1.1.1", "1.1.2"]


def test_instances_by_number_within_their_series() -> None:
    def inst(sop: str, number: object) -> dict:
        row = _series("1.1", "1.1.1", 1)
        row["00080018"] = {"vr": "UI", "Value": [sop]}
        row["00200013"] = {"vr": "IS", "Value": [number]}
        return row

    rows = [inst("9", 3), inst("8", " 1"), inst("7", "x"), inst("6", 1)]
    ordered = _docs(in_order(_results(rows, Level.INSTANCE)))
    # " 1" and 1 are both the integer 1; then the text decides: " 1" < "1" (space first)
    assert [r["00080018"]["Value"][0] for r in ordered] == ["8", "6", "9", "7"]


# --- reading shard answers: exact document bytes, keys from the top level only ---------

# As PostgreSQL writes jsonb (", " and ": "), UTF-8 unescaped, with escapes of every kind,
# a nested sequence holding the very tags the merge reads (ReferencedStudySequence), and a
# PN value (PatientName is part of the patient key).
_TRICKY = (
    '{"00080020": {"vr": "DA", "Value": ["20240101"]}, '
    '"00081030": {"vr": "LO", "Value": '
    '["Th\\u00f6rax \\"\\u00e9t\\u00e9\\" \\\\ a/b \\n\\t}]{[,"]}, '
    '"00081110": {"vr": "SQ", "Value": [{"0020000D": {"vr": "UI", "Value": ["9.9.9"]}, '
    '"00080020": {"vr": "DA", "Value": ["29991231"]}, "00081110": {"vr": "SQ", "Value": '
    '[{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Nested^Name"}]}}]}}]}, '
    '"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^José", "Ideographic": '
    '"山田^太郎", "Phonetic": "\\ud83d\\ude00"}]}, '
    '"00100020": {"vr": "LO", "Value": ["ID\\u0001\\"1"]}, '
    '"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, '
    '"00201206": {"vr": "IS", "Value": [3]}}'
)


def test_documents_are_spliced_byte_for_byte_and_keys_read_at_the_top_level() -> None:
    plain = json.dumps(_study("1.2.4", "20231231", "0800"), ensure_ascii=False)
    answer = ("[" + _TRICKY + "," + plain + "]").encode()
    results = parse_results(answer, Level.STUDY, "a")
    assert [bytes(r.document) for r in results] == [_TRICKY.encode(), plain.encode()]
    tricky = results[0]
    assert tricky.study_uid == "1.2.3"  # not the nested 9.9.9
    assert tricky.study_key == ("20240101", "", "1.2.3")
    assert body(results) == answer  # the array as the shard sent it
    assert json.loads(body(in_order(results))) == [json.loads(_TRICKY), json.loads(plain)]


def test_any_json_layout_of_the_array_is_read() -> None:
    rows = [_study("1.2.1", "20240101"), _series("1.2.2", "1.2.2.1", 1)]
    pretty = json.dumps(rows, indent=3, ensure_ascii=True).encode()
    results = parse_results(b" \r\n" + pretty + b"\n", Level.STUDY, "a")
    assert [json.loads(bytes(r.document)) for r in results] == rows
    assert json.loads(body(results)) == rows
    assert parse_results(b"[]", Level.STUDY, "a") == []
    assert parse_results(b"[ ]", Level.STUDY, "a") == []


@pytest.mark.parametrize(
    "answer",
    [
        b"",
        b"{}",
        b"[1]",
        b'["x"]',
        b"[{}, 2]",
        b'[{"0020000D": {"vr": "UI", "Value": ["1.2"]}}',  # truncated
        b'[{"0020000D": "1.2"}]',  # not a DICOM JSON attribute
        b'[{"0020000D": {"vr": "UI", "Value": "1.2"}}]',
        b"[{}] trailing",
    ],
)
def test_a_malformed_answer_is_refused(answer: bytes) -> None:
    with pytest.raises(MalformedAnswer):
        parse_results(answer, Level.STUDY, "a")


def test_a_replaced_document_is_sent_instead() -> None:
    (result,) = parse_results(b"[" + _TRICKY.encode() + b"]", Level.STUDY, "a")
    document = result.decoded()
    document["00201200"] = {"vr": "IS", "Value": [7]}
    result.replace(document)
    assert json.loads(body([result])) == [document]
    assert "Müller".encode() in bytes(result.document)  # UTF-8, not \u escapes


# --- merging and paging ------------------------------------------------------------------


def _shard_lists(
    rows: list[dict], place: dict[str, str], copies: dict[str, str]
) -> dict[str, list[dict]]:
    """Each shard's matches in its order: its own studies, plus copies being moved."""
    held: dict[str, list[dict]] = {}
    for row in rows:
        held.setdefault(place[_uid(row)], []).append(row)
        if _uid(row) in copies:
            held.setdefault(copies[_uid(row)], []).append(row)
    return {s: _docs(in_order(_results(r, shard=s))) for s, r in held.items()}


def _fan_out(
    held: dict[str, list[dict]],
    owner: dict[str, str],
    offset: int,
    limit: int,
    first: int,
    max_limit: int,
    server_limited: bool,
) -> tuple[list[dict], int, int]:
    """The fan-out's rounds against shards that answer like the index service: the page,
    the remaining count, and the results asked of the shards in all."""
    pages = {s: ShardPage(s) for s in held}
    asks = {s: max_limit if server_limited else first for s in held}
    asked = 0
    while True:
        for shard, size in asks.items():
            page = pages[shard]
            start = len(page.results)
            answer = held[shard][start : start + min(size, max_limit)]
            page.results += _results(answer, shard=shard)
            left = len(held[shard]) - start - len(answer)
            page.remaining = left if server_limited and size == max_limit else 0
            page.complete = len(answer) < size and not page.remaining
            asked += size
        merged = merge(pages.values(), owner.__getitem__, offset, limit, server_limited)
        if not merged.wanting:
            return _docs(merged.page), merged.remaining, asked
        asks = {
            s: max_limit if server_limited else min(max_limit, n) for s, n in merged.wanting.items()
        }


@pytest.mark.parametrize("seed", range(6))
def test_merged_pages_equal_the_pages_of_one_shard(seed: int) -> None:
    rng = random.Random(seed)
    dates = ["20240101", "20240102", ""]
    rows = [_study(f"1.2.{i}", rng.choice(dates), rng.choice(["", "0800"])) for i in range(40)]
    oracle = _docs(in_order(_results(rows)))
    shards = ["a", "b", "c"]
    place = {_uid(r): rng.choice(shards) for r in rows}
    # a few studies in the middle of a move: a copy on another shard, not its owner's
    copies = {
        u: rng.choice([s for s in shards if s != place[u]]) for u in rng.sample(sorted(place), 6)
    }
    held = _shard_lists(rows, place, copies)
    for limit in (1, 7, 40):
        for offset in range(0, 45, limit):
            for first in (1, 3, share(offset + limit, 3), offset + limit):
                got, _, _ = _fan_out(held, place, offset, limit, first, 1000, False)
                assert got == oracle[offset : offset + limit], (limit, offset, first)
            # the server maximum decides the page: full pages, and the count of the rest
            got, remaining, _ = _fan_out(held, place, offset, limit, 0, limit, True)
            assert got == oracle[offset : offset + limit]
            # a shard's count of its remaining matches includes its copies: never less
            assert remaining >= max(0, len(rows) - offset - len(got))


def test_the_remaining_count_is_exact_without_copies() -> None:
    rng = random.Random(1)
    rows = [_study(f"1.3.{i}", rng.choice(["20240101", ""])) for i in range(30)]
    place = {_uid(r): rng.choice("abc") for r in rows}
    held = _shard_lists(rows, place, {})
    for offset in (0, 4, 12, 29, 35):
        got, remaining, _ = _fan_out(held, place, offset, 4, 0, 4, True)
        assert remaining == max(0, 30 - offset - len(got))


def test_a_shards_share_is_asked_first_and_rarely_more() -> None:
    rng = random.Random(3)
    rows = [_study(f"1.4.{i}", f"2024{rng.randrange(1, 13):02}01") for i in range(2000)]
    shards = ["a", "b", "c", "d"]
    place = {_uid(r): rng.choice(shards) for r in rows}
    held = _shard_lists(rows, place, {})
    oracle = _docs(in_order(_results(rows)))
    got, _, asked = _fan_out(held, place, 0, 101, share(101, 4), 1000, False)
    assert got == oracle[:101]
    assert asked == 4 * share(101, 4) < 2 * 101  # one round, 45 of each instead of 101


def test_share_is_rarely_exceeded() -> None:
    def beyond(need: int, shards: int, asked: int) -> float:
        """P(more than ``asked`` of the first ``need`` results are on one shard)."""
        p = 1 / shards
        return sum(
            math.comb(need, k) * p**k * (1 - p) ** (need - k) for k in range(asked + 1, need + 1)
        )

    assert share(101, 1) == 101 and share(0, 4) == 0 and share(1, 4) == 1
    assert share(101, 4) == 45 and share(101, 2) == 73
    for shards in (2, 3, 4, 8):
        for need in (1, 10, 50, 101, 500, 1000):
            assert share(need, shards) <= need
            assert beyond(need, shards, share(need, shards)) < 1e-4, (need, shards)


def test_rows_of_a_study_owned_by_another_shard_are_dropped() -> None:
    moving = _study("1.2.1", "20240101")
    pages = [
        ShardPage("a", _results([moving, _study("1.2.2")], shard="a"), complete=True),
        ShardPage("b", _results([moving], shard="b"), complete=True),
    ]
    merged = merge(pages, {"1.2.1": "b", "1.2.2": "a"}.__getitem__, 0, 10)
    assert [r.shard for r in merged.page] == ["b", "a"]  # once, from its owner
    assert [_uid(r) for r in _docs(merged.page)] == ["1.2.1", "1.2.2"]
    assert merged.wanting == {}


def test_a_shard_is_wanting_only_while_its_next_results_may_belong_in_the_page() -> None:
    a = _results([_study("1.5.9", "20240109"), _study("1.5.8", "20240108")], shard="a")
    b = _results([_study("1.5.7", "20240107"), _study("1.5.1", "20240101")], shard="b")
    owner = {"1.5.9": "a", "1.5.8": "a", "1.5.7": "b", "1.5.1": "b"}.__getitem__
    merged = merge([ShardPage("a", a), ShardPage("b", b)], owner, 0, 3)
    assert merged.wanting == {"a": 1}  # a's next might be newer than 1.5.7; b's are older
    merged = merge([ShardPage("a", a), ShardPage("b", b, complete=True)], owner, 0, 5)
    assert merged.wanting == {"a": 3}  # too few known: every shard that has more
    merged = merge([ShardPage("a", a, complete=True), ShardPage("b", b)], owner, 0, 2)
    assert merged.wanting == {} and len(merged.page) == 2


def test_an_offset_past_the_end_is_an_empty_page() -> None:
    pages = [ShardPage("a", _results([_study("1.2.1")]), complete=True)]
    merged = merge(pages, lambda uid: "a", 5, 10, count_remaining=True)
    assert (merged.page, merged.remaining, merged.wanting) == ([], 0, {})


def test_a_page_of_nothing_asks_nothing_more() -> None:
    pages = [ShardPage("a", _results([_study("1.2.1")]))]
    merged = merge(pages, lambda uid: "a", 0, 0, count_remaining=True)
    assert (merged.page, merged.remaining, merged.wanting) == ([], 1, {})
