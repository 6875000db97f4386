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
        (Level.STUDY, Scope(), "st.study_date DESC, st.study_time DESC, st.pk DESC"),
        (Level.SERIES, Scope("1.2"), "se.series_number, se.pk"),
        (Level.INSTANCE, Scope("1.2", "1.2.3"), "i.instance_number_int NULLS LAST"),
    ],
)
def test_order_is_total(level, scope, order):
    text = _search([], level, scope)
    assert order in text
    # the last sort key is a primary key, so pages never overlap (PS3.18 8.3.4.4.1)
    assert text.split(" LIMIT ")[0].endswith(".pk DESC") or text.split(" LIMIT ")[0].endswith(".pk")


def test_searches_across_parents_order_by_the_parents_first():
    text = _search([], Level.INSTANCE, Scope())
    order = text.split("ORDER BY ")[1]
    assert order.index("st.study_date") < order.index("se.series_number") < order.index("i.")


def test_count_has_the_same_conditions_without_paging():
    query = parse_query([("PatientName", "x*"), ("Modality", "CT")], Level.SERIES)
    count = count_sql(query)
    assert count.text.startswith("SELECT count(*) FROM series se")
    assert "LIMIT" not in count.text
    assert len(count.args) == len(search_sql(query, page_of(query, 10)).args) - 2
