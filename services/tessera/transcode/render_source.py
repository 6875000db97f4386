"""What to render from a DICOM dataset: one decoded :class:`~.render.Frame`, or an
encapsulated PDF (in memory, no I/O).

The frame's attributes come from where PS3.3 puts them: for an enhanced multi-frame
instance, the frame's Per-Frame Functional Groups item, else the Shared Functional
Groups (Pixel Value Transformation, C.7.6.16.2.9; Frame VOI LUT, C.7.6.16.2.10); else
the top level (Modality LUT module C.11.1, VOI LUT module C.11.2). Lookup tables are
read with pydicom (US or OW data, segmented palettes) into :class:`~.render.Lut` s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, get_decoder

from tessera.shared.errors import BadRequest, NotAcceptable
from tessera.shared.rendering import Window
from tessera.transcode.render import Frame, Lut

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
# MPEG-2, MPEG-4 and HEVC video Transfer Syntaxes (PS3.5 A.4.5 to A.4.7, 8.2.5 to 8.2.8)
VIDEO_PREFIXES = ("1.2.840.10008.1.2.4.10",)
# PS3.3 C.11.2.1.3 defined terms -> PS3.18 8.3.5.1.4 tokens
_FUNCTIONS = {"LINEAR": "linear", "LINEAR_EXACT": "linear-exact", "SIGMOID": "sigmoid"}
# Samples a frame may have before we refuse to decode it: 2**27 is an 11585 x 11585
# grayscale frame, whose float pipeline already takes about a gigabyte.
MAX_SAMPLES = 1 << 27


def category(ds: Dataset) -> str:
    """``image``, ``pdf``, ``video`` or ``other`` (PS3.18 8.7.2 resource categories)."""
    if ds.get("SOPClassUID") == ENCAPSULATED_PDF and "EncapsulatedDocument" in ds:
        return "pdf"
    if "PixelData" not in ds:
        return "other"
    ts = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ts.startswith(VIDEO_PREFIXES):
        return "video"
    return "image"


def encapsulated_pdf(ds: Dataset) -> bytes:
    """The PDF of an Encapsulated PDF instance, without the value's padding byte
    (Encapsulated Document Length, PS3.3 C.24.2, when present)."""
    data = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if isinstance(length, int) and 0 < length <= len(data):
        return data[:length]
    return data


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def _functional(ds: Dataset, frame_number: int, sequence: str) -> Dataset | None:
    """The item of ``sequence`` for this frame: per-frame first, then shared."""
    for groups, index in (
        ("PerFrameFunctionalGroupsSequence", frame_number - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        items = ds.get(groups) or []
        if index < len(items) and items[index].get(sequence):
            item: Dataset = items[index][sequence][0]
            return item
    return None


def _values(value: Any) -> list[Any]:
    """The values of a multi-valued element (a pydicom MultiValue), or the one value."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return [value]


def _windows(source: Dataset) -> tuple[Window, ...]:
    """The Window Center/Width pairs of ``source`` (VM 1-n), invalid ones left out."""
    centers, widths = source.get("WindowCenter"), source.get("WindowWidth")
    if centers is None or widths is None:
        return ()
    centers, widths = _values(centers), _values(widths)
    function = _FUNCTIONS.get(str(source.get("VOILUTFunction") or "LINEAR").upper(), "linear")
    out = []
    for c, w in zip(centers, widths, strict=False):
        try:
            out.append(Window(float(c), float(w), function))
        except (TypeError, ValueError, BadRequest):
            continue  # a window a writer got wrong: fall back to the next one
    return tuple(out)


def _rescale(source: Dataset) -> tuple[float, float] | None:
    slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
    if slope is None or intercept is None:
        return None
    try:
        return float(slope), float(intercept)
    except (TypeError, ValueError):
        return None


def _lut(ds: Dataset, descriptor: Any, read: Callable[[np.ndarray], np.ndarray]) -> Lut:
    """A LUT read by pydicom: ``read`` maps its whole input domain to the entries."""
    entries, first_map, bits = (int(v) for v in descriptor)
    entries = entries or 65536
    domain = np.arange(first_map, first_map + entries)
    if first_map >= 0:
        domain = domain.astype(np.uint16 if first_map + entries > 256 else np.uint8)
    return Lut(first_map, np.asarray(read(domain)), bits)


def _modality_lut(ds: Dataset) -> Lut | None:
    items = ds.get("ModalityLUTSequence")
    if not items:
        return None
    return _lut(ds, items[0].LUTDescriptor, lambda d: apply_modality_lut(d, ds))


def _voi_lut(ds: Dataset) -> Lut | None:
    items = ds.get("VOILUTSequence")
    if not items or "LUTDescriptor" not in items[0] or "LUTData" not in items[0]:
        return None
    return _lut(ds, items[0].LUTDescriptor, lambda d: apply_voi(d.astype(np.int64), ds))


def _palette(ds: Dataset) -> Lut | None:
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is None:
        return None
    return _lut(ds, descriptor, lambda d: apply_color_lut(d, ds))


def decode(ds: Dataset, frame_number: int) -> tuple[np.ndarray, str]:
    """Frame ``frame_number`` (1-based) as pydicom decodes it, YCbCr of JPEG codestreams
    converted to RGB; and the resulting Photometric Interpretation."""
    frames = number_of_frames(ds)
    if not 1 <= frame_number <= frames:
        raise BadRequest(f"frame {frame_number} is out of range: the instance has {frames}")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    samples = int(ds.get("SamplesPerPixel") or 1)
    if rows * columns * samples > MAX_SAMPLES:
        raise NotAcceptable(f"a {columns}x{rows} frame is too large to render")
    ds.setdefault("SamplesPerPixel", samples)  # writers leave these out; PS3.3 defaults
    ds.setdefault("PixelRepresentation", 0)
    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        pixels, meta = decoder.as_array(ds, index=frame_number - 1)  # YCbCr -> RGB
    except (AttributeError, NotImplementedError, RuntimeError, ValueError, KeyError) as e:
        raise NotAcceptable(f"the pixel data cannot be decoded: {e}") from e
    return pixels, str(meta.get("photometric_interpretation") or ds.PhotometricInterpretation)


def load_frame(ds: Dataset, frame_number: int) -> Frame:
    """Frame ``frame_number`` of an image instance with what rendering it needs."""
    pixels, photometric = decode(ds, frame_number)
    rescale_item = _functional(ds, frame_number, "PixelValueTransformationSequence")
    voi_item = _functional(ds, frame_number, "FrameVOILUTSequence")
    try:
        return Frame(
            pixels=pixels,
            photometric=photometric.strip().upper(),
            bits_stored=int(ds.get("BitsStored") or pixels.dtype.itemsize * 8),
            rescale=_rescale(rescale_item or ds) or _rescale(ds) or (1.0, 0.0),
            modality_lut=_modality_lut(ds),
            windows=_windows(voi_item or ds) or _windows(ds),
            voi_lut=_voi_lut(ds),
            palette=_palette(ds) if photometric == "PALETTE COLOR" else None,
        )
    except (AttributeError, NotImplementedError, TypeError, ValueError, KeyError, IndexError) as e:
        raise NotAcceptable(f"the lookup tables of this instance cannot be read: {e}") from e
