"""The DICOM JSON of a data set is the same whether the common elements' values are read
from their bytes (tessera.shared.rawvalues, issue 12) or through pydicom: every element
of every file of the test corpus (character sets, byte orders, odd values), and values
made to hit each rule's corners."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from tessera.shared import dicomjson
from tessera.shared.dicomjson import dataset_to_json, quiet_pydicom
from tessera.shared.rawvalues import json_values

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
FILES = sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".png")


def both_ways(read, monkeypatch) -> tuple[object, object]:
    fast = dataset_to_json(read(), "/bulk")
    monkeypatch.setattr(dicomjson, "_FROM_RAW_VALUES", False)
    slow = dataset_to_json(read(), "/bulk")
    monkeypatch.setattr(dicomjson, "_FROM_RAW_VALUES", True)
    return fast, slow


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_encodes_alike(path, monkeypatch):
    def read() -> Dataset:
        with quiet_pydicom():
            return dcmread(path, force=True, stop_before_pixels=True)

    try:
        read()
    except Exception:
        pytest.skip("pydicom cannot read it")
    fast, slow = both_ways(read, monkeypatch)
    assert fast.json == slow.json
    assert (fast.discarded, fast.fallbacks) == (slow.discarded, slow.fallbacks)


CORNERS = [
    ("CS", b"ORIGINAL\\PRIMARY\\AXIAL "),
    ("CS", b" A \\\\B\0"),
    ("CS", b"  "),
    ("UI", b"1.2.840.10008.1.2.1\0"),
    ("UI", b"1.2\\1.3 "),
    ("DA", b"20200101\\"),
    ("TM", b"101010.123 "),
    ("AE", b" STORESCU \\ X"),
    ("AS", b"045Y"),
    ("SH", b"abc \\ def\0"),
    ("LO", b"\\"),
    ("LO", b""),
    ("UC", b"x\\y  "),
    ("LT", b"line one\r\nline two\\ with backslash  "),
    ("ST", b"   "),
    ("UT", b"text\0"),
    ("PN", b"Doe^John"),
    ("PN", b"Doe^John=\\=\\^Jane==ph "),
    ("PN", b"=Yamada^Tarou=yamada^tarou"),
    ("PN", b"a=b=c=d"),
    ("PN", b"="),
    ("PN", b"  "),
    ("PN", b"\\"),
    ("IS", b"007\\ -3 \\+4\\"),
    ("IS", b"12345678901234567890"),
    ("IS", b"1.0"),
    ("IS", b"1.5\\2"),
    ("IS", b" "),
    ("DS", b" 1.5\\-2e3 \\\\.5 "),
    ("DS", b"1,5"),
    ("DS", b"NaN"),
    ("DS", b"1e999"),
    ("DS", b"0000000000000001"),
    # control characters Python's str.strip() removes and int() / float() do not
    ("IS", b"1\x1e"),
    ("IS", b"\x1e"),
    ("IS", b" 1\t\\2"),
    ("DS", b"1\x1e\\2"),
    ("DS", b"2.5\x1f"),
    ("DS", b"\x1c\\1"),
    ("US", b"\x01\x00\x02\x00"),
    ("US", b"\x01"),
    ("SS", b"\xff\xff"),
    ("UL", b""),
    ("SL", b"\xfe\xff\xff\xff"),
    ("FL", b"\xcd\xcc\xcc\x3d"),
    ("FL", b"\x00\x00\xc0\x7f"),
    ("FD", b"\x9a\x99\x99\x99\x99\x99\xb9\x3f\x00\x00\x00\x00\x00\x00\xf0\x7f"),
    ("SV", b"\xff" * 8),
    ("UV", b"\xff" * 8),
    ("LO", b"caf\xe9"),
    ("PN", b"\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"),
]


@pytest.mark.parametrize(("vr", "value"), CORNERS, ids=lambda x: repr(x)[:30])
@pytest.mark.parametrize("little_endian", [True, False], ids=["LE", "BE"])
def test_corner_values_encode_alike(vr, value, little_endian, monkeypatch):
    """One element of each VR; explicit VR, in both byte orders (raw values only go
    through rawvalues with an explicit VR)."""
    tag = {"PN": 0x00100010, "UI": 0x00080018}.get(vr, 0x00091010)

    def read() -> Dataset:
        ds = Dataset()
        if tag == 0x00091010:
            ds.add_new(0x00090010, "LO", "TESSERA")
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = little_endian, False
        write_dataset(fp, ds)
        header = (tag >> 16, tag & 0xFFFF)
        order = "<" if little_endian else ">"
        import struct

        padded = value + (b" " if len(value) % 2 else b"")
        if vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV"):
            padded = value
        long_form = vr in ("UC", "UT", "SV", "UV")
        head = struct.pack(order + "HH", *header) + vr.encode()
        if long_form:
            head += b"\0\0" + struct.pack(order + "I", len(padded))
        else:
            head += struct.pack(order + "H", len(padded))
        raw = fp.getvalue() + head + padded
        from pydicom.filereader import read_dataset

        with quiet_pydicom():
            return read_dataset(DicomBytesIO(raw), False, little_endian)

    fast, slow = both_ways(read, monkeypatch)
    assert fast.json == slow.json, (fast.json, slow.json)
    assert (fast.discarded, fast.fallbacks) == (slow.discarded, slow.fallbacks)


def test_what_rawvalues_leaves_to_pydicom():
    assert json_values("LO", b"caf\xe9", True) is None  # a byte above 0x7F
    assert json_values("PN", b"\x1b$B", True) is None  # an ISO 2022 escape
    assert json_values("IS", b"1.0", True) is None
    assert json_values("DS", b"NaN", True) is None
    assert json_values("US", b"\x01", True) is None  # odd length
    assert json_values("FD", b"\x00" * 6 + b"\xf0\x7f", True) is None  # infinity


def test_text_outside_ascii_is_decoded_only_under_a_known_single_character_set():
    latin1 = "Müller^Zoë\\Crâne ".encode("latin_1")
    assert json_values("LO", latin1, True, "latin_1") == ["Müller^Zoë", "Crâne"]
    assert json_values("LO", latin1, True) is None  # no character set: pydicom's way
    assert json_values("PN", "Gómez^José=山田".encode(), True, "utf_8") == [
        {"Alphabetic": "Gómez^José", "Ideographic": "山田"}
    ]
    assert json_values("LO", b"\xff\xfe", True, "utf_8") is None  # not UTF-8
    assert json_values("CS", "É".encode("latin_1"), True, "latin_1") is None  # not a text VR
    assert json_values("LO", b"\x1b$B", True, "latin_1") is None  # an escape
