"""The Native DICOM Model (PS3.19 A.1) rendering of DICOM JSON (PS3.18 F.3), and back.

Every document is validated against the PS3.19 A.1.6 schema (tests/data/schemas, the
compact syntax written out as RELAX NG XML); the corpus files go JSON -> XML -> JSON
unchanged."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pydicom
import pytest
from lxml import etree

from tessera.shared.dicomjson import dataset_to_json
from tessera.shared.dicomxml import NAMESPACE, dataset_to_xml, xml_to_dataset
from tessera.shared.errors import BadRequest

DATA = Path(__file__).parents[1] / "data"
SCHEMA = etree.RelaxNG(etree.parse(str(DATA / "schemas" / "native_dicom_model.rng")))
CORPUS = sorted(p for p in (DATA / "corpus").rglob("*") if p.is_file() and p.suffix != ".png")


def valid(document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    SCHEMA.assertValid(root)
    return root


def same(a: Any, b: Any) -> bool:
    """Equal, DS/FL/FD numbers compared as numbers (2.0 is written "2")."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | int) and isinstance(b, float | int):
        return math.isclose(a, b, rel_tol=1e-15)
    return bool(a == b)


def test_each_json_form_maps_as_ps3_18_f_3_says() -> None:
    doc = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00090010": {"vr": "LO", "Value": ["ACME 1.0"]},
        "00091001": {"vr": "LO", "Value": ["private <&> value"]},
        "00100010": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
        },
        "00181000": {"vr": "LO", "Value": ["a", None]},
        "00280030": {"vr": "DS", "Value": [0.5, 2.0]},
        "00081115": {"vr": "SQ", "Value": [{"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
        "00400275": {"vr": "SQ"},
        "7FE00010": {"vr": "OW", "BulkDataURI": "https://pacs/studies/1/bulk?a=1&b=2"},
        "00291010": {"vr": "OB", "InlineBinary": "AAEC"},
    }
    root = valid(dataset_to_xml(doc))
    ns = {"d": NAMESPACE}
    name = root.find("d:DicomAttribute[@tag='00100010']", ns)
    assert name.get("keyword") == "PatientName" and name.get("vr") == "PN"
    assert (
        name.findtext("d:PersonName[@number='1']/d:Alphabetic/d:FamilyName", namespaces=ns)
        == "Yamada"
    )
    assert name.findtext("d:PersonName/d:Ideographic/d:GivenName", namespaces=ns) == "太郎"
    private = root.find("d:DicomAttribute[@tag='00091001']", ns)
    assert private.get("privateCreator") == "ACME 1.0" and private.get("keyword") is None
    assert private.findtext("d:Value", namespaces=ns) == "private <&> value"
    values = root.findall("d:DicomAttribute[@tag='00181000']/d:Value", ns)
    assert [(v.get("number"), v.text) for v in values] == [("1", "a"), ("2", None)]
    spacing = root.findall("d:DicomAttribute[@tag='00280030']/d:Value", ns)
    assert [v.text for v in spacing] == ["0.5", "2"]
    item = root.find("d:DicomAttribute[@tag='00081115']/d:Item[@number='1']", ns)
    assert item.findtext("d:DicomAttribute[@tag='0020000E']/d:Value", namespaces=ns) == "1.2.3"
    bulk = root.find("d:DicomAttribute[@tag='7FE00010']/d:BulkData", ns)
    assert bulk.get("uri") == "https://pacs/studies/1/bulk?a=1&b=2"
    assert (
        root.findtext("d:DicomAttribute[@tag='00291010']/d:InlineBinary", namespaces=ns) == "AAEC"
    )
    assert same(xml_to_dataset(dataset_to_xml(doc)), doc)


def test_characters_xml_cannot_carry_are_replaced_not_an_invalid_document() -> None:
    doc = {"00081030": {"vr": "LO", "Value": ["bad\x01\x1fchars"]}}
    root = valid(dataset_to_xml(doc))
    assert root[0][0].text == "bad\ufffd\ufffdchars"


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(DATA / "corpus")))
def test_corpus_files_render_valid_and_read_back_equal(path: Path) -> None:
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception:
        pytest.skip("pydicom cannot read it")
    doc = dataset_to_json(ds, "https://pacs/bulk").json
    document = dataset_to_xml(doc)
    valid(document)
    back = xml_to_dataset(document)
    assert same(back, _xml_safe(doc))


def _xml_safe(value: Any) -> Any:
    """What XML carries of a JSON value: no C0 controls; a person name's components, not
    its trailing empty ones (PS3.19 A.1.1: each component is an element or absent)."""
    if isinstance(value, dict) and value.get("vr") == "PN" and "Value" in value:
        names = [
            None if name is None else {g: _xml_safe(t.rstrip("^")) for g, t in name.items()}
            for name in value["Value"]
        ]
        return {**value, "Value": names}
    if isinstance(value, dict):
        return {k: _xml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_xml_safe(v) for v in value]
    if isinstance(value, str):
        return "".join("\ufffd" if (ord(c) < 32 and c not in "\t\n\r") else c for c in value)
    return value


@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b"<Other/>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><NativeDicomModel/>',
        b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><NativeDicomModel/>',
        b'<NativeDicomModel><DicomAttribute tag="xyz" vr="LO"/></NativeDicomModel>',
        b'<NativeDicomModel><DicomAttribute tag="00100010" vr="LO">'
        b'<Value number="0">x</Value></DicomAttribute></NativeDicomModel>',
    ],
)
def test_what_is_not_a_native_dicom_model_document_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        xml_to_dataset(body)
