"""The frame index (tessera.shared.frameindex): built from item positions and the Image
Pixel attributes, read back as byte ranges; and through parse_instance on real and
generated files, each range holding exactly the frame pydicom finds."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

from tessera.shared.dicomfile import parse_instance
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.frameindex import (
    FrameIndex,
    FrameRange,
    Geometry,
    build_frame_index,
    encapsulated_index,
    frame_range,
    native_index,
)
from tessera.shared.pixeldata import PixelDataInfo

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
JPEG = "1.2.840.10008.1.2.4.50"
MONO16 = Geometry(rows=4, columns=3, samples_per_pixel=1, bits_allocated=16)


def _never(offset: int, length: int) -> bytes:
    raise AssertionError("nothing should be read")


# --- native ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geometry", "frames", "length", "expected"),
    [
        (MONO16, 2, 48, FrameIndex(frame_length=24)),
        (Geometry(2, 2, 3, 8), 1, 12, FrameIndex(frame_length=12)),
        (Geometry(2, 2, 3, 8, "YBR_FULL_422"), 3, 24, FrameIndex(frame_length=8)),
        (Geometry(4, 4, 1, 1), 3, 6, FrameIndex(frame_length=2)),  # 16 bits: byte aligned
        (Geometry(2, 2, 1, 32), 1, 16, FrameIndex(frame_length=16)),  # Float Pixel Data
        (Geometry(2, 2, 1, 16), 3, 25, FrameIndex(frame_length=8)),  # trailing padding
    ],
)
def test_native_frames_follow_each_other(geometry, frames, length, expected):
    assert native_index(length, frames, geometry) == expected


@pytest.mark.parametrize(
    ("geometry", "frames", "length", "why"),
    [
        (Geometry(3, 3, 1, 1), 2, 3, "do not start on a byte"),
        (MONO16, 3, 48, "Pixel Data has 48 bytes"),
        (Geometry(None, 3, 1, 16), 1, 48, "missing"),
    ],
)
def test_native_frames_that_cannot_be_ranged_are_decoded(geometry, frames, length, why):
    index = native_index(length, frames, geometry)
    assert index.decode is not None and why in index.decode
    assert set(index.to_json()) == {"frames_decode"}


def test_deflated_and_absurd_counts_are_decoded():
    info = PixelDataInfo(100, 48, "OW", False, deflated=True)
    args = {"transfer_syntax": "1.2.840.10008.1.2.1.99", "geometry": MONO16}
    built = build_frame_index(
        info, None, number_of_frames=2, extended_offsets=None, read=_never, **args
    )
    assert built.decode is not None and "Deflated" in built.decode
    info = PixelDataInfo(100, 48, "OW", False)
    built = build_frame_index(
        info, None, number_of_frames=10**6, extended_offsets=None, read=_never, **args
    )
    assert built.decode is not None and "more than" in built.decode


# --- encapsulated ----------------------------------------------------------------------------


def _layout(bot: bytes, fragments: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """Encapsulated items at offset 0 of a buffer, and their (value offset, length)."""
    data, items = b"", []
    for value in [bot, *fragments]:
        data += struct.pack("<HHL", 0xFFFE, 0xE000, len(value))
        items.append((len(data), len(value)))
        data += value
    return data, items


def _index(bot: bytes, fragments: list[bytes], frames: int, eot: bytes | None = None):
    data, items = _layout(bot, fragments)
    index = encapsulated_index(items, frames, JPEG, eot, lambda o, n: data[o : o + n])
    return data, index


def _frames(data: bytes, index: FrameIndex) -> list[bytes]:
    """The frames the index points at, item headers dropped."""
    out = []
    for entry in index.to_json()["frames"]:
        r = FrameRange(*entry)
        chunk = data[r.offset : r.offset + r.length]
        if not r.items:
            out.append(chunk)
            continue
        value, pos = b"", 0
        for _ in range(r.items):
            (n,) = struct.unpack("<L", chunk[pos + 4 : pos + 8])
            value += chunk[pos + 8 : pos + 8 + n]
            pos += 8 + n
        assert pos == len(chunk)
        out.append(value)
    return out


def test_basic_offset_table_groups_fragments():
    frags = [b"\xff\xd8a", b"b\xff\xd9", b"\xff\xd8cc\xff\xd9", b"\xff\xd8d", b"e\xff\xd9"]
    bot = struct.pack("<3L", 0, 8 + 3 + 8 + 3, 8 + 3 + 8 + 3 + 8 + 6)
    data, index = _index(bot, frags, 3)
    assert _frames(data, index) == [frags[0] + frags[1], frags[2], frags[3] + frags[4]]
    assert [len(f) for f in index.to_json()["frames"]] == [3, 2, 3]


def test_extended_offset_table_when_the_basic_one_is_empty():
    frags = [b"aa", b"bb", b"cc", b"dd"]
    eot = struct.pack("<2Q", 0, 20)  # frame 2 starts at the third fragment
    data, index = _index(b"", frags, 2, eot)
    assert _frames(data, index) == [b"aabb", b"ccdd"]


@pytest.mark.parametrize(
    "bot",
    [
        struct.pack("<2L", 0, 5),  # not an item start
        struct.pack("<2L", 10, 20),  # not starting at 0
        struct.pack("<3L", 0, 10, 20),  # one entry too many
    ],
)
def test_an_invalid_basic_offset_table_is_not_trusted(bot):
    data, index = _index(bot, [b"aa", b"bb"], 2)  # falls back to one fragment per frame
    assert _frames(data, index) == [b"aa", b"bb"]


def test_single_frame_takes_every_fragment():
    data, index = _index(b"", [b"ab", b"cd", b"ef"], 1)
    assert _frames(data, index) == [b"abcdef"]


def test_without_tables_jpeg_frames_end_at_their_eoi_marker():
    frags = [b"\xff\xd8a", b"b\xff\xd9\x00", b"\xff\xd8c\xff\xd9", b"\xff\xd8", b"d\xff\xd9"]
    data, index = _index(b"", frags, 3)
    assert _frames(data, index) == [frags[0] + frags[1], frags[2], frags[3] + frags[4]]


@pytest.mark.parametrize(
    ("fragments", "frames", "ts"),
    [
        ([b"\xff\xd8a", b"b\xff\xd9", b"c\xff\xd9"], 2, "1.2.840.10008.1.2.4.100"),  # video
        ([b"\xff\xd8a", b"b\xff\xd9", b"c\xff\xd9"], 4, JPEG),  # fewer fragments than frames
        ([b"a\xff\xd9", b"b", b"c"], 2, JPEG),  # last fragment does not end a frame
        ([], 1, JPEG),
    ],
)
def test_fragments_that_cannot_be_assigned_are_decoded(fragments, frames, ts):
    data, items = _layout(b"", fragments)
    index = encapsulated_index(items, frames, ts, None, lambda o, n: data[o : o + n])
    assert index.frames is None and index.decode


def test_too_many_items_to_record_are_decoded():
    info = PixelDataInfo(100, None, "OB", True)
    index = build_frame_index(
        info,
        None,
        transfer_syntax=JPEG,
        number_of_frames=2,
        geometry=MONO16,
        extended_offsets=None,
        read=_never,
    )
    assert index.decode == "too many fragments to index"


# --- reading the record ----------------------------------------------------------------------


def test_frame_range_reads_every_form_and_old_rows():
    native = {"offset": 100, "length": 48, "encapsulated": False, "frame_length": 24}
    assert frame_range(native, 2) == FrameRange(124, 24)
    encapsulated = {"offset": 10, "encapsulated": True, "frames": [[20, 5], [33, 30, 2]]}
    assert frame_range(encapsulated, 1) == FrameRange(20, 5)
    assert frame_range(encapsulated, 2) == FrameRange(33, 30, 2)
    assert frame_range({"offset": 1, "frames_decode": "why"}, 1) is None
    assert frame_range({"offset": 1, "length": 8, "encapsulated": False}, 1) is None  # legacy


# --- through parse_instance ------------------------------------------------------------------


def _file(transfer_syntax: str, pixel_data: bytes, frames: int, **extra: object) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 2, 2, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _indexed_frames(data: bytes) -> list[bytes]:
    doc = parse_instance(io.BytesIO(data)).pixel_data_json()
    assert doc is not None
    return _frames(data, FrameIndex(frames=tuple(tuple(f) for f in doc["frames"])))


def test_parse_instance_indexes_basic_and_extended_offset_tables():
    frames = [b"\xff\xd8" + bytes([i]) * (3 + i) + b"\xff\xd9" for i in range(5)]
    data = _file(JPEGBaseline8Bit, encapsulate(frames, fragments_per_frame=2), 5)
    assert [f.rstrip(b"\x00") for f in _indexed_frames(data)] == frames
    pixel_data, eot, lengths = encapsulate_extended(frames)
    data = _file(
        JPEGBaseline8Bit,
        pixel_data,
        5,
        ExtendedOffsetTable=eot,
        ExtendedOffsetTableLengths=lengths,
    )
    assert [f.rstrip(b"\x00") for f in _indexed_frames(data)] == frames


def test_parse_instance_indexes_native_frames():
    pixels = bytes(range(12))
    data = _file(ExplicitVRLittleEndian, pixels, 3)
    doc = parse_instance(io.BytesIO(data)).pixel_data_json()
    assert doc is not None and doc["frame_length"] == 4
    r = frame_range(doc, 3)
    assert r is not None and data[r.offset : r.offset + r.length] == pixels[8:]


def test_parse_instance_records_why_frames_need_decoding():
    data = _file(RLELossless, encapsulate([b"a" * 64, b"b" * 64, b"c" * 64]), 2)
    doc = parse_instance(io.BytesIO(data)).pixel_data_json()
    assert doc is not None and "3 fragments for 2 frames" in doc["frames_decode"]


@pytest.mark.parametrize(
    "name",
    [
        "LenaTwiceWithFragments.dcm",  # 2 frames of 68 fragments each, Basic Offset Table
        "Issue16.dcm",  # 34 frames, one fragment each
        "TransferSyntaxes/1.2.840.10008.1.2.4.51.dcm",  # one frame, two fragments
        "TransferSyntaxes/1.2.840.10008.1.2.5.dcm",
    ],
)
def test_corpus_frames_are_what_pydicom_finds(name):
    data = (CORPUS / name).read_bytes()
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    expected = list(generate_frames(ds.PixelData, number_of_frames=ds.get("NumberOfFrames", 1)))
    assert _indexed_frames(data) == expected


def test_corpus_native_multiframe_ranges():
    data = (CORPUS / "DicomSeg.dcm").read_bytes()  # 96 frames of 1-bit 256x256: 8192 bytes
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data))
    doc = parse_instance(io.BytesIO(data)).pixel_data_json()
    assert doc is not None and doc["frame_length"] == 8192
    r = frame_range(doc, 96)
    assert r is not None
    assert data[r.offset : r.offset + r.length] == ds.PixelData[95 * 8192 : 96 * 8192]
    frame = np.frombuffer(data[r.offset : r.offset + r.length], np.uint8)
    with quiet_pydicom():
        last = ds.pixel_array[95]
    assert np.array_equal(np.unpackbits(frame, bitorder="little"), last.reshape(-1))
