"""Transfer Syntax conversion of one DICOM file, in memory (no I/O, no Celery).

Sources: whatever pydicom 3 decodes with the pylibjpeg plugins installed (PS3.5 A.4:
JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE; and the native syntaxes,
including Deflated and the retired Explicit VR Big Endian). Targets (PS3.5 Annex A):

    1.2.840.10008.1.2      Implicit VR Little Endian  (A.1)
    1.2.840.10008.1.2.1    Explicit VR Little Endian  (A.2, the DICOMweb default)
    and every compressed syntax of :data:`tessera.transcode.codecs.CODECS` (A.4: JPEG
    Baseline/Extended/Lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE Lossless)

Everything but the pixel encoding is kept, SOP Instance UID included: the result is
the same instance in another Transfer Syntax, as WADO-RS returns it for a
``transfer-syntax`` media type parameter (PS3.18 8.7). A source already in the target
syntax is returned unchanged. To a compressed target the frames are decoded one at a
time and encoded by :func:`~tessera.transcode.codecs.encode_frame`, which refuses pixel
data the target cannot hold as is; PhotometricInterpretation becomes what the encoder
made (PS3.5 8.2), and a lossy target marks the result as lossy compressed: Lossy Image
Compression "01", this step's ratio and method appended to Lossy Image Compression
Ratio / Method, in step order (PS3.3 C.7.6.1.1.5).
"""

from __future__ import annotations

import io

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import VR

from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.errors import UnsupportedTransferSyntax
from tessera.transcode.bad_data import DATA_ERRORS
from tessera.transcode.codecs import CODECS, Codec, check_source, encode_frame, pixel_format

NATIVE_TARGETS: frozenset[str] = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
TARGETS: frozenset[str] = NATIVE_TARGETS | frozenset(CODECS)

# Byte width of the values of the "other" VRs whose byte order follows the Transfer
# Syntax (PS3.5 7.3); OB and UN are bytes and never swapped.
_SWAPPED_WIDTH: dict[str, int] = {VR.OW: 2, VR.OF: 4, VR.OL: 4, VR.OD: 8, VR.OV: 8}


def check_target(target_ts: str) -> UID:
    """``target_ts`` as a UID if we can produce it, else :class:`UnsupportedTransferSyntax`."""
    if target_ts not in TARGETS:
        supported = ", ".join(sorted(TARGETS))
        raise UnsupportedTransferSyntax(
            f"transcode to transfer syntax {target_ts!r} is not supported (only {supported})"
        )
    return UID(target_ts)


def read(data: bytes) -> FileDataset:
    """The dataset of a DICOM file (PS3.10), pixels still as stored."""
    with quiet_pydicom():
        return dcmread(io.BytesIO(data))


def source_syntax(ds: FileDataset) -> UID:
    return UID(ds.file_meta.TransferSyntaxUID)


def encode(ds: FileDataset, target_ts: str) -> bytes:
    """``ds`` (as :func:`read` returned it) as a DICOM file in ``target_ts``.

    Decodes the pixels if the source is compressed (or big endian) and re-encodes them
    for a compressed target. Raises :class:`UnsupportedTransferSyntax` for a target we
    do not make, for a source no installed decoder reads, and for pixel data the target
    cannot hold unchanged (:meth:`~tessera.transcode.codecs.Codec.check`). Values are
    not validated against their VRs (objects are kept as received: a 26-character SH
    is written back as it came), as everywhere pydicom reads stored objects.
    """
    with quiet_pydicom():
        return _encode(ds, target_ts)


def _encode(ds: FileDataset, target_ts: str) -> bytes:
    target = check_target(target_ts)
    source = source_syntax(ds)
    has_pixels = "PixelData" in ds
    codec = CODECS.get(target)
    try:
        if codec is not None:
            check_source(ds, codec)
        if source == ExplicitVRBigEndian:
            _to_little_endian(ds)
        if codec is not None and has_pixels:
            _compress(ds, codec, source)
        elif source.is_compressed and has_pixels:
            ds.decompress(generate_instance_uid=False)
            # now native little endian
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    except UnsupportedTransferSyntax:
        raise
    except DATA_ERRORS as e:  # the stored data, not the service: refused with the reason
        raise UnsupportedTransferSyntax(
            f"cannot convert {source.name} ({source}) to {target.name}: {e}"
        ) from e
    ds.file_meta.TransferSyntaxUID = target
    if target == ImplicitVRLittleEndian:
        _undefined_length_private_sequences(ds)
    out = io.BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)  # what it raises: bad_data.refused_as
    return out.getvalue()


def transcode(data: bytes, target_ts: str) -> bytes:
    """The DICOM file ``data`` in ``target_ts`` (``data`` itself if it already is)."""
    check_target(target_ts)
    ds = read(data)
    if source_syntax(ds) == target_ts:
        return data
    return encode(ds, target_ts)


def _compress(ds: FileDataset, codec: Codec, source_ts: str) -> None:
    """Replace the pixel data of ``ds`` by its frames encoded by ``codec`` (one decoded at
    a time), encapsulated with a Basic Offset Table (PS3.5 A.4)."""
    decoder = get_decoder(UID(ds.file_meta.TransferSyntaxUID))
    fragments: list[bytes] = []
    photometric = ""
    native_size = 0
    for frame, meta in decoder.iter_array(ds, as_rgb=True):
        fmt = pixel_format(meta)
        encoded, photometric = encode_frame(frame, fmt, codec.uid)
        fragments.append(encoded)
        native_size += fmt.rows * fmt.columns * fmt.samples_per_pixel * fmt.bits_allocated // 8
    ds.PixelData = encapsulate(fragments, has_bot=True)
    for offsets in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):  # of the source's
        if offsets in ds:
            del ds[offsets]
    elem = ds["PixelData"]
    elem.VR, elem.is_undefined_length = VR.OB, True
    ds.PhotometricInterpretation = photometric
    if int(ds.get("SamplesPerPixel") or 1) > 1:
        ds.PlanarConfiguration = 0  # interleaved, as every encoder here takes them
    if codec.lossy:
        ratio = native_size / max(sum(len(f) for f in fragments), 1)
        source = CODECS.get(source_ts)
        mark_lossy(ds, ratio, codec.method, source.method if source else "")


def mark_lossy(ds: Dataset, ratio: float, method: str, earlier_method: str = "") -> None:
    """Record one more lossy compression step (PS3.3 C.7.6.1.1.5): Lossy Image Compression
    "01" (it has been), and this step's ratio and method appended to the earlier ones.

    Ratio and Method correspond value by value; a source that gave an earlier ratio but
    no method for it (common) gets ``earlier_method``, the method of its own lossy
    Transfer Syntax, when that is known, so that the lists stay aligned.
    """
    ratios = _values(ds, "LossyImageCompressionRatio")
    methods = _values(ds, "LossyImageCompressionMethod")
    if earlier_method and len(methods) < len(ratios):
        methods += [earlier_method] * (len(ratios) - len(methods))
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*methods, method]


def _values(ds: Dataset, keyword: str) -> list[object]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return [value]
    return list(value)


def _to_little_endian(ds: FileDataset) -> None:
    """Make a dataset read as Explicit VR Big Endian (retired, PS3.5 A.3) writable as
    little endian: pydicom swaps the numbers it parsed, not the bytes of OW/OF/OL/OD/OV
    values, so swap those, and re-set the pixels from their decoded values."""
    pixels = ds.pixel_array if "PixelData" in ds else None
    for elem in ds.iterall():
        width = _SWAPPED_WIDTH.get(elem.VR)
        if width and elem.tag != 0x7FE00010 and elem.value and len(elem.value) % width == 0:
            elem.value = (
                np.frombuffer(elem.value, dtype=f">u{width}").astype(f"<u{width}").tobytes()
            )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True)
    if pixels is not None:
        # pixel_array of a big-endian dataset may itself be big-endian ('>u2'), and
        # set_pixel_data writes the array's bytes as they are
        little = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False)
        ds.set_pixel_data(
            little, ds.PhotometricInterpretation, ds.BitsStored, generate_instance_uid=False
        )


def _undefined_length_private_sequences(ds: FileDataset) -> None:
    """In Implicit VR a reader knows a private element is a sequence only if its length
    is undefined (PS3.5 7.5 and 6.2.2: undefined-length UN is read as an Implicit VR
    SQ); with an explicit length it would be opaque bytes. So write those undefined."""
    for elem in ds.iterall():
        if elem.VR == VR.SQ and elem.tag.is_private:
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
