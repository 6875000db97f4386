"""The encoders transcode uses for each compressed Transfer Syntax it produces (PS3.5 A.4).

One place says which Transfer Syntax is made by which library, with which settings, and
what pixel data each can take. :mod:`.convert` (whole instances) and :mod:`.frames`
(one frame, PS3.18 10.4.1.1.x) both encode through :func:`encode_frame`.

========================  =====================================  ==========================
Target                    Encoder                                Settings
========================  =====================================  ==========================
.4.50 JPEG Baseline       imagecodecs ``jpeg8`` (libjpeg-turbo)  quality 95; colour 4:2:2
.4.51 JPEG Extended       imagecodecs ``jpeg8``                  quality 95, 12-bit
.4.57 / .4.70 JPEG LL     imagecodecs ``jpeg8``                  lossless, predictor 1
.4.80 JPEG-LS             pydicom + pyjpegls (CharLS)            lossless
.4.81 JPEG-LS near-LL     pydicom + pyjpegls                     NEAR = 2 (|error| <= 2)
.4.90 JPEG 2000 LL        pydicom + pylibjpeg-openjpeg           reversible 5/3, RCT
.4.91 JPEG 2000           pydicom + pylibjpeg-openjpeg           PSNR 45 dB of the range
.4.201/.202 HTJ2K LL      imagecodecs ``htj2k`` (OpenJPH)        reversible, RPCL, TLM
.4.203 HTJ2K              imagecodecs ``htj2k``                  step = range / 1000
.5 RLE Lossless           pydicom                                PS3.5 G
========================  =====================================  ==========================

Not made: JPEG 2000 Part 2 (.92/.93, no Part 2 encoder installed), JPEG XL (.110-.112:
imagecodecs encodes it, but no pydicom plugin here decodes it, so nothing could check the
result), and the retired JPEG processes.
Lossy quality is set against each frame's value range (max - min), not its nominal bit
depth, so that 12-bit CT and 8-bit colour come out alike: JPEG 2000 aims at 45 dB PSNR of
that range, HTJ2K quantises with a step of 1/1000 of it. An HTJ2K codestream of data
whose BitsStored is less than BitsAllocated carries BitsAllocated bits of precision
(OpenJPH takes the depth from the array type); the values are the same and decoders
(pydicom reads the codestream's precision) return them unchanged.

What a target takes is PS3.5 8.2 (Tables 8.2.1-1 to 8.2.4-1, as pydicom's
``ENCODING_PROFILES`` has them; HTJ2K follows the JPEG 2000 rows): Photometric
Interpretation after encoding, Samples per Pixel, Pixel Representation, Bits Allocated,
Bits Stored. Pixel data outside that (16-bit CT to JPEG Baseline, signed data to the
DCT JPEG processes, colour to 12-bit JPEG, 1-bit, float) is refused with
:class:`UnsupportedTransferSyntax` (406) naming why — never rescaled to fit.

The input is a frame as pydicom decodes it with ``as_rgb`` (YCbCr to RGB, samples
interleaved), so colour arrives as RGB and leaves as the target makes it: YBR_FULL_422
for JPEG Baseline, YBR_RCT / YBR_ICT for JPEG 2000 and HTJ2K (their reversible and
irreversible colour transforms, PS3.5 8.2.4), RGB for the lossless JPEG, JPEG-LS and RLE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.encoders.base import ENCODING_PROFILES, get_encoder
from pydicom.uid import HTJ2K as HTJ2K_LOSSY
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from tessera.shared.errors import UnsupportedTransferSyntax
from tessera.shared.transcode import COMPRESSED_TARGETS

JPEG_QUALITY = 95  # libjpeg quality for .50 and .51
JLS_NEAR = 2  # JPEG-LS NEAR parameter: no sample differs by more than this
J2K_PSNR_DB = 45.0  # JPEG 2000 lossy target, dB relative to the frame's value range
HTJ2K_STEP = 1 / 1000  # HTJ2K lossy quantisation step, as a fraction of the value range


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """How a decoded frame is described (PS3.3 C.7.6.3, Image Pixel Module)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str

    def describe(self) -> str:
        sign = "signed" if self.pixel_representation else "unsigned"
        return (
            f"{self.photometric_interpretation}, {self.samples_per_pixel} sample(s) per pixel,"
            f" BitsAllocated {self.bits_allocated}, BitsStored {self.bits_stored}, {sign}"
        )


Encode = Callable[[np.ndarray, PixelFormat, str], bytes]


def pixel_format(meta: Mapping[str, Any]) -> PixelFormat:
    """The :class:`PixelFormat` of frames a pydicom decoder returned with ``meta``."""
    return PixelFormat(
        rows=int(meta["rows"]),
        columns=int(meta["columns"]),
        samples_per_pixel=int(meta["samples_per_pixel"]),
        bits_allocated=int(meta["bits_allocated"]),
        bits_stored=int(meta["bits_stored"]),
        pixel_representation=int(meta["pixel_representation"]),
        photometric_interpretation=str(meta["photometric_interpretation"]),
    )


def check_source(ds: Dataset, target: Codec) -> None:
    """Refuse, before decoding, pixel data no compressed Transfer Syntax carries."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise UnsupportedTransferSyntax(
            f"float pixel data cannot be sent as {target.uid.name} ({target.uid}): PS3.5 8.2"
            " encapsulates integer Pixel Data (7FE0,0010) only"
        )
    if ds.get("BitsAllocated") == 1:
        raise UnsupportedTransferSyntax(
            f"BitsAllocated 1 pixel data cannot be sent as {target.uid.name} ({target.uid}):"
            " PS3.5 8.1.1 and 8.2 allow single-bit pixels in native encodings only"
        )


@dataclass(frozen=True, slots=True)
class Codec:
    """A compressed Transfer Syntax transcode can produce."""

    uid: UID
    media_type: str  # of one frame, PS3.18 Table 8.7.3-5
    lossy: bool
    method: str  # Lossy Image Compression Method defined term (PS3.3 C.7.6.1.1.5.1)
    table: str  # PS3.5 table of permitted encodings
    colour: str  # Photometric Interpretation of RGB input after encoding
    encode: Encode  # (frame, format, photometric after) -> codestream

    def photometric_after(self, fmt: PixelFormat) -> str:
        """PhotometricInterpretation of the result (PS3.5 8.2)."""
        if fmt.photometric_interpretation == "RGB":
            return self.colour
        return fmt.photometric_interpretation

    def check(self, fmt: PixelFormat) -> None:
        """:class:`UnsupportedTransferSyntax` if this target cannot hold ``fmt`` as is."""
        after = self.photometric_after(fmt)
        for pi, spp, signs, allocated, stored in _profiles(self.uid):
            if (
                after == pi
                and fmt.samples_per_pixel == spp
                and fmt.pixel_representation in signs
                and fmt.bits_allocated in allocated
                and fmt.bits_stored in stored
            ):
                return
        allowed = "; ".join(_describe_profiles(_profiles(self.uid)))
        raise UnsupportedTransferSyntax(
            f"{self.uid.name} ({self.uid}) cannot hold this pixel data ({fmt.describe()})"
            f" without changing it: PS3.5 Table {self.table} permits {allowed}; transcode does not"
            f" rescale or reinterpret pixels"
        )


def _profiles(uid: UID) -> list[tuple[str, int, Iterable[int], Iterable[int], Iterable[int]]]:
    # PS3.5 8.2.4 (HTJ2K): the same Photometric Interpretations and depths as JPEG 2000
    if uid in (HTJ2KLossless, HTJ2KLosslessRPCL):
        return list(ENCODING_PROFILES[JPEG2000Lossless])
    if uid == HTJ2K_LOSSY:
        return list(ENCODING_PROFILES[JPEG2000])
    return list(ENCODING_PROFILES[uid])


def _describe_profiles(
    profiles: Iterable[tuple[str, int, Iterable[int], Iterable[int], Iterable[int]]],
) -> list[str]:
    out = []
    for pi, _spp, signs, allocated, stored in profiles:
        bits = sorted(stored)
        depth = f"{bits[0]}-{bits[-1]}" if len(bits) > 1 else f"{bits[0]}"
        sign = "signed or unsigned" if 1 in signs else "unsigned"
        out.append(f"{pi} {depth} bits stored in {'/'.join(map(str, allocated))}, {sign}")
    return list(dict.fromkeys(out))


def _range(frame: np.ndarray) -> float:
    return max(float(frame.max()) - float(frame.min()), 1.0) if frame.size else 1.0


def _pydicom(**options: Any) -> Encode:
    """pydicom's encoder for the Transfer Syntax (pyjpegls, pylibjpeg-openjpeg, RLE)."""

    def encode(frame: np.ndarray, fmt: PixelFormat, photometric: str, uid: UID) -> bytes:
        opts = dict(options)
        if uid == JPEG2000:
            # PSNR against the frame's value range, not the nominal 2^BitsStored - 1 that
            # OpenJPEG measures against: a 12-bit CT spans far less than 4095
            nominal = (1 << fmt.bits_stored) - 1
            opts["j2k_psnr"] = [J2K_PSNR_DB + 20 * math.log10(nominal / _range(frame))]
        return get_encoder(uid).encode(
            frame,
            rows=fmt.rows,
            columns=fmt.columns,
            samples_per_pixel=fmt.samples_per_pixel,
            bits_allocated=fmt.bits_allocated,
            bits_stored=fmt.bits_stored,
            pixel_representation=fmt.pixel_representation,
            photometric_interpretation=photometric,
            planar_configuration=0,
            number_of_frames=1,
            **opts,
        )

    return encode  # type: ignore[return-value]


def _unsigned_pattern(frame: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """The stored bit pattern of each sample (two's complement in BitsStored bits): what
    the JPEG processes encode, and what a DICOM decoder sign-extends (PS3.5 8.2.1)."""
    if frame.dtype.kind != "i":
        return frame
    mask = (1 << fmt.bits_stored) - 1
    return (frame.astype(np.int64) & mask).astype(np.uint16 if fmt.bits_allocated > 8 else np.uint8)


def _jpeg_dct(frame: np.ndarray, fmt: PixelFormat, photometric: str, uid: UID) -> bytes:
    """JPEG Baseline (8-bit) or Extended (12-bit), Huffman, libjpeg-turbo (ISO 10918-1)."""
    if fmt.samples_per_pixel == 3:
        # YBR_FULL_422: libjpeg converts RGB to full-range YCbCr and halves chroma across
        return bytes(
            imagecodecs.jpeg8_encode(
                frame,
                level=JPEG_QUALITY,
                colorspace="RGB",
                outcolorspace="YCbCr",
                subsampling="422",
            )
        )
    bits = 12 if uid == JPEGExtended12Bit and fmt.bits_stored > 8 else 8
    return bytes(imagecodecs.jpeg8_encode(frame, level=JPEG_QUALITY, bitspersample=bits))


def _jpeg_lossless(frame: np.ndarray, fmt: PixelFormat, photometric: str, uid: UID) -> bytes:
    """JPEG Lossless Process 14, Selection Value 1 (first-order prediction)."""
    kwargs: dict[str, Any] = {}
    if fmt.samples_per_pixel == 3:
        kwargs = {"colorspace": "RGB", "outcolorspace": "RGB"}  # no colour transform
    return bytes(
        imagecodecs.jpeg8_encode(
            _unsigned_pattern(frame, fmt),
            lossless=True,
            predictor=1,
            bitspersample=fmt.bits_stored,
            **kwargs,
        )
    )


def _htj2k(frame: np.ndarray, fmt: PixelFormat, photometric: str, uid: UID) -> bytes:
    """HTJ2K (ISO 15444-15) by OpenJPH: RPCL progression and TLM markers (what .202
    requires, harmless for .201/.203); the colour transform for three samples."""
    # PS3.5 10.18 (.202): enough decompositions for the smallest resolution to be <= 64
    # wide or high, so a thumbnail can be read off the front; OpenJPH's default is 5
    side = min(fmt.rows, fmt.columns)
    levels = max(5, math.ceil(math.log2(side / 64))) if side > 64 else 5
    if uid == HTJ2K_LOSSY:
        step = HTJ2K_STEP * _range(frame) / (1 << fmt.bits_stored)
        cs = imagecodecs.htj2k_encode(frame, step, reversible=False, tlm=True, resolutions=levels)
    else:
        cs = imagecodecs.htj2k_encode(frame, reversible=True, tlm=True, resolutions=levels)
    return bytes(cs)


def _codec(
    uid: UID, media_type: str, table: str, colour: str, encode: Any, method: str = ""
) -> Codec:
    def bound(frame: np.ndarray, fmt: PixelFormat, photometric: str) -> bytes:
        return bytes(encode(frame, fmt, photometric, uid))

    return Codec(uid, media_type, bool(method), method, table, colour, bound)


CODECS: dict[str, Codec] = {
    c.uid: c
    for c in (
        _codec(JPEGBaseline8Bit, "image/jpeg", "8.2.1-1", "YBR_FULL_422", _jpeg_dct, "ISO_10918_1"),
        _codec(
            JPEGExtended12Bit, "image/jpeg", "8.2.1-1", "YBR_FULL_422", _jpeg_dct, "ISO_10918_1"
        ),
        _codec(JPEGLossless, "image/jpeg", "8.2.1-2", "RGB", _jpeg_lossless),
        _codec(JPEGLosslessSV1, "image/jpeg", "8.2.1-2", "RGB", _jpeg_lossless),
        _codec(JPEGLSLossless, "image/jls", "8.2.3-1", "RGB", _pydicom()),
        _codec(
            JPEGLSNearLossless,
            "image/jls",
            "8.2.3-1",
            "RGB",
            _pydicom(jls_error=JLS_NEAR),
            "ISO_14495_1",
        ),
        _codec(JPEG2000Lossless, "image/jp2", "8.2.4-1", "YBR_RCT", _pydicom()),
        _codec(JPEG2000, "image/jp2", "8.2.4-1", "YBR_ICT", _pydicom(), "ISO_15444_1"),
        _codec(HTJ2KLossless, "image/jphc", "8.2.4-1", "YBR_RCT", _htj2k),
        _codec(HTJ2KLosslessRPCL, "image/jphc", "8.2.4-1", "YBR_RCT", _htj2k),
        _codec(HTJ2K_LOSSY, "image/jphc", "8.2.4-1", "YBR_ICT", _htj2k, "ISO_15444_15"),
        _codec(RLELossless, "image/dicom-rle", "8.2.2-1", "RGB", _pydicom()),
    )
}
# Retrieve negotiates against the contract's list (tessera.shared.transcode.syntaxes):
# a worker whose encoders differ from it must not start.
if frozenset(CODECS) != COMPRESSED_TARGETS:
    raise ImportError(
        "the transcode encoders differ from tessera.shared.transcode COMPRESSED_TARGETS:"
        f" {sorted(frozenset(CODECS) ^ COMPRESSED_TARGETS)}"
    )


def encode_frame(frame: np.ndarray, fmt: PixelFormat, target_ts: str) -> tuple[bytes, str]:
    """One decoded frame (``as_rgb``, interleaved) as a ``target_ts`` codestream, and the
    PhotometricInterpretation it has; refused if the target cannot hold it as is."""
    c = CODECS[target_ts]
    c.check(fmt)
    # native byte order, C-contiguous: what the encoders read
    frame = np.ascontiguousarray(frame.astype(frame.dtype.newbyteorder("="), copy=False))
    after = c.photometric_after(fmt)
    try:
        return c.encode(frame, fmt, after), after
    except (RuntimeError, ValueError) as e:
        raise UnsupportedTransferSyntax(
            f"cannot encode {fmt.describe()} as {c.uid.name} ({c.uid}): {e}"
        ) from e
