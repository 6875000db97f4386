"""Retrieve Frames' pure pieces: the frame list, Accept negotiation for frame parts
(PS3.18 8.7.3.3, Tables 8.7.3-4/5), entity tags and If-None-Match, and transcode's
one-frame decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.pixels import pixel_array
from starlette.requests import Request

from tessera.retrieve.caching import cache_control, entity_tag, matches
from tessera.retrieve.frames import parse_frame_list
from tessera.retrieve.negotiation import (
    COMPRESSED_MEDIA_TYPES,
    PartNegotiation,
    compressed_media_type,
)
from tessera.retrieve.transcoding import can_transcode_frame
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import BadRequest, NotFound, UnsupportedTransferSyntax
from tessera.shared.mediatypes import parse_accept
from tessera.shared.refs import InstanceRef, SeriesRef
from tessera.shared.settings import Settings
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
    ("text", "numbers"), [("1", [1]), ("3,1,3", [3, 1, 3]), ("1, 2", [1, 2]), ("0", [0])]
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
        (f'{MR}; type="image/jls"; transfer-syntax={JLS}', JPEG, None),
        (f'{MR}; type="image/jpeg"', EVRLE, None),
        (f'{MR}; type="image/jp2"; transfer-syntax={JPEG}', JPEG, None),  # not a jp2 syntax
        # q and the cost of converting
        (
            f'{MR}; type="{OCTET}"; q=0.5, {MR}; type="image/jpeg"; q=0.9',
            JPEG,
            ("image/jpeg", JPEG),
        ),
        (f'{MR}; type="image/jls", {MR}; type="{OCTET}"; q=0.3', JPEG, (OCTET, EVRLE)),
        (f'{MR}; type="{OCTET}", {MR}; type="image/jpeg"', JPEG, ("image/jpeg", JPEG)),  # no work
        (f'*/*, {MR}; type="image/jpeg"; q=0', JPEG, None),
        (f'{MR}; type="{OCTET}"; transfer-syntax={J2K}', JPEG, None),  # no J2K encoder
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
