"""QIDO-RS result documents from rows (PS3.18 10.6.3.3, Tables 10.6.3-3/-4/-5); no I/O."""

from __future__ import annotations

import json

from tessera.shared.qido.params import Level, Scope, parse_query
from tessera.shared.qido.result import REQUIRED, more_results_warning, render

BASE = "https://pacs.example/dicom-web"
NO_SCOPE = Scope()
STUDY_ROW = {
    "study_instance_uid": "1.2",
    "study_attrs": {
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00101010": {"vr": "AS", "Value": ["040Y"]},
    },
    "modalities_in_study": ["CT", "MR"],
    "sop_classes_in_study": ["1.2.840.10008.5.1.4.1.1.2"],
    "number_of_series": 2,
    "study_instances": 7,
}
SERIES_ROW = {
    **STUDY_ROW,
    "series_instance_uid": "1.2.3",
    "series_attrs": {"00080060": {"vr": "CS", "Value": ["CT"]}},
    "series_instances": 4,
}
INSTANCE_ROW = {
    **SERIES_ROW,
    "sop_instance_uid": "1.2.3.4",
    "metadata": json.dumps(
        {
            "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00280010": {"vr": "US", "Value": [512]},
            "00420011": {"vr": "OB", "BulkDataURI": "/studies/1.2/bulk/00420011"},
            "7FE00010": {"vr": "OB", "BulkDataURI": "/studies/1.2/bulk/7FE00010"},
        }
    ),
}


def _render(row, items, level, scope=NO_SCOPE):
    return json.loads(render([row], parse_query(items, level, scope), BASE))[0]


def test_study_result_has_every_required_attribute_in_tag_order():
    result = _render(STUDY_ROW, [], Level.STUDY)
    assert set(REQUIRED[Level.STUDY]) <= set(result)
    assert list(result) == sorted(result)
    assert result["00080020"] == {"vr": "DA"}  # Type R without a value: present, empty
    assert result["00080061"] == {"vr": "CS", "Value": ["CT", "MR"]}
    assert result["00201206"] == {"vr": "IS", "Value": [2]}
    assert result["00201208"] == {"vr": "IS", "Value": [7]}
    assert result["00081190"] == {"vr": "UR", "Value": [f"{BASE}/studies/1.2"]}
    assert "00101010" not in result


def test_matching_keys_and_includefields_are_returned():
    result = _render(
        STUDY_ROW, [("PatientAge", ""), ("includefield", "IssuerOfPatientID")], Level.STUDY
    )
    assert result["00101010"] == {"vr": "AS", "Value": ["040Y"]}
    assert result["00100021"] == {"vr": "LO"}


def test_all_series_carry_the_study_table_the_study_series_do_not():
    everywhere = _render(SERIES_ROW, [], Level.SERIES)
    within = _render(SERIES_ROW, [], Level.SERIES, Scope("1.2"))
    assert set(REQUIRED[Level.STUDY]) <= set(everywhere)
    assert "00100010" not in within
    for result in (everywhere, within):
        assert result["0020000D"] == {"vr": "UI", "Value": ["1.2"]}
        assert result["00201209"] == {"vr": "IS", "Value": [4]}
        assert result["00081190"]["Value"] == [f"{BASE}/studies/1.2/series/1.2.3"]


def test_instance_result_from_metadata():
    result = _render(INSTANCE_ROW, [("includefield", "all")], Level.INSTANCE, Scope("1.2"))
    assert result["00280010"] == {"vr": "US", "Value": [512]}
    assert result["00200013"] == {"vr": "IS"}
    assert result["00080060"] == {"vr": "CS"}  # series table; this row's metadata lacks it
    assert "7FE00010" not in result  # pixel data is never a search result
    assert result["00420011"]["BulkDataURI"] == f"{BASE}/studies/1.2/bulk/00420011"
    assert result["00081190"]["Value"] == [f"{BASE}/studies/1.2/series/1.2.3/instances/1.2.3.4"]


def test_warning_text():
    # PS3.18 8.3.4.4.1, with the warn-text quoted as RFC 9111 5.5 requires
    assert more_results_warning("pacs.example", 5) == (
        '299 pacs.example "There are 5 additional results that can be requested"'
    )
