"""Reads never fail on what STOW accepted (issue 15), by fuzzing: real corpus files,
mutated (image attributes set to odd values, removed, or given another VR; bytes flipped;
the file cut short), sent through the router with STOW-RS. STOW may refuse them (a 4xx, a
409 with PS3.18 Table I.2-2 reasons); whatever it stores is then read every way a viewer
or a peer reads it (tests/support/wado_reads.py): 2xx or 4xx, never a 5xx, and no
service dies.

Bounded for ``make test`` (derandomized, ``TESSERA_FUZZ_EXAMPLES`` examples, 40 unless
set); ``make fuzz`` runs many more, randomized. A failure prints the mutation Hypothesis
shrank it to.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from tests.support.cluster import Cluster
from tests.support.dicomgen import multipart
from tests.support.wado_reads import bulkdata_reads, instance_reads

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
BASES = [
    "MultiframeWindowing.dcm",  # native, 4 frames
    "2026-05-26-oob-monochrome-46341.dcm",  # native, values beyond BitsStored
    "Issue140.dcm",  # JPEG Lossless
    "ColorTestMalaterre.dcm",  # Implicit VR, RGB
    "Series/Lena-1.dcm",  # JPEG Baseline, YBR_FULL_422
    "2021-02-19-MalaterreCP246.dcm",  # JPEG-LS
    "TransferSyntaxes/1.2.840.10008.1.2.4.91.dcm",  # JPEG 2000
    "Formats/Rle.dcm",  # RLE Lossless
    "Issue94.dcm",  # Implicit VR PET
    "LenaTwiceWithFragments.dcm",  # JPEG, 2 frames in fragments
    "Issue22-NoPixelData.dcm",  # image attributes, no pixels
    "MarekLatin2.dcm",  # SR, Latin-2
]
EXAMPLES = int(os.environ.get("TESSERA_FUZZ_EXAMPLES", "25"))
RANDOM = os.environ.get("TESSERA_FUZZ_RANDOM") == "1"

# image attributes whose values the pixel paths trust, with the VR the dictionary gives
IMAGE_ATTRIBUTES = {
    "Rows": "US",
    "Columns": "US",
    "BitsAllocated": "US",
    "BitsStored": "US",
    "HighBit": "US",
    "SamplesPerPixel": "US",
    "PixelRepresentation": "US",
    "PlanarConfiguration": "US",
    "NumberOfFrames": "IS",
    "PhotometricInterpretation": "CS",
    "WindowCenter": "DS",
    "WindowWidth": "DS",
    "RescaleSlope": "DS",
    "RescaleIntercept": "DS",
    "VOILUTFunction": "CS",
    "SpecificCharacterSet": "CS",
    "PatientName": "PN",
    "StudyDate": "DA",
    "ExtendedOffsetTable": "OV",
    "FrameIncrementPointer": "AT",
}
ODD_INTS = st.sampled_from([0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 31, 32, 33, 64, 255, 65535])
ODD_TEXT = st.sampled_from(
    [
        "",
        "0",
        "-1",
        "1e309",
        "NaN",
        "-0",
        "99999999999",
        "abc",
        "1\\2\\3",
        "MONOCHROME1",
        "MONOCHROME2",
        "RGB",
        "PALETTE COLOR",
        "YBR_FULL_422",
        "YBR_RCT",
        "SIGMOID",
        "ISO_IR 192",
        "ISO 2022 IR 87",
        "\\",
        "x" * 70,
    ]
)
OTHER_VRS = st.sampled_from(["OB", "OW", "OS", "UN", "SS", "UL", "SL", "FD", "LO", "UT", "SQ"])

mutation = st.one_of(
    st.tuples(st.just("int"), st.sampled_from(sorted(IMAGE_ATTRIBUTES)), ODD_INTS),
    st.tuples(st.just("text"), st.sampled_from(sorted(IMAGE_ATTRIBUTES)), ODD_TEXT),
    st.tuples(st.just("delete"), st.sampled_from(sorted(IMAGE_ATTRIBUTES)), st.none()),
    st.tuples(st.just("vr"), st.sampled_from(sorted(IMAGE_ATTRIBUTES)), OTHER_VRS),
)
byte_flip = st.tuples(st.integers(0, 4095), st.integers(1, 255))


def _raw(ds: pydicom.Dataset, tag: int, vr: str, value: bytes) -> None:
    """Put ``value`` as the element's bytes, as they are: pydicom writes a raw element
    without converting (or validating) it, so any value reaches the archive."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _bytes_of(ds: pydicom.Dataset, tag: int) -> bytes:
    element = ds.get_item(tag) if tag in ds else None
    if element is None:
        return b""
    if isinstance(element, RawDataElement):
        return element.value or b""
    value = element.value
    return value if isinstance(value, bytes) else str(value).encode()


def _apply(ds: pydicom.Dataset, kind: str, keyword: str, value: Any) -> None:
    tag = pydicom.datadict.tag_for_keyword(keyword)
    assert tag is not None
    vr = IMAGE_ATTRIBUTES[keyword]
    if kind == "delete":
        if tag in ds:
            del ds[tag]
    elif kind == "vr":
        _raw(ds, tag, value, b"" if value == "SQ" else _bytes_of(ds, tag))
    elif kind == "int":
        binary = {"US": "<H", "OV": "<Q", "AT": "<HH"}
        if vr in binary:
            packed = struct.pack(binary[vr], *((value, value) if vr == "AT" else (value,)))
            _raw(ds, tag, vr, packed)
        else:
            _raw(ds, tag, vr, _even(str(value).encode()))
    else:
        _raw(ds, tag, vr, _even(value.encode()))


def _even(value: bytes) -> bytes:
    return value + b" " if len(value) % 2 else value


def mutated(
    base: str,
    mutations: list[tuple[str, str, Any]],
    flips: list[tuple[int, int]],
    cut: int | None,
) -> bytes | None:
    """The base file with fresh UIDs and the mutations; None when pydicom cannot write it
    (a value its VR cannot hold): such a file cannot be made this way."""
    ds = pydicom.dcmread(CORPUS / base, force=True)
    if ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2":  # implicit VR
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # our raw values: explicit
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    if "MediaStorageSOPInstanceUID" in ds.file_meta:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for kind, keyword, value in mutations:
        _apply(ds, kind, keyword, value)
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    except Exception:
        return None
    data = bytearray(buffer.getvalue())
    for position, xor in flips:  # after the preamble and the meta group's start
        index = 300 + position
        if index < len(data):
            data[index] ^= xor
    if cut is not None:
        data = data[: max(200, len(data) * cut // 100)]
    return bytes(data)


def _stow(client: httpx.Client, data: bytes) -> httpx.Response:
    body, content_type = multipart([data])
    return client.post("/studies", content=body, headers={"Content-Type": content_type})


@pytest.fixture(scope="module")
def sync_client(cluster: Cluster):
    with httpx.Client(base_url=cluster.base_url, timeout=120) as c:
        yield c


def _no_5xx(client: httpx.Client, what: str, reads: list[tuple[str, str, dict[str, str]]]):
    answers = {}
    for name, url, headers in reads:
        r = client.get(url, headers=headers)
        assert r.status_code < 500, f"{what}: {name} {url}: {r.status_code} {r.text[:300]}"
        answers[name] = r
    return answers


@settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
@given(
    base=st.sampled_from(BASES),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    flips=st.lists(byte_flip, max_size=3),
    cut=st.one_of(st.none(), st.none(), st.integers(1, 99)),
)
# what it found, kept as examples: each answered 500, or cut its response, before
@example(base="Issue140.dcm", mutations=[("delete", "BitsAllocated", None)], flips=[], cut=None)
@example(
    base="MultiframeWindowing.dcm", mutations=[("vr", "BitsAllocated", "OB")], flips=[], cut=None
)
@example(
    base="MultiframeWindowing.dcm", mutations=[("vr", "BitsAllocated", "UL")], flips=[], cut=None
)
@example(base="Issue140.dcm", mutations=[("int", "NumberOfFrames", 2)], flips=[], cut=None)
def test_what_stow_accepts_is_read_without_5xx(
    cluster: Cluster, sync_client: httpx.Client, base, mutations, flips, cut
) -> None:
    with warnings.catch_warnings():  # pydicom's, about the odd values made on purpose
        warnings.simplefilter("ignore")
        data = mutated(base, mutations, flips, cut)
    assume(data is not None)
    what = f"{base} {mutations} flips={flips} cut={cut}"
    r = _stow(sync_client, data)
    assert r.status_code < 500, f"{what}: STOW {r.status_code} {r.text[:300]}"
    if r.status_code not in (200, 202):
        return
    refs = r.json().get("00081199", {}).get("Value", [])
    if not refs:
        return
    url = refs[0]["00081190"]["Value"][0]
    answers = _no_5xx(sync_client, what, instance_reads(url))
    metadata = answers["metadata"]
    if metadata.status_code == 200:
        _no_5xx(sync_client, what, bulkdata_reads(metadata.json()))


def test_the_services_outlived_the_fuzzing(cluster: Cluster) -> None:
    for name in ("index", "ingest", "retrieve", "router", "index-worker", "transcode"):
        assert cluster.alive(name), f"{name} died:\n{cluster.log(name)}"
