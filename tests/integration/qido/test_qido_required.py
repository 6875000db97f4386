"""What PS3.18 requires of every origin server's search, table by table, against
PostgreSQL: the matching keys of Table 10.6.1-5 and the return attributes of Tables
10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance), plus the computed patient
counts of PS3.4 C.6.1.1.2 when asked for. The archive: :mod:`tests.support.qido_archive`.
"""

from __future__ import annotations

import dataclasses

import pytest

from tessera.shared.qido.params import Level
from tessera.shared.qido.result import CONDITIONAL, REQUIRED
from tests.support.qido_archive import (
    MR,
    ST1,
    ST2,
    ST3,
    index,
    make_instance,
    search,
    value,
)

# PS3.18 Table 10.6.1-5 Required Matching Attributes: (path, key, value, expected UIDs)
STUDY_KEYS = [
    ("StudyDate", "20240115", [ST1]),
    ("StudyTime", "080000", [ST3]),
    ("AccessionNumber", "ACC2", [ST2]),
    ("ModalitiesInStudy", "SR", [ST1]),
    ("ReferringPhysicianName", "Ref^Doc", [ST1]),
    ("PatientName", "Goldsmith^Anna", [ST2]),
    ("PatientID", "P3", [ST3]),
    ("StudyInstanceUID", ST1, [ST1]),
    ("StudyID", "S1", [ST1]),
]
SERIES_KEYS = [
    ("Modality", "SR", [f"{ST1}.3"]),
    ("SeriesInstanceUID", f"{ST1}.2", [f"{ST1}.2"]),
    ("SeriesNumber", "10", [f"{ST1}.2"]),
    ("PerformedProcedureStepStartDate", "20240115", [f"{ST1}.1", f"{ST1}.2"]),
    ("PerformedProcedureStepStartTime", "101610", [f"{ST1}.2"]),
    ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1", [f"{ST1}.1"]),
    ("RequestAttributesSequence.RequestedProcedureID", "RP2", [f"{ST1}.2"]),
]
INSTANCE_KEYS = [
    ("SOPClassUID", MR, None),  # every instance
    ("SOPInstanceUID", f"{ST1}.1.2", [f"{ST1}.1.2"]),
    ("InstanceNumber", "10", [f"{ST1}.1.10"]),
]


@pytest.mark.parametrize(("key", "match", "expected"), STUDY_KEYS)
async def test_table_10_6_1_5_study_keys(client, key, match, expected):
    results = await search(client, "/studies", **{key: match})
    assert [value(r, "0020000D") for r in results] == expected


@pytest.mark.parametrize(("key", "match", "expected"), SERIES_KEYS)
async def test_table_10_6_1_5_series_keys(client, key, match, expected):
    results = await search(client, f"/studies/{ST1}/series", **{key: match})
    assert [value(r, "0020000E") for r in results] == expected


@pytest.mark.parametrize(("key", "match", "expected"), INSTANCE_KEYS)
async def test_table_10_6_1_5_instance_keys(client, key, match, expected):
    results = await search(client, f"/studies/{ST1}/series/{ST1}.1/instances", **{key: match})
    uids = [value(r, "00080018") for r in results]
    assert uids == (expected or [f"{ST1}.1.1", f"{ST1}.1.2", f"{ST1}.1.10"])


# Type C attributes the archive knows for one entity of each level: (level, path, tag)
KNOWN_CONDITIONAL = [
    (Level.STUDY, "/studies", "00080005"),  # SpecificCharacterSet
    (Level.STUDY, "/studies", "00080056"),  # InstanceAvailability
    (Level.STUDY, "/studies", "00081190"),  # RetrieveURL
    (Level.SERIES, f"/studies/{ST1}/series", "0008103E"),  # SeriesDescription
    (Level.SERIES, f"/studies/{ST1}/series", "00400244"),  # PPS Start Date
    (Level.SERIES, f"/studies/{ST1}/series", "00400245"),  # PPS Start Time
    (Level.SERIES, f"/studies/{ST1}/series", "00400275"),  # RequestAttributesSequence
    (Level.INSTANCE, f"/studies/{ST1}/series/{ST1}.1/instances", "00280010"),  # Rows
    (Level.INSTANCE, f"/studies/{ST1}/series/{ST1}.1/instances", "00280011"),  # Columns
    (Level.INSTANCE, f"/studies/{ST1}/series/{ST1}.1/instances", "00280100"),  # BitsAllocated
]
_PATHS = {
    Level.STUDY: "/studies",
    Level.SERIES: f"/studies/{ST1}/series",
    Level.INSTANCE: f"/studies/{ST1}/series/{ST1}.1/instances",
}


@pytest.mark.parametrize(
    ("level", "tag"), [(level, tag) for level, tags in REQUIRED.items() for tag in tags]
)
async def test_tables_10_6_3_3_to_5_type_r_and_u_always_present(client, level, tag):
    for result in await search(client, _PATHS[level]):
        assert result[tag]["vr"] == REQUIRED[level][tag]


@pytest.mark.parametrize(("level", "path", "tag"), KNOWN_CONDITIONAL)
async def test_tables_10_6_3_3_to_5_type_c_present_if_known(client, level, path, tag):
    assert tag in CONDITIONAL[level]
    params = {"SeriesInstanceUID": f"{ST1}.1"} if level is Level.SERIES else {}
    results = await search(client, path, **params)
    assert value(results[0], tag) is not None


@pytest.mark.parametrize("ask", ["00201200,00201202,00201204", "all"])
async def test_patient_related_counts_when_asked(client, ask):
    # PS3.4 C.6.1.1.2 (Patient level, folded into the study): NumberOfPatientRelatedStudies
    # (0020,1200), -Series (0020,1202), -Instances (0020,1204)
    (st1,) = await search(client, "/studies", StudyInstanceUID=ST1, includefield=ask)
    assert (value(st1, "00201200"), value(st1, "00201202"), value(st1, "00201204")) == (1, 3, 5)
    (plain,) = await search(client, "/studies", StudyInstanceUID=ST1)
    assert "00201200" not in plain


async def test_patient_related_counts_span_the_patients_studies(client, database):
    new = "1.2.826.0.9.77"  # a second study of ST1's patient: 1 series, 1 instance
    base = make_instance(ST1, f"{new}.1", f"{new}.1.1", modality="MR", series_number="1", number=1)
    metadata = {**base.metadata, "0020000D": {"vr": "UI", "Value": [new]}}
    await index(database, [dataclasses.replace(base, study_instance_uid=new, metadata=metadata)])
    results = await search(client, "/studies", PatientID="P1", includefield="00201200,00201204")
    assert [value(r, "0020000D") for r in results] == [new, ST1]  # same date: newest row first
    assert [(value(r, "00201200"), value(r, "00201204")) for r in results] == [(2, 6), (2, 6)]
