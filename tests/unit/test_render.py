"""The rendering pipeline on synthetic frames (PS3.4 N.2; windows PS3.3 C.11.2.1.2/3;
geometry PS3.18 8.3.5.1.3): pure numpy and Pillow, no I/O."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from pydicom.pixels import convert_color_space

from tessera.shared.errors import NotAcceptable
from tessera.shared.rendering import GIF, JPEG, PNG, Region, RenderParams, Viewport, Window
from tessera.transcode.render import (
    Frame,
    Lut,
    apply_window,
    crop,
    fitted_size,
    render,
    to_display,
)


def linear(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.2.1, written out as the standard's pseudo-code, y in 0..255."""
    if x <= c - 0.5 - (w - 1) / 2:
        return 0.0
    if x > c - 0.5 + (w - 1) / 2:
        return 255.0
    return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255


def linear_exact(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.2."""
    if x <= c - w / 2:
        return 0.0
    if x > c + w / 2:
        return 255.0
    return ((x - c) / w + 0.5) * 255


def sigmoid(x: float, c: float, w: float) -> float:
    """PS3.3 C.11.2.1.3.1 (Equation C.11-1)."""
    return 255 / (1 + math.exp(-4 * (x - c) / w))


@pytest.mark.parametrize(
    ("x", "c", "w", "expected"),
    [
        (10, 0, 100, 154.54545454545456),
        (-1000, 2048, 4096, 0.0),
        (5096, 2048, 4096, 255.0),
        (333, 2048, 4096, 20.736263736263737),
        (16, 127, 256, 17.0),
    ],
)
def test_linear_window_matches_the_standard(x, c, w, expected):
    got = apply_window(np.array([x]), Window(c, w, "linear"))[0]
    assert got == pytest.approx(expected)
    assert got == pytest.approx(linear(x, c, w))


def test_each_window_function_follows_its_formula():
    x = np.arange(-300, 600, 7, dtype=np.int32)
    for function, formula in (
        ("linear", linear),
        ("linear-exact", linear_exact),
        ("sigmoid", sigmoid),
    ):
        got = apply_window(x, Window(127, 256, function))
        expected = [formula(float(v), 127, 256) for v in x]
        assert got == pytest.approx(expected), function
    assert apply_window(np.array([150]), Window(127, 256, "sigmoid"))[0] == pytest.approx(
        150.166728345797
    )


def test_a_linear_window_of_width_one_is_a_threshold():
    got = apply_window(np.array([9, 9.5, 10, 11]), Window(10, 1, "linear"))
    assert got.tolist() == [0, 0, 255, 255]


def test_sigmoid_far_from_the_center_does_not_overflow():
    got = apply_window(np.array([-1e9, 1e9]), Window(0, 1, "sigmoid"))
    assert got.tolist() == pytest.approx([0.0, 255.0])


def gray(pixels, **kw) -> Frame:
    return Frame(pixels=np.asarray(pixels), photometric=kw.pop("pi", "MONOCHROME2"), **kw)


def test_signed_rescale_then_window():
    stored = np.array([[-2000, -1024], [0, 1000]], dtype=np.int16)
    frame = gray(stored, bits_stored=16, rescale=(2.0, -1024.0))
    window = Window(-600, 1600)
    got = to_display(frame, window)
    hu = stored.astype(float) * 2 - 1024
    assert got.tolist() == [[round(linear(v, -600, 1600)) for v in row] for row in hu]


def test_the_dataset_window_is_the_default_and_a_requested_one_wins():
    frame = gray([[0, 100], [200, 4095]], bits_stored=12, windows=(Window(100, 200),))
    assert to_display(frame).tolist() == [
        [round(linear(v, 100, 200)) for v in row] for row in ([0, 100], [200, 4095])
    ]
    assert to_display(frame, Window(2048, 4096)).tolist() == [
        [round(linear(v, 2048, 4096)) for v in row] for row in ([0, 100], [200, 4095])
    ]


def test_without_any_window_the_frame_range_is_stretched():
    assert to_display(gray([[10, 20], [30, 50]], bits_stored=16)).tolist() == [
        [0, 64],
        [128, 255],
    ]
    assert to_display(gray([[7, 7]], bits_stored=16)).tolist() == [[0, 0]]


def test_monochrome1_is_inverted():
    pixels = np.array([[0, 1000], [2000, 4095]], dtype=np.uint16)
    window = Window(2048, 4096)
    mono2 = to_display(gray(pixels, bits_stored=12), window)
    mono1 = to_display(gray(pixels, bits_stored=12, pi="MONOCHROME1"), window)
    assert (mono1.astype(int) + mono2.astype(int) == 255).all()
    assert mono1[0, 0] == 255  # the minimum is white


def test_modality_lut_sequence_replaces_rescale_and_clamps():
    lut = Lut(first_map=10, data=np.array([0, 100, 200, 4095], dtype=np.uint16), bits=12)
    frame = gray([[5, 10, 11, 12, 13, 99]], bits_stored=8, modality_lut=lut, rescale=(9.0, 9.0))
    got = to_display(frame, Window(2048, 4096, "linear-exact"))
    expected = [round(linear_exact(v, 2048, 4096)) for v in (0, 0, 100, 200, 4095, 4095)]
    assert got.tolist() == [expected]


def test_voi_lut_sequence_when_there_is_no_window():
    voi = Lut(first_map=0, data=np.array([0, 1024, 4095], dtype=np.uint16), bits=12)
    frame = gray([[0, 1, 2, 3]], bits_stored=8, voi_lut=voi)
    assert to_display(frame).tolist() == [[0, 64, 255, 255]]


def test_palette_color_through_its_table():
    table = np.array([[0, 0, 0], [65535, 0, 0], [0, 32896, 65535]], dtype=np.uint16)
    frame = Frame(
        np.array([[0, 1], [2, 7]], dtype=np.uint8), "PALETTE COLOR", 8, palette=Lut(0, table, 16)
    )
    assert to_display(frame).tolist() == [
        [[0, 0, 0], [255, 0, 0]],
        [[0, 128, 255], [0, 128, 255]],
    ]
    small = Lut(0, np.array([[0, 0, 0], [200, 100, 50]], dtype=np.uint16), 16)
    frame = Frame(np.array([[1]], dtype=np.uint8), "PALETTE COLOR", 8, palette=small)
    assert to_display(frame).tolist() == [[[200, 100, 50]]]  # 8-bit values in 16-bit entries


def test_ybr_full_is_converted_to_rgb():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    for pi in ("YBR_FULL", "YBR_FULL_422"):
        got = to_display(Frame(ybr, pi, 8))
        assert np.abs(got.astype(int) - rgb.astype(int)).max() <= 2


def test_rgb_of_more_than_8_bits_is_scaled_and_windows_do_not_apply():
    rgb = np.array([[[0, 2048, 4095]]], dtype=np.uint16)
    assert to_display(Frame(rgb, "RGB", 12), Window(0, 1)).tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize(
    "frame",
    [
        Frame(np.zeros((2, 2), np.uint8), "ARGB", 8),
        Frame(np.zeros((2, 2), np.uint8), "PALETTE COLOR", 8),  # no palette
        Frame(np.zeros((2, 2), np.uint8), "RGB", 8),  # not three samples
    ],
)
def test_what_cannot_be_shown_is_not_acceptable(frame):
    with pytest.raises(NotAcceptable):
        to_display(frame)


def test_region_in_pixels_fractions_and_flipped():
    image = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    assert crop(image, Region(1, 2, 3, 1)).tolist() == [[13, 14, 15]]
    assert crop(image, Region(4, 3)).tolist() == [[22, 23]]  # to the edges
    assert crop(image, Region(0.5, 0.5, 0.5, 0.25, fraction=True)).tolist() == [[15, 16, 17]]
    assert crop(image, Region(0, 0, -2, -2)).tolist() == [[7, 6], [1, 0]]
    assert crop(image, Region(1, 1, 100, 100)).shape == (3, 5)  # clipped to the image
    with pytest.raises(NotAcceptable):
        crop(image, Region(6, 0, 2, 2))


@pytest.mark.parametrize(
    ("size", "viewport", "expected"),
    [
        ((512, 256), Viewport(128, 128), (128, 64)),  # fits the narrower bound
        ((256, 512), Viewport(128, 128), (64, 128)),
        ((100, 50), Viewport(400, 400), (400, 200)),  # enlarged to fit
        ((100, 50), Viewport(400, 400, upscale=False), (100, 50)),  # thumbnails are not
        ((300, 200), Viewport(None, 100), (150, 100)),  # WADO-URI rows only
        ((300, 200), Viewport(30, None), (30, 20)),
        ((1000, 1), Viewport(10, 10), (10, 1)),  # never below one pixel
    ],
)
def test_viewport_keeps_the_aspect_ratio(size, viewport, expected):
    assert fitted_size(*size, viewport) == expected


def decoded(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def test_render_encodes_each_media_type():
    pixels = np.tile(np.arange(0, 256, 4, dtype=np.uint16), (32, 1))
    frame = gray(pixels, bits_stored=8, windows=(Window(128, 256),))
    png = decoded(render(frame, RenderParams(PNG)))
    assert (png.format, png.mode, png.size) == ("PNG", "L", (64, 32))
    assert np.array_equal(np.asarray(png), to_display(frame))
    jpeg = decoded(render(frame, RenderParams(JPEG)))
    assert jpeg.format == "JPEG" and jpeg.mode == "L"
    assert "progressive" not in jpeg.info  # baseline (PS3.18 8.7.4)
    assert np.abs(np.asarray(jpeg).astype(int) - to_display(frame)).max() <= 8
    assert decoded(render(frame, RenderParams(GIF))).format == "GIF"
    small = render(frame, RenderParams(JPEG, quality=5))
    assert len(small) < len(render(frame, RenderParams(JPEG, quality=100)))


def test_render_applies_region_then_viewport():
    pixels = np.zeros((100, 200), dtype=np.uint8)
    pixels[:, 100:] = 255
    frame = gray(pixels, bits_stored=8)
    params = RenderParams(PNG, region=Region(100, 0, 100, 100), viewport=Viewport(50, 80))
    picture = decoded(render(frame, params))
    assert picture.size == (50, 50)
    assert (np.asarray(picture) == 255).all()


@pytest.mark.parametrize("spread", ["full", "narrow"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize(
    "how",
    ["window", "exact", "sigmoid", "rescale", "monochrome1", "modality-lut", "voi-lut"],
)
def test_a_frame_through_the_value_table_is_the_frame_through_the_stages(
    dtype, how, spread, monkeypatch
):
    """Issue 12: integer frames with more pixels than values between their minimum and
    maximum go through a table of those values (render._TABLE_DTYPES); the bytes are
    those of the stages themselves. "narrow": a part of the type's range (a CT's 12 bits
    in 16, or ones starting below zero)."""
    from tessera.transcode import render as module

    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    low, high = int(info.min), int(info.max)
    if spread == "narrow":
        low, high = (low + (high - low) // 5, low + (high - low) // 3)
    pixels = rng.integers(low, high, size=(600, 600), endpoint=True, dtype=dtype)
    window = {"exact": Window(40, 400, "linear-exact"), "sigmoid": Window(-5, 90, "sigmoid")}
    lut = Lut(int(info.min) + 3, np.arange(0, 4096, 16, dtype=np.uint16), 12)
    frame = Frame(
        pixels,
        "MONOCHROME1" if how == "monochrome1" else "MONOCHROME2",
        8 * np.dtype(dtype).itemsize,
        rescale=(1.5, -1024.0) if how == "rescale" else (1.0, 0.0),
        modality_lut=lut if how == "modality-lut" else None,
        windows=() if how == "voi-lut" else (Window(30, 350),),
        voi_lut=lut if how == "voi-lut" else None,
    )
    asked = window.get(how)
    direct = module._grayscale(frame, asked)
    seen: list[int] = []
    stages = module._grayscale
    monkeypatch.setattr(
        module, "_grayscale", lambda f, w: seen.append(f.pixels.size) or stages(f, w)
    )
    assert np.array_equal(to_display(frame, asked), direct)
    assert seen == [high - low + 1]  # the table, not the frame
    strided = frame.pixels[::2, ::2]  # a view: not contiguous
    small = Frame(strided, frame.photometric, frame.bits_stored, frame.rescale,
                  frame.modality_lut, frame.windows, frame.voi_lut)  # fmt: skip
    assert np.array_equal(to_display(small, asked), module._grayscale(small, asked))
