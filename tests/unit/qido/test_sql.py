"""QIDO-RS SQL building (PS3.4 C.2.2.2 on the shard schema): shape only, no database.

That the SQL finds the right rows is shown against PostgreSQL in
tests/integration/test_qido.py; here: values never become SQL text, the helpers escape
and pad as C.2.2.2.4/C.2.2.2.5 need, and paging follows PS3.18 8.3.4.4.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tessera.shared.qido.params import Level, QidoQuery, Scope, parse_query
from tessera.shared.qido.sql import (
    Page,
    count_sql,
    like_escape,
    like_pattern,
    page_of,
    search_sql,
    upper_bound,
)


@pytest.mark.parametrize(
    ("dicom", "like"),
    [
        # C.2.2.2.4: '*' any run, '?' one character; LIKE's own metacharacters are literal
        ("*smi*", "%smi%"),
        ("Sm?th", "Sm_th"),
        ("a_b", "a\\_b"),
        ("100%", "100\\%"),
        ("back\\slash*", "back\\\\slash%"),
    ],
)
def test_like_pattern(dicom, like):
    assert like_pattern(dicom) == like


def test_like_escape_keeps_wildcard_characters_literal():
    assert like_escape("*?_%") == "*?\\_\\%"


@pytest.mark.parametrize(
    ("high", "vr", "bound"),
    [
        # C.2.2.2.5: an upper bound covers the whole of its last given unit
        ("20240131", "DA", "20240131"),
        ("10", "TM", "105959.999999"),
        ("1000", "TM", "100059.999999"),
        ("100000.5", "TM", "100000.599999"),
        ("235959.999999", "TM", "235959.999999"),
        ("2024", "DT", "20241231235959.999999"),
        ("20240101120000+0100", "DT", "20240101120000.999999"),
    ],
)
def test_upper_bound(high, vr, bound):
    assert upper_bound(high, vr) == bound


@pytest.mark.parametrize(
    ("limit", "max_limit", "page"),
    [
        (None, 100, Page(100, 0, True)),  # no limit: the server maximum decides
        (500, 100, Page(100, 0, True)),  # over the maximum: cut
        (100, 100, Page(100, 0, True)),  # equal: PS3.18 8.3.4.4.1 "maxResults == results"
        (10, 100, Page(10, 0, False)),
        (0, 100, Page(0, 0, False)),
    ],
)
def test_page_of(limit, max_limit, page):
    assert page_of(QidoQuery(Level.STUDY, limit=limit), max_limit) == page


NO_SCOPE = Scope()
_KEYS = ["PatientName", "StudyDescription", "PatientAge", "StudyInstanceUID", "StudyDate"]


@given(
    st.sampled_from(_KEYS),
    st.text(alphabet="xyz'\";-%_*?\\=^ ", min_size=1, max_size=12),
    st.booleans(),
)
def test_values_are_arguments_never_sql_text(keyword, value, fuzzy):
    marker = "Qq" + value  # letters that occur nowhere in the generated SQL
    try:
        query = parse_query(
            [(keyword, marker), ("fuzzymatching", str(fuzzy).lower())], Level.INSTANCE
        )
    except Exception:  # a malformed date or UID: nothing to build
        return
    sql = search_sql(query, page_of(query, 10))
    assert "Qq" not in sql.text
    placeholders = {int(n) for n in re.findall(r"\$(\d+)", sql.text)}
    assert placeholders == set(range(1, len(sql.args) + 1))


def _search(items: list[tuple[str, str]], level: Level, scope: Scope = NO_SCOPE) -> str:
    query = parse_query(items, level, scope)
    return search_sql(query, page_of(query, 10)).text


def test_patient_is_joined_only_when_a_patient_column_is_matched():
    assert "patient" not in _search([("StudyDate", "20240101")], Level.STUDY)
    assert "JOIN patient p" in _search([("PatientID", "P1")], Level.STUDY)
    assert "JOIN patient p" in _search([("PatientName", "x*")], Level.INSTANCE)


@pytest.mark.parametrize(
    ("level", "scope", "order"),
    [
        (
            Level.STUDY,
            Scope(),
            'st.study_date COLLATE "C" DESC, st.study_time COLLATE "C" DESC,'
            ' st.study_instance_uid COLLATE "C" DESC',
        ),
        (Level.SERIES, Scope("1.2"), 'se.series_number COLLATE "C", se.series_instance_uid'),
        (Level.INSTANCE, Scope("1.2", "1.2.3"), "i.instance_number_int NULLS LAST"),
    ],
)
def test_order_is_total(level, scope, order):
    text = _search([], level, scope)
    assert order in text
    # the last sort key is a unique UID, so pages never overlap (PS3.18 8.3.4.4.1), and
    # a router can merge the pages of several shards in the same order (issue 6)
    last = text.split(" LIMIT ")[0]
    assert last.endswith(('_instance_uid COLLATE "C" DESC', '_instance_uid COLLATE "C"'))


def test_searches_across_parents_order_by_the_parents_first():
    text = _search([], Level.INSTANCE, Scope())
    order = text.split("ORDER BY ")[1]
    assert order.index("st.study_date") < order.index("se.series_number") < order.index("i.")


def test_count_has_the_same_conditions_without_paging():
    query = parse_query([("PatientName", "x*"), ("Modality", "CT")], Level.SERIES)
    count = count_sql(query)
    assert count.text.startswith("SELECT count(*) FROM series se")
    assert "LIMIT" not in count.text
    assert search_sql(query, page_of(query, 10)).args[: len(count.args)] == count.args


def test_combined_date_and_time_is_one_row_comparison():
    # PS3.4 C.2.2.2.5.1: (date, time) compared as one datetime; the study_order index
    # (study_date DESC, study_time DESC, study_instance_uid DESC) answers row comparisons
    query = parse_query([("StudyDate", "20240101-20240131"), ("StudyTime", "0800-")], Level.STUDY)
    sql = search_sql(query, page_of(query, 10))
    assert "(st.study_date, st.study_time) >= ($1::text, $2::text)" in sql.text
    assert "(st.study_date, st.study_time) <= ($3::text, $4::text)" in sql.text
    assert sql.args[:4] == ("20240101", "0800", "20240131", "235959.999999")


def test_two_single_values_are_not_combined():
    query = parse_query([("StudyDate", "20240101"), ("StudyTime", "0800")], Level.STUDY)
    text = search_sql(query, page_of(query, 10)).text
    assert "st.study_date = $1" in text and "st.study_time = $2" in text


def test_datetime_with_an_offset_compares_in_utc():
    query = parse_query([("AcquisitionDateTime", "20240101120000+0100-")], Level.INSTANCE)
    sql = search_sql(query, page_of(query, 10))
    assert "tessera_dt_utc(" in sql.text
    assert "20240101110000.000000" in sql.args and "+0100" in sql.args


def test_attributes_without_a_column_use_literal_tags_for_expression_indexes():
    query = parse_query(
        [("PatientAge", "054Y"), ("AdmittingDiagnosesDescription", "*x*")], Level.STUDY
    )
    text = search_sql(query, page_of(query, 10)).text
    assert "tessera_attr_values(st.attrs, '00101010') @> ARRAY[$1::text]" in text
    assert "tessera_attr_text(st.attrs, '00081080') LIKE $" in text


def test_fuzzy_matching_uses_the_folded_form():
    query = parse_query([("PatientName", "jo sm"), ("fuzzymatching", "true")], Level.STUDY)
    text = search_sql(query, page_of(query, 10)).text
    assert text.count("p.patient_name_folded LIKE") == 2  # stored, indexed (migration 0003)
    assert "ILIKE" not in text


def test_modalities_in_study_is_array_containment():
    query = parse_query([("ModalitiesInStudy", "MR")], Level.STUDY)
    assert "st.modalities_in_study @> ARRAY[$1::text]" in search_sql(query, page_of(query, 1)).text


@pytest.mark.parametrize(
    ("value", "groupwise"),
    [
        ("*smi*", False),  # anywhere is within a group: the trigram index answers it alone
        ("smi*", True),  # anchored: each component group on its own (PS3.5 6.2.1)
        ("*s*h*", True),  # an inner '*' could reach across a '=' between groups
        ("*s?h*", True),
    ],
)
def test_person_name_wildcards(value, groupwise):
    query = parse_query([("PatientName", value)], Level.STUDY)
    text = search_sql(query, page_of(query, 10)).text
    assert "p.patient_name ILIKE $" in text
    assert ("string_to_array(p.patient_name, '=')" in text) is groupwise
