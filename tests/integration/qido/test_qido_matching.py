"""QIDO-RS matching rules, one table row per rule, against PostgreSQL (PS3.4 C.2.2.2,
PS3.18 8.3.4): the archive of :mod:`tests.support.qido_archive`."""

from __future__ import annotations

import pytest

from tests.support.qido_archive import (
    ACQUISITION,
    NEWEST_FIRST,
    REFERENCED_STUDY,
    ST1,
    ST2,
    ST3,
    ST4,
    search,
    study_uids,
    value,
)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # C.2.2.2.3 universal
        ({"PatientName": ""}, NEWEST_FIRST),
        ({"PatientName": "*"}, NEWEST_FIRST),
        # C.2.2.2.1 single value; PN case-insensitive (our conformance), others exact
        ({"PatientName": "smith^john"}, [ST1]),
        ({"PatientName": "SMITH^JOHN"}, [ST1]),
        ({"PatientName": "Smith"}, []),
        ({"PatientID": "P2"}, [ST2]),
        ({"PatientID": "p2"}, []),
        ({"AccessionNumber": "ACC3"}, [ST3]),
        ({"00080050": "ACC3"}, [ST3]),  # by tag
        ({"PatientAge": "054Y"}, [ST1]),  # no column: matched on study.attrs
        # PN component groups (PS3.5 6.2.1): ideographic and phonetic groups match too
        ({"PatientName": "山田^太郎"}, [ST4]),
        ({"PatientName": "やまだ*"}, [ST4]),
        ({"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう"}, [ST4]),
        # C.2.2.2.4 wildcards: PN case-insensitive, other VRs case-sensitive
        ({"PatientName": "*smi*"}, [ST3, ST1, ST2]),
        ({"PatientName": "smi*"}, [ST3, ST1]),
        ({"PatientName": "Sm?th^J*"}, [ST3, ST1]),
        ({"StudyDescription": "*MRI*"}, [ST1]),
        ({"StudyDescription": "*mri*"}, []),
        ({"StudyDescription": "*n_M*"}, []),  # '_' is literal, not LIKE's any-character
        ({"StudyDescription": "*%*"}, [ST2]),  # '%' is literal
        ({"StudyDescription": "Chest_CT*"}, [ST2]),
        # C.2.2.2.2 list of UIDs
        ({"StudyInstanceUID": f"{ST1}\\{ST2}"}, [ST1, ST2]),
        ({"StudyInstanceUID": f"{ST2},{ST4},1.2.3"}, [ST2, ST4]),
        # C.2.2.2.5 ranges, closed and open; empty values never match a range
        ({"StudyDate": "20240115"}, [ST1]),
        ({"StudyDate": "20240101-20240131"}, [ST1]),
        ({"StudyDate": "20240101-"}, [ST3, ST1]),
        ({"StudyDate": "-20231231"}, [ST2]),
        ({"StudyDate": "20231201-20240115"}, [ST1, ST2]),  # bounds are inclusive
        ({"StudyTime": "-0900"}, [ST3]),
        ({"StudyTime": "1015-1015"}, [ST1]),  # upper bound to the end of the minute
        ({"StudyTime": "2359-"}, [ST2]),
        # C.2.2.2.5.1 combined date and time: one datetime range from (date1, time1) to
        # (date2, time2), not two ranges matched on their own
        ({"StudyDate": "20240101-", "StudyTime": "-1200"}, [ST3, ST1]),
        ({"StudyDate": "20231201-20240115", "StudyTime": "2300-1100"}, [ST1, ST2]),
        ({"StudyDate": "20240115-20240301", "StudyTime": "1100-0800"}, [ST3]),
        ({"StudyDate": "20240115", "StudyTime": "1000-1100"}, [ST1]),
        ({"StudyDate": "20240115", "StudyTime": "1100-"}, []),
        ({"StudyDate": "-20240115", "StudyTime": "-1000"}, [ST2]),
        ({"StudyDate": "20231201-20240115", "StudyTime": "101500"}, [ST1, ST2]),
        # ... but two single values are two single value matches (C.2.2.2.1)
        ({"StudyDate": "20240115", "StudyTime": "101500"}, [ST1]),
        ({"StudyDate": "20240115", "StudyTime": "1015"}, []),
        # ModalitiesInStudy: any series of the study; multiple values (PS3.18 8.3.4.6)
        ({"ModalitiesInStudy": "CT"}, [ST3, ST2]),
        ({"ModalitiesInStudy": "SR"}, [ST1]),
        ({"ModalitiesInStudy": "CT\\SR"}, [ST3, ST1, ST2]),
        ({"ModalitiesInStudy": "C?"}, [ST3, ST2]),
        # C.2.2.2.6 sequence matching: any item matches (PS3.18 8.3.4.1 attribute paths)
        ({"ReferencedStudySequence.ReferencedSOPInstanceUID": REFERENCED_STUDY}, [ST3]),
        ({"00081110.00081155": REFERENCED_STUDY}, [ST3]),
        ({"00081110.00081155": "1.2.3"}, []),
        # keys combine with AND
        ({"PatientName": "*smith*", "ModalitiesInStudy": "CT"}, [ST3, ST2]),
        # PS3.18 8.3.4.5 emptyvaluematching: entities without a value match too
        ({"StudyDate": "20240101-", "emptyvaluematching": "true"}, [ST3, ST1, ST4]),
        ({"PatientAge": "054Y", "emptyvaluematching": "true"}, [ST3, ST1, ST2, ST4]),
    ],
)
async def test_study_matching(client, params, expected):
    assert await study_uids(client, **params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # fuzzymatching=true: every word starts a word of the name, any case, any order
        ({"PatientName": "john smi", "fuzzymatching": "true"}, [ST1]),
        ({"PatientName": "jan", "fuzzymatching": "true"}, [ST3]),
        ({"PatientName": "smith", "fuzzymatching": "true"}, [ST3, ST1]),  # not Goldsmith
        ({"PatientName": "太郎", "fuzzymatching": "true"}, [ST4]),
        ({"PatientName": "jan", "fuzzymatching": "false"}, []),
        ({"PatientName": "*mith^J*", "fuzzymatching": "true"}, [ST3, ST1]),  # wildcards as usual
    ],
)
async def test_fuzzy_person_name_matching(client, params, expected):
    assert await study_uids(client, **params) == expected


@pytest.mark.parametrize(
    ("path", "params", "expected"),
    [
        # C.2.2.2.6, PS3.18 Table 10.6.1-5: RequestAttributesSequence >RequestedProcedureID
        # and >ScheduledProcedureStepID at the series level, by keyword path or tag path
        ("/series", {"RequestAttributesSequence.RequestedProcedureID": "RP1"}, [f"{ST1}.1"]),
        ("/series", {"00400275.00400009": "SPS2"}, [f"{ST1}.2"]),
        ("/series", {"00400275.00401001": "RP*"}, [f"{ST1}.1", f"{ST1}.2"]),
        ("/series", {"00400275.00401001": "RP1\\RP2"}, [f"{ST1}.1", f"{ST1}.2"]),
        (f"/studies/{ST1}/series", {"00400275.00401001": "RP3"}, []),
        # relational: a series-level sequence key in a search for instances
        (f"/studies/{ST1}/instances", {"00400275.00400009": "SPS2"}, [f"{ST1}.2.10"]),
    ],
)
async def test_sequence_matching(client, path, params, expected):
    results = await search(client, path, **params)
    tag = "00080018" if path.endswith("instances") else "0020000E"
    assert [value(r, tag) for r in results] == expected
    for result in results:  # the sequence is returned with its items
        assert result["00400275"]["vr"] == "SQ"
        assert result["00400275"]["Value"][0]["00401001"]["Value"][0].startswith("RP")


@pytest.mark.parametrize(
    ("value_", "expected"),
    [
        # DT ranges (C.2.2.2.5) with UTC offsets (PS3.5 6.2 &ZZXX): compared in UTC. #10 is
        # 23:00+0000; #1 has no offset and is in ST2's TimezoneOffsetFromUTC +0100: 22:00Z
        ("20231201215500+0000-20231201220500+0000", [1]),
        ("20231201225500+0000-20231201230500+0000", [10]),
        ("20231202000000+0100-", [10]),  # 23:00Z and later
        ("-20231201223000+0000", [1]),
        ("20231201230000+0100", [1]),  # a single value is the range of its precision
        # without an offset in the query, values compare as written
        ("20231201225900-20231201230100", [1, 10]),
        ("2023120123", [1, 10]),
        ("2024-", []),
    ],
)
async def test_datetime_with_utc_offsets(client, value_, expected):
    results = await search(client, f"/studies/{ST2}/instances", AcquisitionDateTime=value_)
    assert [value(r, "00200013") for r in results] == expected
    assert set(ACQUISITION) >= set(expected)


async def test_sequence_key_of_a_lower_level_is_400(client):
    response = await client.get("/studies", params={"00400275.00401001": "RP1"})
    assert response.status_code == 400 and "00400275.00401001" in response.text


async def test_path_through_a_non_sequence_is_400(client):
    response = await client.get("/studies", params={"PatientName.PatientID": "x"})
    assert response.status_code == 400 and "not a sequence" in response.text
