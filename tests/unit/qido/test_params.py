"""QIDO-RS query parsing (PS3.18 8.3.4, 10.6.1; PS3.4 C.2.2.2 value forms); no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.shared.errors import QueryError
from tessera.shared.qido.params import (
    AnyOf,
    Level,
    QidoQuery,
    Range,
    Scope,
    Single,
    Universal,
    Wildcard,
    parse_matcher,
    parse_query,
    resolve_attribute,
)


def _parse(query: str, level: Level = Level.STUDY) -> QidoQuery:
    """A raw query string as starlette hands it over: split, percent-decoded."""
    from urllib.parse import parse_qsl

    return parse_query(parse_qsl(query, keep_blank_values=True), level)


def _matcher(query: str, level: Level = Level.STUDY):
    (key,) = _parse(query, level).matches
    return key.matcher


@pytest.mark.parametrize(
    ("name", "tag", "keyword", "vr"),
    [
        # PS3.18 8.3.4.1: attribute-id = tag / keyword (PS3.6 Table 6-1)
        ("PatientName", "00100010", "PatientName", "PN"),
        ("00100010", "00100010", "PatientName", "PN"),
        ("0020000d", "0020000D", "StudyInstanceUID", "UI"),  # hex digits in either case
        ("StudyDate", "00080020", "StudyDate", "DA"),
        ("00280106", "00280106", "SmallestImagePixelValue", "US"),  # "US or SS": first VR
        ("00091001", "00091001", "", "UN"),  # private: allowed, unknown VR
        ("60023000", "60023000", "OverlayData", "OB"),  # repeating group (PS3.5 7.6)
    ],
)
def test_attribute_by_keyword_or_tag(name, tag, keyword, vr):
    attribute = resolve_attribute(name)
    assert (attribute.tag, attribute.keyword, attribute.vr) == (tag, keyword, vr)


@pytest.mark.parametrize(
    "name",
    ["PatientsName", "patientname", "0010001", "001000100", "0010001G", "0010ABCD", ""],
)
def test_unknown_attribute_is_a_query_error_naming_it(name):
    with pytest.raises(QueryError) as caught:
        resolve_attribute(name)
    assert f"{name}:" in caught.value.reason


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # C.2.2.2.3 universal matching: empty value, and "*" alone (C.2.2.2.4)
        ("PatientName=", Universal()),
        ("PatientName=*", Universal()),
        ("StudyDate=", Universal()),
        # C.2.2.2.1 single value
        ("PatientName=Smith^John", Single("Smith^John")),
        ("PatientID=%20%2012%20", Single("12")),  # surrounding spaces are padding
        ("AccessionNumber=A-1", Single("A-1")),  # "-" is a range only for DA/TM/DT
        # C.2.2.2.4 wildcards
        ("PatientName=*smi*", Wildcard("*smi*")),
        ("PatientName=Sm?th", Wildcard("Sm?th")),
        # C.2.2.2.2 list of UIDs, backslash or comma (PS3.18 8.3.4.1 uid-list-match)
        ("StudyInstanceUID=1.2.3", Single("1.2.3")),
        ("StudyInstanceUID=1.2.3%5C1.2.4", AnyOf((Single("1.2.3"), Single("1.2.4")))),
        ("StudyInstanceUID=1.2.3,1.2.4", AnyOf((Single("1.2.3"), Single("1.2.4")))),
        # C.2.2.2.5 range matching, DA / TM / DT, closed and open
        ("StudyDate=20240101", Single("20240101")),
        ("StudyDate=20240101-20240131", Range("20240101", "20240131")),
        ("StudyDate=20240101-", Range("20240101", "")),
        ("StudyDate=-20240131", Range("", "20240131")),
        ("StudyDate=-", Universal()),
        ("StudyTime=0900-1000", Range("0900", "1000")),
        ("StudyTime=09:00-10:00", Range("0900", "1000")),  # ACR-NEMA separators
        ("StudyTime=093000.123", Single("093000.123")),
        # PS3.18 8.3.4.6 multiple value matching (on unless the request turns it off)
        ("ModalitiesInStudy=CT%5CMR", AnyOf((Single("CT"), Single("MR")))),
        ("ModalitiesInStudy=CT%5C*", Universal()),
        ("StudyDate=20240101%5C20240301-", AnyOf((Single("20240101"), Range("20240301", "")))),
    ],
)
def test_match_value_forms(query, expected):
    assert _matcher(query) == expected


def test_datetime_ranges_and_offsets():
    # a DT value with a negative UTC offset is one value, not a range
    assert parse_matcher("x", "20240101120000-0500", "DT") == Single("20240101120000-0500")
    assert parse_matcher("x", "2024-20250101", "DT") == Range("2024", "20250101")
    # an unescaped '+' in a query string arrives as a space
    assert parse_matcher("x", "20240101120000 0100", "DT") == Single("20240101120000+0100")


def test_multiplevaluematching_false_keeps_backslash_literal():
    query = _parse("AccessionNumber=A%5CB&multiplevaluematching=false")
    assert query.matches[0].matcher == Single("A\\B")
    assert query.multiplevaluematching is False


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("StudyDate=2024", "StudyDate"),  # not a DA
        ("StudyDate=2024*", "StudyDate"),  # no wildcards in dates (C.2.2.2.4)
        ("StudyTime=25h", "StudyTime"),
        ("StudyInstanceUID=1.2.*", "StudyInstanceUID"),  # no wildcards in UIDs
        ("NumberOfStudyRelatedSeries=3", "NumberOfStudyRelatedSeries"),  # return-only
        ("RetrieveURL=x", "RetrieveURL"),
        ("00400275.00400009=X", "00400275.00400009"),  # a series-level sequence (C.6.1.1)
        ("PatientName.PatientID=X", "not a sequence"),  # a path goes through sequences only
        ("00081110=X", "00081110"),  # a sequence itself has no value to match
        ("Modality=CT", "Modality"),  # series-level key in a study search (C.6.1.1)
        ("SOPInstanceUID=1.2", "SOPInstanceUID"),
        ("PatientName=A&PatientName=B", "PatientName"),  # each key once
        ("NoSuchKeyword=1", "NoSuchKeyword"),
        ("_=1699999999", "_"),  # jQuery's cache buster is not a DICOM attribute
    ],
)
def test_bad_match_keys_name_the_key(query, fragment):
    with pytest.raises(QueryError) as caught:
        _parse(query)
    assert fragment in caught.value.reason


def test_universal_match_on_a_return_only_key_just_returns_it():
    (key,) = _parse("NumberOfStudyRelatedSeries=").matches
    assert key.matcher == Universal()


@pytest.mark.parametrize(
    ("query", "level"),
    [
        # PS3.18 10.6.1.2 relational queries: higher-level keys at lower levels
        ("PatientName=Doe*", Level.SERIES),
        ("StudyDate=20240101-", Level.INSTANCE),
        ("Modality=CT", Level.INSTANCE),
        ("ImageType=ORIGINAL", Level.INSTANCE),
    ],
)
def test_keys_of_higher_levels_are_allowed(query, level):
    assert _parse(query, level).matches


def test_repeated_uid_keys_form_one_list():
    query = _parse("StudyInstanceUID=1.2&StudyInstanceUID=1.3%5C1.4")
    assert query.matches[0].matcher == AnyOf((Single("1.2"), Single("1.3"), Single("1.4")))


@pytest.mark.parametrize(
    ("query", "tags", "include_all"),
    [
        # PS3.18 8.3.4.3: repeated, comma-separated (%2C arrives decoded), keyword or tag
        ("includefield=00081030&includefield=Modality", ["00081030", "00080060"], False),
        ("includefield=00081030%2C00080060", ["00081030", "00080060"], False),
        ("includefield=StudyDescription,%20PatientAge", ["00081030", "00101010"], False),
        ("includefield=all", [], True),
        ("includefield=all&includefield=PatientAge", ["00101010"], True),
        ("includefield=", [], False),
        ("includefield=00091001", ["00091001"], False),  # private elements by tag
        ("includefield=00400275.00400009", ["00400275"], False),  # whole sequence
    ],
)
def test_includefield(query, tags, include_all):
    parsed = _parse(query)
    assert [a.tag for a in parsed.includefields] == tags
    assert parsed.include_all is include_all


def test_includefield_unknown_keyword_is_a_query_error():
    with pytest.raises(QueryError, match="PatientsAge"):
        _parse("includefield=PatientsAge")


@pytest.mark.parametrize(
    ("query", "limit", "offset"),
    [
        ("", None, 0),
        ("limit=10", 10, 0),
        ("limit=0&offset=5", 0, 5),
        ("offset=100", None, 100),
    ],
)
def test_limit_and_offset(query, limit, offset):
    parsed = _parse(query)
    assert (parsed.limit, parsed.offset) == (limit, offset)


@pytest.mark.parametrize(
    "query",
    ["limit=-1", "limit=ten", "offset=1.5", "limit=", "offset=%EF%BC%91", "limit=1&limit=2"],
)
def test_bad_paging_is_a_query_error(query):
    name = query.split("=")[0]
    with pytest.raises(QueryError, match=name):
        _parse(query)


@pytest.mark.parametrize(
    ("query", "fuzzy", "empty"),
    [
        ("", False, False),
        ("fuzzymatching=true", True, False),
        ("fuzzymatching=TRUE", True, False),
        ("fuzzymatching=false&emptyvaluematching=true", False, True),
    ],
)
def test_boolean_parameters(query, fuzzy, empty):
    parsed = _parse(query)
    assert (parsed.fuzzymatching, parsed.emptyvaluematching) == (fuzzy, empty)


@pytest.mark.parametrize("query", ["fuzzymatching=yes", "emptyvaluematching=1"])
def test_bad_boolean_is_a_query_error(query):
    with pytest.raises(QueryError, match=query.split("=")[0]):
        _parse(query)


def test_http_parameters_are_left_to_the_http_layer():
    # PS3.18 8.3.3: accept and charset are not match keys
    assert _parse("accept=application/dicom%2Bjson&charset=utf-8").matches == ()


def test_scope_and_level_are_kept():
    query = parse_query([], Level.INSTANCE, Scope("1.2", "1.2.3"))
    assert query.level is Level.INSTANCE
    assert query.scope == Scope("1.2", "1.2.3")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_value_of_a_text_key_parses_or_fails_with_query_error(value):
    try:
        parse_query([("StudyDescription", value), ("StudyDate", value)], Level.STUDY)
    except QueryError:
        pass


@given(st.from_regex(r"\d{8}", fullmatch=True), st.from_regex(r"\d{8}", fullmatch=True))
def test_any_date_range_parses(low, high):
    assert parse_matcher("StudyDate", f"{low}-{high}", "DA") == Range(low, high)


@pytest.mark.parametrize(
    "query",
    [
        # PS3.18 8.3.4.1 attribute paths, PS3.4 C.2.2.2.6 sequence matching
        "RequestAttributesSequence.RequestedProcedureID=RP1",
        "00400275.00401001=RP1",
        "RequestAttributesSequence.00401001=RP1",
    ],
)
def test_sequence_keys(query):
    (key,) = _parse(query, Level.SERIES).matches
    assert (key.attribute.tag, key.attribute.vr, key.attribute.level) == (
        "00400275",
        "SQ",
        Level.SERIES,
    )
    assert [a.tag for a in key.path] == ["00401001"]
    assert (key.leaf.vr, key.matcher) == ("SH", Single("RP1"))


def test_sequence_key_returns_the_sequence():
    query = _parse("00400275.00400009=", Level.SERIES)
    assert query.matches[0].matcher == Universal()


def test_extra_attributes_change_the_level_of_a_key():
    from tessera.shared.levels import Layout

    layout = Layout.parse(["study:BodyPartExamined"])
    (key,) = parse_query([("BodyPartExamined", "HEAD")], Level.STUDY, layout=layout).matches
    assert key.attribute.level is Level.STUDY
    with pytest.raises(QueryError, match="series-level"):
        parse_query([("BodyPartExamined", "HEAD")], Level.STUDY)


@pytest.mark.parametrize(
    "items", [[("PatientName", "a\x00b")], [("Patient\x00Name", "x")], [("includefield", "\x00")]]
)
def test_a_nul_character_is_400_not_a_database_error(items: list[tuple[str, str]]) -> None:
    """Issue 15: ``?PatientName=a%00b`` answered 500 from asyncpg."""
    with pytest.raises(QueryError, match="NUL"):
        parse_query(items, Level.STUDY)
