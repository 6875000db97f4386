"""Retrieve Frames' pure pieces: the frame list, Accept negotiation for frame parts
(PS3.18 8.7.3.3, Tables 8.7.3-4/5), entity tags and If-None-Match, and transcode's
one-frame decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from starlette.requests import Request

from tessera.retrieve.caching import cache_control, entity_tag, matches
from tessera.retrieve.frames import parse_frame_list
from tessera.retrieve.negotiation import (
    COMPRESSED_MEDIA_TYPES,
    PartNegotiation,
    compressed_media_type,
)
from tessera.shared.dicomfile import parse_instance
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import BadRequest, NotFound, UnsupportedTransferSyntax
from tessera.shared.frameindex import frame_range
from tessera.shared.mediatypes import parse_accept
from tessera.shared.refs import InstanceRef, SeriesRef
from tessera.shared.settings import Settings
from tessera.shared.storage import LocalStore
from tessera.shared.transcode import FrameLocation, can_transcode_frame
from tessera.transcode.frame_source import read_frame_dataset
from tessera.transcode.frames import decode_frame

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
EVRLE = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"
JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
OCTET = "application/octet-stream"
MR = "multipart/related"


@pytest.mark.parametrize(
    ("text", "numbers"),
    # PS3.18 frame-list: non-duplicate frame numbers, any order; a repeat is served once
    [("1", [1]), ("3,1,3", [3, 1]), ("1, 2", [1, 2]), ("0", [0]), (",".join(["7"] * 9999), [7])],
)
def test_frame_list(text, numbers):
    assert parse_frame_list(text) == numbers


@pytest.mark.parametrize("text", ["", "a", "1,", ",1", "1,,2", "-1", "+1", "1.5", "٣", "1;2"])
def test_malformed_frame_list(text):
    with pytest.raises(BadRequest, match="frame list"):
        parse_frame_list(text)


def choose(accept: str | None, stored: str) -> tuple[str, str] | None:
    negotiation = PartNegotiation(parse_accept(accept), OCTET, COMPRESSED_MEDIA_TYPES)
    return negotiation.choose_part(stored, can_transcode_frame)


@pytest.mark.parametrize(
    ("accept", "stored", "sent"),
    [
        # OHIF's default, unquoted and quoted: as stored, labelled as asked
        (f"{MR}; type=application/octet-stream; transfer-syntax=*", JPEG, (OCTET, JPEG)),
        (f'{MR}; type="application/octet-stream"; transfer-syntax=*', J2K, (OCTET, J2K)),
        (f"{MR}; type=application/octet-stream; transfer-syntax=*", EVRLE, (OCTET, EVRLE)),
        # no transfer-syntax with octet-stream: Explicit VR Little Endian (Table 8.7.3-4)
        (f'{MR}; type="application/octet-stream"', EVRLE, (OCTET, EVRLE)),
        (f'{MR}; type="application/octet-stream"', JPEG, (OCTET, EVRLE)),
        (f'{MR}; type="application/octet-stream"; transfer-syntax={EVRLE}', J2K, (OCTET, EVRLE)),
        # wildcards: the Transfer Syntax's own media type (Table 8.7.3-5)
        (None, JPEG, ("image/jpeg", JPEG)),
        ("*/*", RLE, ("image/dicom-rle", RLE)),
        ("multipart/*", J2K, ("image/jp2", J2K)),
        (MR, EVRLE, (OCTET, EVRLE)),
        (f"{MR}; transfer-syntax={EVRLE}", JLS, (OCTET, EVRLE)),
        # a compressed media type: its own Transfer Syntaxes only
        (f'{MR}; type="image/jpeg"', JPEG, ("image/jpeg", JPEG)),
        (f'{MR}; type="image/jpeg"; transfer-syntax={JPEG}', JPEG, ("image/jpeg", JPEG)),
        (f"{MR}; type=image/jls", JLS, ("image/jls", JLS)),
        (f'{MR}; type="image/x-dicom-rle"', RLE, ("image/dicom-rle", RLE)),
        (f'{MR}; type="image/jls"; transfer-syntax={JLS}', JPEG, ("image/jls", JLS)),  # encoded
        # not stored in one of the type's syntaxes: its default (D), encoded
        (f'{MR}; type="image/jpeg"', EVRLE, ("image/jpeg", "1.2.840.10008.1.2.4.70")),
        (f'{MR}; type="image/jp2"; transfer-syntax={JPEG}', JPEG, None),  # not a jp2 syntax
        # q and the cost of converting
        (
            f'{MR}; type="{OCTET}"; q=0.5, {MR}; type="image/jpeg"; q=0.9',
            JPEG,
            ("image/jpeg", JPEG),
        ),
        (f'{MR}; type="image/jls", {MR}; type="{OCTET}"; q=0.3', JPEG, ("image/jls", JLS)),
        (f'{MR}; type="{OCTET}", {MR}; type="image/jpeg"', JPEG, ("image/jpeg", JPEG)),  # no work
        (f'*/*, {MR}; type="image/jpeg"; q=0', JPEG, None),
        (f'{MR}; type="{OCTET}"; transfer-syntax={J2K}', JPEG, (OCTET, J2K)),  # encoded
        (f'{MR}; type="{OCTET}"; transfer-syntax=1.2.840.10008.1.2.4.110', JPEG, None),  # no JXL
        ("image/jpeg", JPEG, None),  # a bare part type is not a WADO-RS response
        ('multipart/related; type="application/dicom"', JPEG, None),
    ],
)
def test_frame_representation(accept, stored, sent):
    assert choose(accept, stored) == sent


def test_table_8_7_3_5_media_types():
    assert compressed_media_type("1.2.840.10008.1.2.4.70") == "image/jpeg"
    assert compressed_media_type("1.2.840.10008.1.2.4.201") == "image/jphc"
    assert compressed_media_type("1.2.840.10008.1.2.4.93") == "image/jpx"
    assert compressed_media_type(EVRLE) is None
    # each media type's default (D) first
    assert COMPRESSED_MEDIA_TYPES["image/jpeg"][0] == "1.2.840.10008.1.2.4.70"


def test_not_acceptable_names_the_media_type_asked():
    n = PartNegotiation(parse_accept(f'{MR}; type="image/jls"'), OCTET, COMPRESSED_MEDIA_TYPES)
    reason = n.not_acceptable([JPEG], noun="frame").reason
    assert 'type="image/jls"' in reason and JPEG in reason
    bare = PartNegotiation(parse_accept("image/jpeg"), OCTET, COMPRESSED_MEDIA_TYPES)
    assert "multipart/related" in bare.not_acceptable([], noun="frame").reason


# --- caching ---------------------------------------------------------------------------------


def _request(if_none_match: str | None) -> Request:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_entity_tags_are_weak_and_name_their_parts():
    tag = entity_tag("frames", "abc", [1, 2], OCTET)
    assert tag.startswith('W/"') and tag.endswith('"')
    assert tag == entity_tag("frames", "abc", [1, 2], OCTET)
    assert tag != entity_tag("frames", "abc", [2, 1], OCTET)
    assert tag != entity_tag("frames", "abc", [12], OCTET)
    assert tag != entity_tag("metadata", "abc", [1, 2], OCTET)


def test_if_none_match_compares_weakly():
    tag = entity_tag("x", 1)
    strong = tag.removeprefix("W/")
    assert matches(_request(tag), tag)
    assert matches(_request(strong), tag)
    assert matches(_request(f'"other", {tag}'), tag)
    assert matches(_request("*"), tag)
    assert not matches(_request('"other"'), tag)
    assert not matches(_request(None), tag)


def test_cache_control_by_level_and_duplicate_policy():
    instance = InstanceRef("1", "2", "3")
    assert cache_control(Settings(), instance) == "private, max-age=86400"
    assert cache_control(Settings(duplicate_policy="replace"), instance) == "private, no-cache"
    assert cache_control(Settings(), SeriesRef("1", "2")) == "private, max-age=10"


# --- transcode's one-frame decoding ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("Issue16.dcm", 34),  # JPEG baseline YBR_FULL_422, 34 frames: RGB out
        ("LenaTwiceWithFragments.dcm", 2),
        ("TransferSyntaxes/1.2.840.10008.1.2.2.dcm", 1),  # big endian, planar
        ("TransferSyntaxes/1.2.840.10008.1.2.1.99.dcm", 1),  # deflated
        ("2022-11-14-RLEPlanarConfiguration.dcm", 1),
    ],
)
def test_decode_frame_is_pydicoms_decoding_of_that_frame(name, frame):
    data = (CORPUS / name).read_bytes()
    with quiet_pydicom():
        expected = pixel_array(dcmread(CORPUS / name), index=frame - 1)
    got = decode_frame(data, frame)
    assert got == expected.astype(expected.dtype.newbyteorder("<")).tobytes()


def test_decode_frame_packs_single_bits():
    data = (CORPUS / "DicomSeg.dcm").read_bytes()
    with quiet_pydicom():
        ds = dcmread(CORPUS / "DicomSeg.dcm")
    got = np.frombuffer(decode_frame(data, 7), np.uint8)
    assert np.array_equal(np.unpackbits(got, bitorder="little"), ds.pixel_array[6].reshape(-1))


def test_decode_frame_refuses_what_it_cannot_do():
    data = (CORPUS / "Issue16.dcm").read_bytes()
    with pytest.raises(NotFound, match="frame 35"):
        decode_frame(data, 35)
    with pytest.raises(NotFound, match="no pixel data"):
        decode_frame((CORPUS / "sample-pdf.dcm").read_bytes(), 1)
    with pytest.raises(UnsupportedTransferSyntax):
        decode_frame((CORPUS / "2026-05-26-oob-monochrome-65535.dcm").read_bytes(), 1)


# --- transcode reads only the attributes and the asked frame (frame_source) ---------------


class ReadCountingStore(LocalStore):
    """A real local store that counts the bytes read from it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.bytes_read = 0
        self.reads: list[tuple[int, int | None]] = []

    async def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        data = await super().get_bytes(key, start, length)
        self.reads.append((start, length))
        self.bytes_read += len(data)
        return data


def multiframe_j2k(frames: int = 8, size: int = 128) -> bytes:
    """A multi-frame JPEG 2000 Lossless object (none in the corpus), via pylibjpeg."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (generate_uid() for _ in "123")
    ds.PatientName, ds.PatientID, ds.Modality = "Frames^Test", "F-1", "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = frames
    y, x = np.mgrid[:size, :size]
    ds.PixelData = (
        np.stack([(x * y * (k + 1)) % 4096 for k in range(frames)]).astype("<u2").tobytes()
    )
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with quiet_pydicom():
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def located(data: bytes, frame: int) -> FrameLocation:
    """The location retrieve passes the frame task, from the index ingest builds."""
    pixel = parse_instance(io.BytesIO(data)).pixel_data_json()
    assert pixel is not None
    where = frame_range(pixel, frame)
    assert where is not None
    return FrameLocation(int(pixel["offset"]), where.offset, where.length, where.items)


LOCATED = [
    ("Issue164.dcm", 1),  # 87 JPEG frames
    ("Issue164.dcm", 87),
    ("Issue16.dcm", 20),
    ("LenaTwiceWithFragments.dcm", 2),  # a frame of 34 fragments
    ("2022-11-14-RLEPlanarConfiguration.dcm", 1),
    *(
        (f"TransferSyntaxes/1.2.840.10008.1.2.{ts}.dcm", 1)
        for ts in ("4.50", "4.57", "4.70", "4.80", "4.81", "4.90", "4.91", "5")
    ),
    ("j2k-multiframe", 1),
    ("j2k-multiframe", 8),
]


@pytest.mark.parametrize(("name", "frame"), LOCATED)
async def test_a_located_frame_decodes_as_pydicom_from_two_ranged_reads(tmp_path, name, frame):
    data = multiframe_j2k() if name == "j2k-multiframe" else (CORPUS / name).read_bytes()
    location = located(data, frame)
    store = ReadCountingStore(tmp_path)
    await store.put_bytes("object.dcm", data)
    ds, frames = await read_frame_dataset(store, "object.dcm", location)
    got = decode_frame(ds, frame, frames)
    assert got == decode_frame(data, frame)  # pydicom's decoding of the whole object
    assert sorted(store.reads) == sorted([(0, location.header), (location.offset, location.length)])
    assert store.bytes_read == location.header + location.length


async def test_decoding_frame_one_of_a_multiframe_object_reads_a_small_part(tmp_path):
    """The figures for the report: bytes read to decode frame 1, against the object."""
    sources = {"Issue164.dcm": (CORPUS / "Issue164.dcm").read_bytes(), "j2k": multiframe_j2k()}
    for name, data in sources.items():
        store = ReadCountingStore(tmp_path / name)
        await store.put_bytes("object.dcm", data)
        ds, frames = await read_frame_dataset(store, "object.dcm", located(data, 1))
        decode_frame(ds, 1, frames)
        print(f"{name}: {store.bytes_read} of {len(data)} bytes read for frame 1 of {frames}")
        assert store.bytes_read < len(data) / 5


async def test_a_located_frame_is_checked(tmp_path):
    data = (CORPUS / "Issue16.dcm").read_bytes()
    store = ReadCountingStore(tmp_path)
    await store.put_bytes("object.dcm", data)
    ds, frames = await read_frame_dataset(store, "object.dcm", located(data, 1))
    with pytest.raises(NotFound, match="frame 35"):
        decode_frame(ds, 35, frames)
    where = located(data, 1)
    bad = FrameLocation(where.header, where.offset - 8, where.length + 8, 2)  # not 2 items
    with pytest.raises(ValueError, match="item"):
        await read_frame_dataset(store, "object.dcm", bad)
    past = FrameLocation(where.header, len(data) - 4, 100)
    with pytest.raises(ValueError, match="past the end"):
        await read_frame_dataset(store, "object.dcm", past)


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {},
        {"header": 10, "offset": 20, "length": 5},  # items missing
        {"header": 0, "offset": 20, "length": 5, "items": 0},
        {"header": 30, "offset": 20, "length": 5, "items": 0},  # frame before the header
        {"header": 10, "offset": 20, "length": 0, "items": 0},
        {"header": 10, "offset": "20", "length": 5, "items": 0},
        {"header": True, "offset": 20, "length": 5, "items": 0},
        {"header": 1 << 40, "offset": 1 << 41, "length": 5, "items": 0},
    ],
)
def test_frame_location_from_task_arguments_refuses_nonsense(doc):
    assert FrameLocation.from_json(doc) is None


def test_frame_location_round_trip():
    where = FrameLocation(744, 792, 26626, 0)
    assert FrameLocation.from_json(where.to_json()) == where
