"""Transfer Syntax conversion in memory (tessera.transcode.convert), no worker, no storage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRBigEndian, generate_uid

from tessera.shared.errors import NotAcceptable, UnsupportedTransferSyntax
from tessera.transcode.codecs import CODECS
from tessera.transcode.convert import TARGETS, check_target, transcode

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
SYNTAXES = CORPUS / "TransferSyntaxes"
# every file there that has a File Meta header and a decoder (not 12-bit JPEG Extended)
SOURCES = sorted(
    p.name
    for p in SYNTAXES.glob("*.dcm")
    if p.name not in ("1.2.840.10008.1.2.4.51.dcm", "1.2.840.10008.1.2.dcm")
)


def dataset(data: bytes) -> pydicom.FileDataset:
    return pydicom.dcmread(io.BytesIO(data))


def attributes(ds: Dataset) -> dict[int, object]:
    """Public non-pixel attributes by tag, without group lengths (dropped on writing)."""
    skip = {0x7FE00010}
    return {
        int(e.tag): e.value
        for e in ds
        if e.tag.element != 0 and int(e.tag) not in skip and not e.tag.is_private
    }


# lossless targets: the pixels come back exactly (lossy ones: test_transcode_codecs)
LOSSLESS = sorted(t for t in TARGETS if t not in CODECS or not CODECS[t].lossy)


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("name", SOURCES)
def test_pixels_and_attributes_survive(name: str, target: str) -> None:
    data = (SYNTAXES / name).read_bytes()
    original = dataset(data)
    try:
        out = dataset(transcode(data, target))
    except UnsupportedTransferSyntax as refused:  # PS3.5 8.2 limits, see test_transcode_codecs
        assert target in CODECS and "cannot hold" in refused.reason
        return
    assert out.file_meta.TransferSyntaxUID == target
    assert out.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    assert np.array_equal(out.pixel_array, original.pixel_array)
    before, after = attributes(original), attributes(out)
    # decoding may rewrite how the pixels are described (YBR -> RGB, planar config)
    described = {0x00280004, 0x00280006}
    assert {t: v for t, v in after.items() if t not in described} == {
        t: v for t, v in before.items() if t not in described
    }


@pytest.mark.parametrize("target", sorted(t for t in CODECS if CODECS[t].lossy))
def test_lossy_targets_change_only_pixel_description_and_lossy_history(target: str) -> None:
    """PS3.3 C.7.6.1.1.5: Lossy Image Compression, its Ratio and Method are the only other
    attributes a lossy conversion touches."""
    # 8-bit RGB for JPEG Baseline, a 12-bit CT (Deflated) for the others
    name = "1.2.840.10008.1.2.1" if target == "1.2.840.10008.1.2.4.50" else "1.2.840.10008.1.2.1.99"
    data = (SYNTAXES / f"{name}.dcm").read_bytes()
    original = dataset(data)
    out = dataset(transcode(data, target))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.LossyImageCompression == "01"
    before, after = attributes(original), attributes(out)
    changed = {0x00280004, 0x00280006, 0x00282110, 0x00282112, 0x00282114}
    assert {t: v for t, v in after.items() if t not in changed} == {
        t: v for t, v in before.items() if t not in changed
    }


def test_a_file_already_in_the_target_syntax_is_returned_as_is() -> None:
    data = (SYNTAXES / "1.2.840.10008.1.2.5.dcm").read_bytes()
    assert transcode(data, "1.2.840.10008.1.2.5") is data


@pytest.mark.parametrize(
    "target",
    [
        "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2: no encoder installed
        "1.2.840.10008.1.2.4.110",  # JPEG XL: none either
        "1.2.840.10008.1.2.2",  # Explicit VR Big Endian: retired, never made
        "",
        "x",
    ],
)
def test_other_targets_are_refused(target: str) -> None:
    data = (SYNTAXES / "1.2.840.10008.1.2.1.dcm").read_bytes()
    with pytest.raises(UnsupportedTransferSyntax) as raised:
        transcode(data, target)
    assert isinstance(raised.value, NotAcceptable)
    with pytest.raises(UnsupportedTransferSyntax):
        check_target(target)


def test_a_source_without_a_decoder_is_refused() -> None:
    data = (SYNTAXES / "1.2.840.10008.1.2.4.51.dcm").read_bytes()
    with pytest.raises(UnsupportedTransferSyntax, match="JPEG Extended"):
        transcode(data, "1.2.840.10008.1.2.1")


def test_an_object_without_pixels_changes_syntax_only() -> None:
    data = (CORPUS / "sample-pdf.dcm").read_bytes()
    original = dataset(data)
    for target in sorted(TARGETS):
        out = dataset(transcode(data, target))
        assert out.file_meta.TransferSyntaxUID == target
        assert out.EncapsulatedDocument == original.EncapsulatedDocument


def _file(ds: Dataset, transfer_syntax: str) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def _image() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = 2, 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def test_big_endian_values_are_swapped_not_just_relabelled() -> None:
    ds = _image()
    values = np.array([[1, 2], [3, 258]], dtype=">u2")
    ds.add_new(0x7FE00010, "OW", values.tobytes())  # big-endian bytes, as stored
    ds.add_new(0x60003000, "OW", np.array([1, 0x0102], dtype=">u2").tobytes())  # OverlayData
    data = _file(ds, ExplicitVRBigEndian)
    assert np.array_equal(dataset(data).pixel_array, values)

    out = dataset(transcode(data, "1.2.840.10008.1.2.1"))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(out.pixel_array, values)
    assert out[0x60003000].value == np.array([1, 0x0102], dtype="<u2").tobytes()
    assert out.Rows == 2 and out.BitsAllocated == 16


def test_private_sequences_stay_sequences_in_implicit_vr() -> None:
    ds = _image()
    ds.add_new(0x7FE00010, "OW", np.arange(4, dtype="<u2").tobytes())
    ds.add_new(0x00090010, "LO", "TESSERA TEST")
    item = Dataset()
    item.add_new(0x00091001, "LO", "inside")
    ds.add_new(0x00091002, "SQ", Sequence([item]))
    data = _file(ds, "1.2.840.10008.1.2.1")

    out = dataset(transcode(data, "1.2.840.10008.1.2"))
    assert out.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    seq = out[0x00091002]
    assert seq.VR == "SQ"
    assert seq.value[0][0x00091001].value in ("inside", b"inside")
