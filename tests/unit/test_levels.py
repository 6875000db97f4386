"""Where the index keeps each attribute (PS3.4 C.6.1.1), and the operator's extras."""

from __future__ import annotations

import pytest

from tessera.shared.levels import Layout, Level, instance_attrs

MD = {
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
    "00180015": {"vr": "CS", "Value": ["HEAD"]},
    "00080008": {"vr": "CS", "Value": ["ORIGINAL"]},
    "7FE00010": {"vr": "OW", "BulkDataURI": "/x"},
}


def test_default_layout():
    layout = Layout()
    assert layout.level_of("00100010") is Level.STUDY
    assert layout.level_of("00180015") is Level.SERIES
    assert layout.level_of("00080008") is Level.INSTANCE
    assert set(layout.study_attrs(MD)) == {"00100010"}
    assert set(instance_attrs(MD)) == {"00080008"}  # no bulk data


@pytest.mark.parametrize(
    ("entries", "study", "series", "instance"),
    [
        (["study:BodyPartExamined"], {"00180015"}, set(), set()),
        ([" series : 00080008 ", ""], set(), {"00080008"}, set()),
        (["AcquisitionDateTime"], set(), set(), {"0008002A"}),  # no level: indexed in place
        (["study:PatientName"], set(), set(), set()),  # already there
    ],
)
def test_parse(entries, study, series, instance):
    layout = Layout.parse(entries)
    assert (layout.study_extra, layout.series_extra, layout.instance_extra) == (
        study,
        series,
        instance,
    )


def test_extras_are_kept_at_their_new_level():
    layout = Layout.parse(["study:BodyPartExamined", "series:ImageType"])
    assert layout.level_of("00180015") is Level.STUDY
    assert set(layout.study_attrs(MD)) == {"00100010", "00180015"}
    assert set(layout.series_attrs(MD)) == {"00180015", "00080008"}
    assert set(instance_attrs(MD)) == {"00080008"}  # instance attrs do not change
    assert layout.extras() == [(Level.STUDY, "00180015"), (Level.SERIES, "00080008")]


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [("study:Nope", "Nope"), ("patient:PatientID", "level"), ("series:PatientID", "down")],
)
def test_bad_entries(entry, fragment):
    with pytest.raises(ValueError, match=fragment):
        Layout.parse([entry])
