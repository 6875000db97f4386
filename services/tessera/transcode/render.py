"""Rendering one decoded frame to an 8-bit JPEG, PNG or GIF: pure functions (numpy, Pillow).

The pipeline is PS3.4 N.2 (Pixel Transformation Sequence), then the geometry of PS3.18
8.3.5.1.3, then the encoder (8 bits per channel, PS3.18 8.7.4):

grayscale  stored value → Modality LUT (Rescale Slope/Intercept or Modality LUT
           Sequence, PS3.3 C.11.1) → VOI (the requested window, else the instance's
           first Window Center/Width, else its VOI LUT Sequence, else the frame's
           min..max; PS3.3 C.11.2) → Presentation (MONOCHROME1 inverted) → 0..255
color      RGB as is (scaled down when Bits Stored > 8); YBR_FULL and YBR_FULL_422
           converted to RGB; PALETTE COLOR through its palette (PS3.3 C.7.6.3.1.5);
           windows do not apply to color
geometry   the source :class:`~tessera.shared.rendering.Region` is cut (and flipped),
           then scaled to fit the :class:`~tessera.shared.rendering.Viewport`

A frame this module cannot show raises :class:`~tessera.shared.errors.NotAcceptable`.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image
from pydicom.pixels import convert_color_space

from tessera.shared.errors import NotAcceptable
from tessera.shared.rendering import GIF, JPEG, PNG, Region, RenderParams, Viewport, Window

YMAX = 255.0  # the VOI output range is 0..YMAX: 8-bit output (PS3.18 8.7.4)
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
YBR = ("YBR_FULL", "YBR_FULL_422")


@dataclass(frozen=True)
class Lut:
    """A lookup table (PS3.3 C.11.1.1.1): ``data[v - first_map]``, clamped at both ends;
    entries of ``bits`` bits. ``data`` is (N,) or, for a palette, (N, 3)."""

    first_map: int
    data: np.ndarray
    bits: int

    def __call__(self, values: np.ndarray) -> np.ndarray:
        index = np.clip(values.astype(np.int64) - self.first_map, 0, len(self.data) - 1)
        return self.data[index]


@dataclass(frozen=True)
class Frame:
    """One decoded frame and what its values mean (PS3.3 C.7.6.3, C.11)."""

    pixels: np.ndarray  # (rows, columns) or (rows, columns, 3)
    photometric: str  # Photometric Interpretation of ``pixels`` as decoded
    bits_stored: int
    rescale: tuple[float, float] = (1.0, 0.0)  # slope, intercept
    modality_lut: Lut | None = None  # replaces ``rescale`` when present
    windows: tuple[Window, ...] = ()  # the instance's, first one the default
    voi_lut: Lut | None = None
    palette: Lut | None = None  # PALETTE COLOR


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """``values`` (Modality LUT output) through ``window`` onto 0..255, as floats.

    LINEAR is PS3.3 C.11.2.1.2.1, LINEAR_EXACT C.11.2.1.3.2, SIGMOID C.11.2.1.3.1.
    """
    x = values.astype(np.float64)
    c, w = window.center, window.width
    if window.function == "sigmoid":
        exponent = np.clip(-4.0 * (x - c) / w, -700.0, 700.0)  # exp() stays finite
        return YMAX / (1.0 + np.exp(exponent))
    if window.function == "linear-exact":
        low, high = c - w / 2, c + w / 2
        ramp = ((x - c) / w + 0.5) * YMAX
    else:
        low, high = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
        ramp = ((x - (c - 0.5)) / max(w - 1, 1e-12) + 0.5) * YMAX
    return np.where(x <= low, 0.0, np.where(x > high, YMAX, ramp))


def modality(frame: Frame) -> np.ndarray:
    """The Modality LUT output of a grayscale frame (PS3.3 C.11.1)."""
    if frame.modality_lut is not None:
        return frame.modality_lut(frame.pixels)
    slope, intercept = frame.rescale
    if (slope, intercept) == (1.0, 0.0):
        return frame.pixels
    return frame.pixels.astype(np.float64) * slope + intercept


def full_range(values: np.ndarray) -> np.ndarray:
    """``values`` stretched from their min..max onto 0..255 (no window known)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    return (values.astype(np.float64) - low) * (YMAX / (high - low))


def voi(values: np.ndarray, frame: Frame, window: Window | None) -> np.ndarray:
    """The VOI stage onto 0..255: the requested window, else the instance's (PS3.3 C.11.2)."""
    window = window or (frame.windows[0] if frame.windows else None)
    if window is not None:
        return apply_window(values, window)
    if frame.voi_lut is not None:
        out = frame.voi_lut(values).astype(np.float64)
        return out * (YMAX / (2**frame.voi_lut.bits - 1))
    return full_range(values)


# A frame of 8- or 16-bit integers goes through a table of every value from its minimum
# to its maximum (65,536 entries at most): each grayscale stage is a function of the
# stored value alone,
# so the table gives the very bytes the stages give over the pixels, without a float64
# image of the frame (a 512 x 512 CT: ~8 of its ~14 ms). Not when the VOI stage is the
# frame's own min..max (it depends on every pixel), nor for a frame smaller than the table.
_TABLE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16))


def grayscale(frame: Frame, window: Window | None) -> np.ndarray:
    """A MONOCHROME1/2 frame as 8-bit gray (PS3.4 N.2.1)."""
    pixels = frame.pixels
    known_voi = window is not None or bool(frame.windows) or frame.voi_lut is not None
    if pixels.dtype in _TABLE_DTYPES and known_voi and pixels.size:
        # the table covers the values the frame holds, not all its type could: a CT's
        # 12 bits are 4,096 entries to window, not 65,536
        low, high = int(pixels.min()), int(pixels.max())
        if pixels.size > high - low + 1:
            every = np.arange(low, high + 1, dtype=np.int64).astype(pixels.dtype)
            table = _grayscale(replace(frame, pixels=every), window)
            index = pixels.astype(np.intp)
            index -= low
            return table[index]
    return _grayscale(frame, window)


def _grayscale(frame: Frame, window: Window | None) -> np.ndarray:
    shown = voi(modality(frame), frame, window)
    if frame.photometric == "MONOCHROME1":  # minimum is white (PS3.3 C.7.6.3.1.2)
        shown = YMAX - shown
    return to_uint8(shown)


def to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def scale_to_8_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Color samples of ``bits`` bits onto 0..255."""
    if bits <= 8:
        return values.astype(np.uint8)
    return to_uint8(values.astype(np.float64) * (YMAX / (2**bits - 1)))


def color(frame: Frame) -> np.ndarray:
    """An RGB, YBR_FULL(_422) or PALETTE COLOR frame as 8-bit RGB (PS3.4 N.2.2)."""
    pi = frame.photometric
    if pi == "PALETTE COLOR":
        if frame.palette is None:
            raise NotAcceptable("a PALETTE COLOR image without its palette cannot be rendered")
        rgb = frame.palette(frame.pixels)
        bits = frame.palette.bits
        if bits > 8 and int(rgb.max(initial=0)) <= 255:
            bits = 8  # 8-bit entries in a 16-bit table (PS3.3 C.7.6.3.1.5 note)
        return scale_to_8_bits(rgb, bits)
    rgb = scale_to_8_bits(frame.pixels, frame.bits_stored)
    if pi in YBR:  # decoded but not converted: native YBR_FULL, PS3.3 C.7.6.3.1.2
        return np.asarray(convert_color_space(rgb, "YBR_FULL", "RGB"))
    return rgb


def to_display(frame: Frame, window: Window | None = None) -> np.ndarray:
    """The frame's presentation values: (rows, columns) or (rows, columns, 3) uint8."""
    pi = frame.photometric
    if pi in GRAYSCALE:
        return grayscale(frame, window)
    if pi in ("RGB", "PALETTE COLOR", *YBR):
        if frame.pixels.ndim != (2 if pi == "PALETTE COLOR" else 3):
            raise NotAcceptable(f"a {pi} frame of shape {frame.pixels.shape} cannot be shown")
        return color(frame)
    raise NotAcceptable(f"rendering Photometric Interpretation {pi!r} is not supported")


def crop(image: np.ndarray, region: Region) -> np.ndarray:
    """The source region of ``image`` (PS3.18 8.3.5.1.3), flipped where its size is negative."""
    rows, columns = image.shape[:2]
    scale_x, scale_y = (columns, rows) if region.fraction else (1, 1)
    x0 = _bound(region.x * scale_x, columns)
    y0 = _bound(region.y * scale_y, rows)
    width = None if region.width is None else region.width * scale_x
    height = None if region.height is None else region.height * scale_y
    x1 = columns if width is None else _bound(x0 + abs(width), columns)
    y1 = rows if height is None else _bound(y0 + abs(height), rows)
    if x1 <= x0 or y1 <= y0:
        raise NotAcceptable(f"the region {region} is outside the {columns}x{rows} image")
    out = image[y0:y1, x0:x1]
    if width is not None and width < 0:
        out = out[:, ::-1]
    if height is not None and height < 0:
        out = out[::-1]
    return np.ascontiguousarray(out)


def _bound(value: float, limit: int) -> int:
    return min(max(round(value), 0), limit)


def fitted_size(columns: int, rows: int, viewport: Viewport) -> tuple[int, int]:
    """(width, height) of a ``columns`` x ``rows`` image scaled to fit the viewport,
    keeping its aspect ratio (never below 1 pixel)."""
    scales = []
    if viewport.width:
        scales.append(viewport.width / columns)
    if viewport.height:
        scales.append(viewport.height / rows)
    scale = min(scales, default=1.0)
    if not viewport.upscale:
        scale = min(scale, 1.0)
    return max(1, math.floor(columns * scale + 0.5)), max(1, math.floor(rows * scale + 0.5))


def fit(image: np.ndarray, viewport: Viewport) -> Image.Image:
    picture = Image.fromarray(image)
    size = fitted_size(picture.width, picture.height, viewport)
    if size == picture.size:
        return picture
    return picture.resize(size, Image.Resampling.LANCZOS)


def encode(picture: Image.Image, media_type: str, quality: int) -> bytes:
    """``picture`` as a JPEG (baseline, PS3.18 8.7.4), PNG or GIF file."""
    out = io.BytesIO()
    if media_type == JPEG:
        picture.save(out, format="JPEG", quality=quality)
    elif media_type == PNG:
        picture.save(out, format="PNG")
    elif media_type == GIF:
        picture.save(out, format="GIF")
    else:
        raise NotAcceptable(f"an image cannot be rendered as {media_type}")
    return out.getvalue()


def render(frame: Frame, params: RenderParams) -> bytes:
    """``frame`` rendered as ``params`` say: the bytes of the image file."""
    image = to_display(frame, params.window)
    if params.region is not None:
        image = crop(image, params.region)
    picture = Image.fromarray(image)
    if params.viewport is not None:
        picture = fit(image, params.viewport)
    return encode(picture, params.media_type, params.quality)
