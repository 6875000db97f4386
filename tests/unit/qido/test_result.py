"""What QIDO-RS results hold (PS3.18 10.6.3.3, Tables 10.6.3-3/-4/-5) and how the SQL
builds them; no I/O. The documents themselves are checked against PostgreSQL in
tests/integration/test_qido*.py."""

from __future__ import annotations

import pytest

from tessera.shared.qido.params import Level, Scope, parse_query
from tessera.shared.qido.render import body
from tessera.shared.qido.result import (
    CONDITIONAL,
    REQUIRED,
    more_results_warning,
    return_attributes,
)
from tessera.shared.qido.sql import page_of, search_sql


def _wanted(items, level, scope=None):
    return return_attributes(parse_query(items, level, scope or Scope()))


def test_study_results_hold_table_10_6_3_3():
    wanted = _wanted([], Level.STUDY)
    assert {t: v for t, v in wanted.items() if v is not None} == REQUIRED[Level.STUDY]
    assert CONDITIONAL[Level.STUDY] <= set(wanted)
    assert "00101010" not in wanted  # PatientAge: neither required nor asked for


def test_matching_keys_and_includefields_are_returned():
    wanted = _wanted([("PatientAge", ""), ("includefield", "IssuerOfPatientID")], Level.STUDY)
    assert (wanted["00101010"], wanted["00100021"]) == ("AS", "LO")


def test_lower_level_includefields_are_not_returned():
    assert "00080060" not in _wanted([("includefield", "Modality")], Level.STUDY)  # 10.6.3.3.1


@pytest.mark.parametrize(
    ("level", "scope", "study_table"),
    [
        (Level.SERIES, Scope(), True),  # All Series: 10.6.3.3.2
        (Level.SERIES, Scope("1.2"), False),  # Study's Series
        (Level.INSTANCE, Scope(), True),  # All Instances: 10.6.3.3.3
        (Level.INSTANCE, Scope("1.2", "1.2.3"), False),
    ],
)
def test_parent_tables(level, scope, study_table):
    wanted = _wanted([], level, scope)
    assert ("00100010" in wanted) is study_table
    assert wanted["0020000D"] == "UI"  # parent UIDs always


@pytest.mark.parametrize(
    ("items", "level", "fragments"),
    [
        # the attrs less the tags not wanted (cheaper than picking the wanted ones)
        ([], Level.STUDY, ["(st.attrs - $", "'00201208'", "'00081190'"]),
        ([("includefield", "all")], Level.STUDY, ["|| st.attrs ||", "'00201200'"]),
        ([], Level.SERIES, ["(se.attrs - $", "'00201209'"]),
        ([], Level.INSTANCE, ["tessera_pick(i.attrs"]),
        ([("includefield", "all")], Level.INSTANCE, ["|| i.attrs ||"]),
        ([], Level.INSTANCE, ["replace(", '"BulkDataURI": "/']),
    ],
)
def test_documents_are_built_by_the_database(items, level, fragments):
    query = parse_query(items, level)
    text = search_sql(query, page_of(query, 10), "https://pacs.example/dw").text
    for fragment in fragments:
        assert fragment in text


def test_patient_counts_only_when_asked():
    asked = parse_query([("includefield", "00201200")], Level.STUDY)
    plain = parse_query([], Level.STUDY)
    assert "ps.patient_pk" in search_sql(asked, page_of(asked, 1)).text
    assert "ps.patient_pk" not in search_sql(plain, page_of(plain, 1)).text


def test_body_is_a_json_array():
    assert body(['{"a": 1}', '{"b": 2}']) == b'[{"a": 1},{"b": 2}]'
    assert body([]) == b"[]"


def test_warning_text():
    # PS3.18 8.3.4.4.1, with the warn-text quoted as RFC 9111 5.5 requires
    assert more_results_warning("pacs.example", 5) == (
        '299 pacs.example "There are 5 additional results that can be requested"'
    )
