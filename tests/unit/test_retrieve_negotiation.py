"""Retrieve's pure pieces: Accept negotiation (PS3.18 8.7.3, 8.7.5), BulkDataURI prefixing,
and the encapsulated-value walker."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest

from tessera.retrieve.metadata import absolute_bulkdata_uris
from tessera.retrieve.negotiation import (
    COMPRESSED_MEDIA_TYPES,
    PartNegotiation,
    compressed_media_type,
    metadata_media_type,
)
from tessera.retrieve.streaming import OpenedPart, until_sequence_delimiter, whole_if_small
from tessera.shared.errors import NotAcceptable, TesseraError
from tessera.shared.mediatypes import parse_accept
from tessera.shared.transcode import (
    COMPRESSED_TARGETS,
    FRAME_TARGETS,
    TARGETS,
    can_transcode,
    can_transcode_frame,
)

EVRLE = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"
J2K = "1.2.840.10008.1.2.4.90"
J2K_LOSSY = "1.2.840.10008.1.2.4.91"
HTJ2K = "1.2.840.10008.1.2.4.201"
JLS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
JXL = "1.2.840.10008.1.2.4.110"  # JPEG XL Lossless: decoded nowhere here, encoded neither
JPX = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2: no encoder
DICOM = 'multipart/related; type="application/dicom"'


def choose(accept: str | None, stored: str) -> str | None:
    return PartNegotiation(parse_accept(accept), "application/dicom").choose(stored, can_transcode)


@pytest.mark.parametrize(
    ("accept", "stored", "sent"),
    [
        (None, JPEG, JPEG),  # no Accept: any representation, so as stored
        ("*/*", JPEG, JPEG),
        ("multipart/related", JPEG, JPEG),
        (DICOM, EVRLE, EVRLE),
        (DICOM, JPEG, EVRLE),  # absent transfer-syntax asks for Explicit VR LE: convert
        (f"{DICOM}; transfer-syntax=*", JPEG, JPEG),
        (f"{DICOM}; transfer-syntax={RLE}", JPEG, RLE),
        # Table 8.7.3-2: any Transfer Syntax transcode encodes (issue 4)
        (f"{DICOM}; transfer-syntax={J2K}", JPEG, J2K),
        (f"{DICOM}; transfer-syntax={J2K_LOSSY}", EVRLE, J2K_LOSSY),
        (f"{DICOM}; transfer-syntax={HTJ2K}", RLE, HTJ2K),
        (f"{DICOM}; transfer-syntax={JLS}", J2K, JLS),
        (f"{DICOM}; transfer-syntax={JPEG}", EVRLE, JPEG),
        (f"{DICOM}; transfer-syntax={JXL}", JPEG, None),  # transcode does not make JPEG XL
        (f"{DICOM}; transfer-syntax={JPX}", EVRLE, None),  # nor JPEG 2000 Part 2
        (f"{DICOM}; transfer-syntax={J2K}", J2K, J2K),
        ("multipart/related; type=application/dicom; transfer-syntax=*", J2K, J2K),
        (f"{DICOM}; transfer-syntax={JXL}, {DICOM}; q=0.5", JPEG, EVRLE),
        (f"{DICOM}; transfer-syntax={J2K}, {DICOM}; q=0.5", JPEG, J2K),
        (f"{DICOM}; q=0.5, {DICOM}; transfer-syntax=*; q=0.5", JPEG, JPEG),  # tie: no work
        (f"{DICOM}; q=0.9, {DICOM}; transfer-syntax=*; q=0.5", JPEG, EVRLE),
        (f"*/*, {DICOM}; transfer-syntax={JPEG}; q=0", JPEG, None),
        (f"*/*, {DICOM}; transfer-syntax=*; q=0", EVRLE, None),
        ("application/dicom", EVRLE, None),
        ('multipart/related; type="application/octet-stream"', EVRLE, None),
        ("application/dicom+json", EVRLE, None),
    ],
)
def test_transfer_syntax_chosen(accept, stored, sent):
    assert choose(accept, stored) == sent


def test_reasons_name_what_was_asked_and_what_is_stored():
    n = PartNegotiation(parse_accept(f"{DICOM}; transfer-syntax={JXL}"), "application/dicom")
    reason = n.not_acceptable([JPEG]).reason
    assert JXL in reason and JPEG in reason
    bare = PartNegotiation(parse_accept("application/dicom"), "application/dicom")
    assert "multipart/related" in bare.not_acceptable([]).reason


def test_retrieve_asks_for_what_transcode_encodes():
    """The contract's targets (tessera.shared.transcode) are exactly the codecs'."""
    from tessera.transcode.codecs import CODECS

    assert frozenset(CODECS) == COMPRESSED_TARGETS
    assert COMPRESSED_TARGETS < TARGETS and COMPRESSED_TARGETS < FRAME_TARGETS
    # a frame in a target is sent as that target's media type (PS3.18 Table 8.7.3-5)
    for uid, codec in CODECS.items():
        assert compressed_media_type(uid) == codec.media_type


@pytest.mark.parametrize("target", sorted(COMPRESSED_TARGETS))
def test_every_compressed_target_is_negotiated_for_instances_and_frames(target):
    assert choose(f"{DICOM}; transfer-syntax={target}", EVRLE) == target
    media_type = compressed_media_type(target)
    assert media_type is not None
    frames = PartNegotiation(
        parse_accept(f'multipart/related; type="{media_type}"; transfer-syntax={target}'),
        "application/octet-stream",
        COMPRESSED_MEDIA_TYPES,
    )
    assert frames.choose_part(EVRLE, can_transcode_frame) == (media_type, target)


@pytest.mark.parametrize(
    ("accept", "stored", "sent"),
    [
        # a compressed media type without transfer-syntax: the stored one if it is one of
        # the type's, else the type's default (D) of Table 8.7.3-5, converted
        ('multipart/related; type="image/jp2"', J2K_LOSSY, ("image/jp2", J2K_LOSSY)),
        ('multipart/related; type="image/jp2"', EVRLE, ("image/jp2", J2K)),
        ('multipart/related; type="image/jls"; transfer-syntax=*', JPEG, ("image/jls", JLS)),
        ('multipart/related; type="image/jphc"', RLE, ("image/jphc", HTJ2K)),
        (
            'multipart/related; type="image/jpeg"',
            EVRLE,
            ("image/jpeg", COMPRESSED_MEDIA_TYPES["image/jpeg"][0]),
        ),
        ('multipart/related; type="image/jxl"', EVRLE, None),  # no JPEG XL encoder
        ('multipart/related; type="image/jpx"', EVRLE, None),  # no JPEG 2000 Part 2 encoder
    ],
)
def test_compressed_frame_media_type_default(accept, stored, sent):
    n = PartNegotiation(parse_accept(accept), "application/octet-stream", COMPRESSED_MEDIA_TYPES)
    assert n.choose_part(stored, can_transcode_frame) == sent


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/dicom+json"),
        ("application/json", "application/json"),
        ("application/dicom+json; q=0.5, application/json; q=0.9", "application/json"),
        ("image/*, application/*; q=0.1", "application/dicom+json"),
    ],
)
def test_metadata_media_type(accept, media_type):
    assert metadata_media_type(parse_accept(accept)) == media_type


@pytest.mark.parametrize(
    "accept", ["application/dicom+xml", 'multipart/related; type="application/dicom+xml"']
)
def test_xml_metadata_is_not_supported(accept):
    with pytest.raises(NotAcceptable, match="not supported"):
        metadata_media_type(parse_accept(accept))


def test_bulkdata_uris_made_absolute_and_nothing_else():
    doc = (
        b'{"7FE00010":{"vr":"OW","BulkDataURI":"/studies/1/bulk/7FE00010"},'
        b'"00104000":{"vr":"LT","Value":["see \\"BulkDataURI\\":\\"/x"]}}'
    )
    out = absolute_bulkdata_uris(doc, 'https://h/"p"')
    assert out.count(b"https://h") == 1
    assert b'"BulkDataURI":"https://h/\\"p\\"/studies/1/bulk/7FE00010"' in out
    assert b'see \\"BulkDataURI\\":\\"/x' in out


def _item(data: bytes) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(data)) + data


async def _collect(chunks: list[bytes]) -> bytes:
    async def source() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    return b"".join([b async for b in until_sequence_delimiter(source())])


@pytest.mark.parametrize("size", [1, 3, 7, 8, 9, 1000])
async def test_encapsulated_value_up_to_the_delimiter_in_any_chunking(size):
    items = _item(b"") + _item(b"\x01" * 10) + _item(b"\xfe\xff\xdd\xe0" * 3)
    stream = items + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0) + b"trailing elements"
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert await _collect(chunks) == items


async def test_encapsulated_value_without_delimiter_fails():
    with pytest.raises(TesseraError, match="Delimitation"):
        await _collect([_item(b"ab")])
    with pytest.raises(TesseraError, match="malformed"):
        await _collect([b"\x10\x00\x10\x00abcd"])


async def _chunks(*chunks: bytes):
    for c in chunks:
        yield c


@pytest.mark.parametrize("limit", [0, 3, 5, 6, 100])
async def test_a_small_object_is_read_whole_a_large_one_streams_from_its_start(limit):
    stream = _chunks(b"bc", b"de", b"f")
    opened = OpenedPart(stream, b"a", content_type="image/jpeg")
    body = await whole_if_small(opened, limit)
    if limit >= 6:
        assert body == b"abcdef"
    else:
        assert body is None
        assert b"".join([c async for c in opened]) == b"abcdef"
