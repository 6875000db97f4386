"""C-FIND SCP (PS3.4 C.4.1): the same matches as QIDO-RS for the same keys on the same
data, at PATIENT, STUDY, SERIES and IMAGE level (PS3.4 C.2.2.2 matching: single value,
wildcard, range, UID list, case-insensitive PN), Specific Character Set both ways, and
the failure statuses; pynetdicom and DCMTK's findscu as clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from tests.e2e.dimse.conftest import CALLING, dicom_port
from tests.support.cluster import Cluster
from tests.support.dcmtk import run

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"


@pytest.fixture
def assoc(archive: Cluster, seeded: None, modality: str) -> Iterator[Association]:
    ae = AE(ae_title=CALLING)
    ae.add_requested_context(PATIENT_ROOT)
    ae.add_requested_context(STUDY_ROOT)
    a = ae.associate("127.0.0.1", archive.settings.dimse_port, ae_title="TESSERA")
    assert a.is_established
    yield a
    a.release()


def find(assoc: Association, keys: dict[str, object], model: str = STUDY_ROOT) -> list[Dataset]:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    out = []
    for status, identifier in assoc.send_c_find(query, model):
        assert status.Status in (0xFF00, 0xFF01, 0x0000), status
        if status.Status in (0xFF00, 0xFF01):
            out.append(identifier)
    return out


def qido(admin: httpx.Client, resource: str, params: dict[str, str]) -> list[dict]:
    r = admin.get(f"/dicom-web/{resource}", params={**params, "limit": "1000"})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def uids(results: list[dict], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


# (C-FIND level, its keys, the QIDO-RS resource and parameters of the same search)
STUDY_CASES = [
    ({"PatientName": "BRAIN*"}, {"PatientName": "BRAIN*"}),
    ({"PatientName": "brainix"}, {"PatientName": "brainix"}),  # PN case-insensitive
    ({"StudyDate": "20000101-20101231"}, {"StudyDate": "20000101-20101231"}),
    ({"StudyDate": "-20061231"}, {"StudyDate": "-20061231"}),
    ({"ModalitiesInStudy": "MR"}, {"ModalitiesInStudy": "MR"}),
    ({"PatientID": "*"}, {}),
    ({"AccessionNumber": "?"}, {"AccessionNumber": "?"}),
]


@pytest.mark.parametrize(("keys", "params"), STUDY_CASES)
def test_study_level_matches_equal_qido(
    assoc: Association, admin: httpx.Client, keys: dict, params: dict
) -> None:
    found = find(assoc, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", **keys})
    expected = uids(qido(admin, "studies", params), "0020000D")
    assert {f.StudyInstanceUID for f in found} == expected
    assert expected or keys == {"AccessionNumber": "?"}


def test_series_and_image_levels_equal_qido(assoc: Association, admin: httpx.Client) -> None:
    for study in qido(admin, "studies", {"PatientName": "BRAIN*"}):
        uid = study["0020000D"]["Value"][0]
        keys = {"SeriesInstanceUID": "", "Modality": "", "SeriesNumber": ""}
        series = find(assoc, {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": uid, **keys})
        expected = qido(admin, f"studies/{uid}/series", {})
        assert {s.SeriesInstanceUID for s in series} == uids(expected, "0020000E")
        assert all(s.Modality == "MR" and s.QueryRetrieveLevel == "SERIES" for s in series)
        for one in series:
            images = find(assoc, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": uid,
                                  "SeriesInstanceUID": one.SeriesInstanceUID,
                                  "SOPInstanceUID": "", "InstanceNumber": ""})  # fmt: skip
            expected = qido(admin, f"studies/{uid}/series/{one.SeriesInstanceUID}/instances", {})
            assert {i.SOPInstanceUID for i in images} == uids(expected, "00080018")
            # a UID list (C.2.2.2.2) of two of them
            two = sorted(i.SOPInstanceUID for i in images)[:2]
            listed = find(assoc, {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": uid,
                                  "SeriesInstanceUID": one.SeriesInstanceUID,
                                  "SOPInstanceUID": two})  # fmt: skip
            assert sorted(i.SOPInstanceUID for i in listed) == two


def test_patient_level_is_each_patient_once(assoc: Association, admin: httpx.Client) -> None:
    found = find(assoc, {"QueryRetrieveLevel": "PATIENT", "PatientID": "", "PatientName": "",
                         "NumberOfPatientRelatedStudies": ""}, PATIENT_ROOT)  # fmt: skip
    studies = qido(admin, "studies", {"includefield": "00201200"})
    patients = {(s["00100020"].get("Value", [""])[0]) for s in studies}
    assert sorted(f.PatientID for f in found) == sorted(patients)
    for f in found:
        count = sum(1 for s in studies if s["00100020"].get("Value", [""])[0] == f.PatientID)
        assert int(f.NumberOfPatientRelatedStudies) == count


def test_only_the_keys_asked_for_are_answered(assoc: Association) -> None:
    (one, *_) = find(assoc, {"QueryRetrieveLevel": "STUDY", "PatientName": "BRAIN*",
                             "StudyInstanceUID": "", "ReferringPhysicianName": "",
                             "StudyDescription": "", "RetrieveAETitle": ""})  # fmt: skip
    keywords = {e.keyword for e in one}
    assert keywords <= {"QueryRetrieveLevel", "PatientName", "StudyInstanceUID",
                        "ReferringPhysicianName", "StudyDescription", "RetrieveAETitle",
                        "SpecificCharacterSet"}, keywords  # fmt: skip
    assert one.RetrieveAETitle == "TESSERA"
    assert one.QueryRetrieveLevel == "STUDY"


def test_specific_character_set_both_ways(assoc: Association, admin: httpx.Client) -> None:
    """C.4.1.1.3.2: a Latin-1 request is decoded as Latin-1; the answer is in the
    request's character set when its values fit, else in UTF-8 (ISO_IR 192)."""
    found = find(assoc, {"QueryRetrieveLevel": "STUDY", "SpecificCharacterSet": "ISO_IR 100",
                         "PatientName": "Test-éü*", "StudyInstanceUID": ""})  # fmt: skip
    expected = qido(admin, "studies", {"PatientName": "Test-éü*"})
    assert {f.StudyInstanceUID for f in found} == uids(expected, "0020000D")
    assert len(found) >= 5
    names = {f.StudyInstanceUID: (f.SpecificCharacterSet, str(f.PatientName)) for f in found}
    for study in expected:
        charset, name = names[study["0020000D"]["Value"][0]]
        assert name == study["00100010"]["Value"][0]["Alphabetic"]
        try:
            name.encode("latin-1")
            assert charset == "ISO_IR 100"
        except UnicodeEncodeError:
            assert charset == "ISO_IR 192"


def test_a_bad_level_is_refused_with_a900(assoc: Association) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"  # not in the Study Root model
    query.PatientID = ""
    statuses = [s.Status for s, _ in assoc.send_c_find(query, STUDY_ROOT)]
    assert statuses == [0xA900]


def test_findscu_of_dcmtk(
    archive: Cluster, seeded: None, modality: str, admin: httpx.Client
) -> None:
    out = run("findscu", "-v", "-S", "-aet", CALLING, "-aec", "TESSERA", "127.0.0.1",
              dicom_port(archive), "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=brainix",
              "-k", "StudyInstanceUID", "-k", "NumberOfStudyRelatedInstances").stdout  # fmt: skip
    n = len(qido(admin, "studies", {"PatientName": "brainix"}))
    assert n >= 1 and f"Find Response: {n} (Pending)" in out, out
    assert "BRAINIX" in out and f"Find Response: {n + 1}" not in out
    assert "Received Final Find Response (Success)" in out
