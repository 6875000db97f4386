"""The fast header reader (tessera.shared.fastheader, issue 12) answers exactly what the
pydicom way answers, or declines: every file of the test corpus, with several bulk data
thresholds, and damaged copies of some (truncated anywhere, a length or a byte changed),
where the pydicom way refusing a file means the fast reader must have declined it."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest
from pydicom import dcmread

from tessera.shared import dicomfile
from tessera.shared.boundedio import BoundedReader
from tessera.shared.dicomfile import ParsedInstance, parse_instance
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import InvalidInstance

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
FILES = sorted(p for p in CORPUS.rglob("*.dcm"))
# explicit VR little endian files of several kinds the fast reader must take: native and
# encapsulated pixel data, multi-frame, sequences (defined and undefined lengths), bulk data
TAKEN = [
    "TransferSyntaxes/1.2.840.10008.1.2.1.dcm",
    "TransferSyntaxes/1.2.840.10008.1.2.4.91.dcm",
    "Knee/T1/IM-0001-0001.dcm",
    "DicomSeg.dcm",
    "MultiframeWindowing.dcm",
    "Issue16.dcm",
    "2020-09-11-Christopher-ELSCINT1-Raw.dcm",
    "Issue22-NoPixelData.dcm",
    "sample-pdf.dcm",
    "Brainix/Flair/IM-0001-0001.dcm",  # Latin-1 text (ISO_IR 100)
    "Encodings/Lena-latin1.dcm",
    "Encodings/Lena-utf8.dcm",  # UTF-8 text (ISO_IR 192)
    "Issue56-NoPixelData.dcm",
]


@pytest.fixture(autouse=True)
def fast_way_never_fails(monkeypatch):
    """The fast reader declines; it never fails (which would be logged, then read by
    pydicom anyway, and so invisible in the answers compared here)."""

    def failed(*args, **kwargs):
        raise AssertionError("the fast header reader raised")

    monkeypatch.setattr(dicomfile.log, "exception", failed)


def fast(data: bytes, **kw) -> ParsedInstance | None:
    limit = kw.get("max_value_size", 256 << 20)
    return dicomfile._parse_fast(
        io.BytesIO(data),
        BoundedReader(io.BytesIO(data), limit),
        max_value_size=limit,
        bulk_base=kw.get("bulk_base", "").rstrip("/"),  # as parse_instance passes it
        bulk_data_threshold=kw.get("bulk_data_threshold", 1024),
        large_value_threshold=kw.get("large_value_threshold", 1 << 20),
    )


def slow(data: bytes, monkeypatch, **kw) -> ParsedInstance | InvalidInstance:
    with monkeypatch.context() as m:
        m.setattr(dicomfile, "_parse_fast", lambda *a, **k: None)
        try:
            return parse_instance(io.BytesIO(data), **kw)
        except InvalidInstance as e:
            return e


def assert_alike(data: bytes, monkeypatch, **kw) -> ParsedInstance | None:
    answer = fast(data, **kw)
    expected = slow(data, monkeypatch, **kw)
    if isinstance(expected, InvalidInstance):
        assert answer is None, f"the pydicom way refuses it ({expected.message})"
    elif answer is not None:
        assert answer == expected
        assert list(answer.metadata) == list(expected.metadata)  # the same order too
    return answer


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_file_reads_alike(path, monkeypatch):
    data = path.read_bytes()
    assert_alike(data, monkeypatch)
    assert_alike(data, monkeypatch, bulk_base="https://h/dicomweb/")
    assert_alike(data, monkeypatch, bulk_data_threshold=16, large_value_threshold=24)
    assert_alike(data, monkeypatch, bulk_data_threshold=0, large_value_threshold=None)


@pytest.mark.parametrize("name", TAKEN)
def test_common_files_take_the_fast_way(name, monkeypatch):
    data = (CORPUS / name).read_bytes()
    assert assert_alike(data, monkeypatch) is not None
    expected = slow(data, monkeypatch)
    # and parse_instance uses it: pydicom is not asked
    with monkeypatch.context() as m:
        m.setattr(dicomfile, "dcmread", _no_pydicom)
        assert parse_instance(io.BytesIO(data)) == expected


def _no_pydicom(*args, **kwargs):
    raise AssertionError("read with pydicom")


def _element_offsets(data: bytes) -> list[int]:
    """Offsets of the top-level element headers after the File Meta (explicit VR LE)."""
    offsets, pos = [], 132
    while pos + 8 <= len(data):
        offsets.append(pos)
        group, _element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"):
            (length,) = struct.unpack_from("<L", data, pos + 8)
            if length == 0xFFFFFFFF or group == 0x7FE0:
                break
            pos += 12 + length
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return offsets


DAMAGED = ["TransferSyntaxes/1.2.840.10008.1.2.1.dcm", "Issue16.dcm", "DicomSeg.dcm"]


@pytest.mark.parametrize("name", DAMAGED)
def test_truncated_copies_read_alike_or_are_declined(name, monkeypatch):
    data = (CORPUS / name).read_bytes()
    offsets = _element_offsets(data)
    cuts = {0, 100, 131, 132, 140, len(data) - 1, len(data) - 2}
    for pos in offsets[:: max(1, len(offsets) // 25)]:
        cuts.update({pos, pos + 3, pos + 9})
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        assert_alike(data[:cut], monkeypatch)


@pytest.mark.parametrize("name", DAMAGED)
def test_changed_bytes_read_alike_or_are_declined(name, monkeypatch):
    data = (CORPUS / name).read_bytes()
    rng = random.Random(12)
    offsets = _element_offsets(data)
    for pos in offsets:  # every top-level element's VR and length
        for at, value in ((pos + 4, b"XX"), (pos + 4, b"UN"), (pos + 6, b"\xff\xff")):
            assert_alike(data[:at] + value + data[at + len(value) :], monkeypatch)
    end = offsets[-1] if offsets else 1024
    for _ in range(60):  # anywhere in the header: a byte, or two as a VR, a tag, a length
        at = rng.randrange(132, end)
        changed = bytearray(data)
        if rng.random() < 0.5:
            changed[at] = rng.randrange(256)
        else:
            changed[at : at + 2] = rng.choice([b"\xff\xff", b"\x00\x00", b"UN", b"SQ", b"\xfe\xff"])
        assert_alike(bytes(changed), monkeypatch, bulk_data_threshold=rng.choice([1024, 16, 0]))


def test_a_data_set_starting_with_the_command_group_is_left_to_pydicom(monkeypatch):
    # found by mutation: the last File Meta element's group made 0000; pydicom reads a
    # data set that starts with group 0000 as a DIMSE command set (implicit VR), and warns
    data = bytearray((CORPUS / "Series/Lena-2.dcm").read_bytes())
    at = data.index(b"\x02\x00\x13\x00SH")  # (0002,0013) Implementation Version Name
    data[at : at + 2] = b"\x00\x00"
    assert fast(bytes(data)) is None
    expected = slow(bytes(data), monkeypatch)
    assert isinstance(expected, ParsedInstance) and expected.warnings


@pytest.mark.parametrize("name", ["Encodings/Lena-utf8.dcm", "Encodings/Lena-latin2.dcm"])
def test_text_the_fast_way_cannot_decode_is_left_to_pydicom(name, monkeypatch):
    # a byte that is not UTF-8 under ISO_IR 192 (pydicom replaces it and warns), and
    # Latin-2 (ISO_IR 101), not one of the character sets decoded here
    data = bytearray((CORPUS / name).read_bytes())
    if name.endswith("utf8.dcm"):
        with quiet_pydicom():
            ds = dcmread(io.BytesIO(bytes(data)), stop_before_pixels=True)
        raw = ds.get_item(0x00100010)
        data[raw.value_tell] = 0xFF
    assert fast(bytes(data)) is None
    assert isinstance(slow(bytes(data), monkeypatch), ParsedInstance)


def test_a_value_bound_below_what_the_fast_way_reads_leaves_it_to_pydicom(monkeypatch):
    data = (CORPUS / "TransferSyntaxes/1.2.840.10008.1.2.1.dcm").read_bytes()
    assert fast(data, max_value_size=64) is None
    assert isinstance(slow(data, monkeypatch, max_value_size=64), InvalidInstance)
