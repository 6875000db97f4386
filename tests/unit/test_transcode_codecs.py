"""Transcoding to compressed Transfer Syntaxes (tessera.transcode.codecs), in memory.

Every file of the corpus' TransferSyntaxes/ and Formats/ x every target transcode
encodes: the result, decoded by pydicom, against pydicom's decoding of the original —
equal for lossless targets, within a PSNR floor for lossy ones (PS3.5 A.4, 8.2); frames
(PS3.18 10.4.1.1.x, Table 8.7.3-5) likewise, as stored and converted. Which pairs are
refused is decided here from PS3.5 Tables 8.2.1-1..8.2.4-1, not by asking the codecs.

PSNR is measured against the original's value range (max - min), stricter than against
2^BitsStored - 1 for data that spans little of its bits (12-bit MR up to 426). Floors,
a few dB under what the encoders measured on these files (worst case in brackets):
JPEG Baseline q95 4:2:2 34 dB [34.5, a 256x120 US with coloured text], JPEG Extended
12-bit q95 45 dB [51.9], JPEG-LS NEAR=2 40 dB [44.8] and |error| <= 2 by definition,
JPEG 2000 (aimed at 45 dB) 40 dB [42.7, RGB after the ICT], HTJ2K step range/1000
40 dB [44.4].
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.uid import UID, ImplicitVRLittleEndian

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import NotAcceptable, UnsupportedTransferSyntax
from tessera.transcode.codecs import CODECS
from tessera.transcode.convert import transcode
from tessera.transcode.frames import frame_in

CORPUS = Path(__file__).parents[1] / "data" / "corpus"
FILES = {
    f"{p.parent.name}/{p.name}": p
    for folder in ("TransferSyntaxes", "Formats")
    for p in sorted((CORPUS / folder).glob("*.dcm"))
}
# those stored compressed: their frames have a bitstream to serve as stored
COMPRESSED = sorted(
    name
    for name, path in FILES.items()
    if str(
        pydicom.dcmread(path, stop_before_pixels=True, force=True).file_meta.get(
            "TransferSyntaxUID", ""
        )
    )
    in CODECS
)
MULTIFRAME = CORPUS / "LenaTwiceWithFragments.dcm"  # 2 frames, JPEG Baseline YBR_FULL_422

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JLS_NEAR = "1.2.840.10008.1.2.4.81"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202")
HTJ2K = "1.2.840.10008.1.2.4.203"

# lossy target: (PSNR floor in dB, Lossy Image Compression Method, PS3.3 C.7.6.1.1.5.1)
LOSSY = {
    JPEG_BASELINE: (34.0, "ISO_10918_1"),
    JPEG_EXTENDED: (45.0, "ISO_10918_1"),
    JLS_NEAR: (40.0, "ISO_14495_1"),
    J2K: (40.0, "ISO_15444_1"),
    HTJ2K: (40.0, "ISO_15444_15"),
}


def test_the_corpus_is_there():
    assert len(FILES) == 17 and len(COMPRESSED) == 13
    assert set(CODECS) > {J2K_LOSSLESS, J2K, JPEG_BASELINE, *HTJ2K_LOSSLESS, HTJ2K}


def ps310(path: Path) -> bytes:
    """The file as the archive stores it: with File Meta Information (PS3.10 7.1). The
    corpus' Implicit VR file has none; ingest would add it."""
    with quiet_pydicom():
        ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" in ds.file_meta:
        return path.read_bytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()


def read(data: bytes) -> pydicom.FileDataset:
    with quiet_pydicom():
        return pydicom.dcmread(io.BytesIO(data))


@functools.cache
def original(name: str) -> tuple[bytes, pydicom.FileDataset, np.ndarray | None]:
    """The file, its data set, pydicom's decoding of its pixels (None: no decoder)."""
    data = ps310(FILES[name])
    ds = read(data)
    try:
        with quiet_pydicom():
            pixels = ds.pixel_array
    except RuntimeError:
        pixels = None
    return data, ds, pixels


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Peak signal-to-noise ratio, the peak being the reference's value range."""
    ref = reference.astype(np.float64)
    mse = float(np.mean((ref - decoded.astype(np.float64)) ** 2))
    peak = max(float(ref.max() - ref.min()), 1.0)
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def decoded_photometric(ds: Dataset) -> str:
    """The Photometric Interpretation of pydicom's decoding: YCbCr comes out as RGB."""
    pi = str(ds.PhotometricInterpretation)
    return "RGB" if pi.startswith("YBR") else pi


def refusal(ds: Dataset, target: str) -> str | None:
    """Why PS3.5 8.2 lets ``target`` not hold these pixels unchanged, or None."""
    unsigned = int(ds.PixelRepresentation) == 0
    bits = int(ds.BitsStored)
    mono = int(ds.SamplesPerPixel) == 1
    if target == JPEG_BASELINE and not (bits == 8 and unsigned):
        return "Table 8.2.1-1: JPEG Baseline is 8-bit unsigned"
    if target == JPEG_EXTENDED and not (mono and unsigned and bits in (8, 12)):
        return "Table 8.2.1-1: JPEG Extended is 8/12-bit unsigned monochrome"
    return None


def photometric_after(decoded_pi: str, target: str) -> str:
    """PS3.5 8.2: what colour becomes in each target (monochrome stays as it is)."""
    if decoded_pi != "RGB":
        return decoded_pi
    if target == JPEG_BASELINE:
        return "YBR_FULL_422"
    if target in (J2K_LOSSLESS, *HTJ2K_LOSSLESS):
        return "YBR_RCT"
    if target in (J2K, HTJ2K):
        return "YBR_ICT"
    return "RGB"


def compare(reference: np.ndarray, decoded: np.ndarray, target: str) -> None:
    assert decoded.shape == reference.shape
    if target not in LOSSY:
        assert np.array_equal(decoded, reference)
        return
    assert psnr(reference, decoded) >= LOSSY[target][0]
    if target == JLS_NEAR:  # near-lossless: no sample off by more than NEAR
        assert np.abs(decoded.astype(np.int64) - reference).max() <= 2


@pytest.mark.parametrize("target", sorted(CODECS))
@pytest.mark.parametrize("name", sorted(FILES))
def test_instance_converted_decodes_to_the_same_pixels(name: str, target: str) -> None:
    data, ds, pixels = original(name)
    source = UID(ds.file_meta.TransferSyntaxUID)
    if source == target:
        assert transcode(data, target) is data
        return
    if pixels is None:  # 12-bit JPEG Extended: no installed decoder reads it
        assert source == JPEG_EXTENDED
        with pytest.raises(UnsupportedTransferSyntax, match="cannot convert"):
            transcode(data, target)
        return
    why = refusal(ds, target)
    if why is not None:
        with pytest.raises(UnsupportedTransferSyntax, match="cannot hold") as refused:
            transcode(data, target)
        assert isinstance(refused.value, NotAcceptable)  # 406 at retrieve
        assert "rescale" in refused.value.reason and "PS3.5" in refused.value.reason
        return

    out = read(transcode(data, target))
    assert out.file_meta.TransferSyntaxUID == target
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert out.PhotometricInterpretation == photometric_after(decoded_photometric(ds), target)
    assert out.BitsStored == ds.BitsStored and out.PixelRepresentation == ds.PixelRepresentation
    with quiet_pydicom():
        compare(pixels, out.pixel_array, target)
    if target in LOSSY:
        assert out.LossyImageCompression == "01"
        ratios = out.LossyImageCompressionRatio
        methods = out.LossyImageCompressionMethod
        ratios = list(ratios) if isinstance(ratios, pydicom.multival.MultiValue) else [ratios]
        methods = list(methods) if isinstance(methods, pydicom.multival.MultiValue) else [methods]
        assert methods[-1] == LOSSY[target][1]
        assert float(ratios[-1]) > 1
        assert len(ratios) == len(methods)  # one pair per lossy step (C.7.6.1.1.5)
    else:  # a lossless target leaves the history as it was
        assert out.get("LossyImageCompression") == ds.get("LossyImageCompression")


def one_frame(ds: Dataset, frame: bytes, ts: str, photometric: str) -> np.ndarray:
    """pydicom's decoding of one frame's bytes in ``ts``, described by ``ds``."""
    single = Dataset()
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored"):
        setattr(single, keyword, ds[keyword].value)
    single.HighBit = int(ds.BitsStored) - 1
    single.PixelRepresentation = ds.PixelRepresentation
    single.PhotometricInterpretation = photometric
    if int(ds.SamplesPerPixel) > 1:
        single.PlanarConfiguration = 0
    single.file_meta = FileMetaDataset()
    single.file_meta.TransferSyntaxUID = UID(ts)
    single.PixelData = encapsulate([frame])
    single["PixelData"].VR = "OB"
    with quiet_pydicom():
        return single.pixel_array


@pytest.mark.parametrize("name", COMPRESSED)
def test_frame_as_stored_is_the_stored_bitstream(name: str) -> None:
    data, ds, pixels = original(name)
    source = str(ds.file_meta.TransferSyntaxUID)
    frame = frame_in(data, 1, source)
    assert frame == get_frame(ds.PixelData, 0, number_of_frames=1)
    if pixels is not None:
        assert np.array_equal(one_frame(ds, frame, source, ds.PhotometricInterpretation), pixels)


@pytest.mark.parametrize("target", sorted(CODECS))
def test_frames_of_a_multiframe_object(target: str) -> None:
    """Each frame of a 2-frame colour JPEG, alone in ``target`` (as image/jpeg, image/jls,
    image/jp2, image/jphc, image/dicom-rle carry it), and the whole object converted."""
    data = MULTIFRAME.read_bytes()
    ds = read(data)
    with quiet_pydicom():
        pixels = ds.pixel_array
    assert pixels.shape[0] == 2
    if refusal(ds, target):
        with pytest.raises(UnsupportedTransferSyntax, match="cannot hold"):
            frame_in(data, 2, target)
        return
    photometric = ds.PhotometricInterpretation
    if target != ds.file_meta.TransferSyntaxUID:
        photometric = photometric_after("RGB", target)
    for n in (1, 2):
        frame = frame_in(data, n, target)
        compare(pixels[n - 1], one_frame(ds, frame, target, photometric), target)
    if target != ds.file_meta.TransferSyntaxUID:
        out = read(transcode(data, target))
        assert out.NumberOfFrames == 2 and out.PhotometricInterpretation == photometric
        with quiet_pydicom():
            compare(pixels, out.pixel_array, target)


def test_16_bit_ct_is_refused_for_jpeg_baseline_naming_why() -> None:
    data, _, _ = original("TransferSyntaxes/1.2.840.10008.1.2.4.70.dcm")
    with pytest.raises(UnsupportedTransferSyntax) as refused:
        transcode(data, JPEG_BASELINE)
    reason = refused.value.reason
    assert "BitsStored 16" in reason and "signed" in reason and "Table 8.2.1-1" in reason
    with pytest.raises(UnsupportedTransferSyntax, match="cannot hold"):
        frame_in(data, 1, JPEG_BASELINE)


def test_single_bit_and_float_pixels_are_refused() -> None:
    seg = (CORPUS / "DicomSeg.dcm").read_bytes()  # BitsAllocated 1, 96 frames
    with pytest.raises(UnsupportedTransferSyntax, match="BitsAllocated 1"):
        transcode(seg, J2K_LOSSLESS)
    with pytest.raises(UnsupportedTransferSyntax, match="BitsAllocated 1"):
        frame_in(seg, 3, J2K_LOSSLESS)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.30", pydicom.uid.generate_uid()
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 32
    ds.FloatPixelData = np.arange(4, dtype="<f4").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    pydicom.dcmwrite(out, ds, enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntax, match="float pixel data"):
        transcode(out.getvalue(), J2K)


def test_lossy_history_gets_one_more_step() -> None:
    """A JPEG-LS near-lossless CT (ratio recorded, method not) to JPEG 2000 lossy: the
    earlier method is filled in from its Transfer Syntax, this step appended after it."""
    data, ds, _ = original("TransferSyntaxes/1.2.840.10008.1.2.4.81.dcm")
    assert ds.LossyImageCompression == "01" and "LossyImageCompressionMethod" not in ds
    out = read(transcode(data, J2K))
    assert list(out.LossyImageCompressionMethod) == ["ISO_14495_1", "ISO_15444_1"]
    assert len(out.LossyImageCompressionRatio) == 2
    assert float(out.LossyImageCompressionRatio[0]) == float(ds.LossyImageCompressionRatio)


def _cod(codestream: bytes) -> tuple[int, int]:
    """(progression order, multiple component transform) of a J2K main header's COD."""
    at = codestream.index(b"\xff\x52")  # COD: Lcod(2) Scod(1) order(1) layers(2) MCT(1)
    return codestream[at + 5], codestream[at + 8]


@pytest.mark.parametrize("target", [J2K_LOSSLESS, J2K, *HTJ2K_LOSSLESS, HTJ2K])
def test_jpeg_2000_colour_is_labelled_by_the_transform_applied(target: str) -> None:
    """PS3.5 8.2.4: YBR_RCT / YBR_ICT say the codestream's colour transform is on (COD
    MCT = 1); HTJ2K is a Part 15 codestream (CAP marker), RPCL with TLM for .202."""
    data, _, _ = original("TransferSyntaxes/1.2.840.10008.1.2.1.dcm")  # 8-bit RGB
    out = read(transcode(data, target))
    frame = get_frame(out.PixelData, 0, number_of_frames=1)
    assert frame[:4] == b"\xff\x4f\xff\x51"  # SOC, SIZ: a bare codestream, as DICOM has it
    order, mct = _cod(frame)
    assert mct == 1 and out.PhotometricInterpretation in ("YBR_RCT", "YBR_ICT")
    if target in (*HTJ2K_LOSSLESS, HTJ2K):
        assert b"\xff\x50" in frame[: frame.index(b"\xff\x52")]  # CAP, before COD
    if target == HTJ2K_LOSSLESS[1]:
        assert order == 2  # RPCL
        assert b"\xff\x55" in frame[: frame.index(b"\xff\x90")]  # TLM in the main header
