"""Rendering parameters: the shared contract (its cache digest), WADO-RS parsing (PS3.18
8.3.5.1), WADO-URI parsing (9.5.1.2) and rendered media type negotiation (8.7.4)."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from tessera.retrieve.render_params import (
    choose_media_type,
    parse_viewport,
    parse_window,
    rendering_query,
)
from tessera.retrieve.wado_uri import region
from tessera.shared.errors import BadRequest
from tessera.shared.mediatypes import parse_accept
from tessera.shared.messages import UnknownMessageVersion
from tessera.shared.rendering import (
    GIF,
    IMAGE_MEDIA_TYPES,
    JPEG,
    PDF,
    PNG,
    Region,
    RenderParams,
    Viewport,
    Window,
)
from tessera.shared.storage import rendered_key

FULL = RenderParams(
    JPEG,
    quality=70,
    window=Window(40, 400, "sigmoid"),
    region=Region(1, 2, -3, None),
    viewport=Viewport(64, 32, upscale=False),
)


def test_params_survive_the_wire():
    assert RenderParams.from_dict(FULL.to_dict()) == FULL
    with pytest.raises(UnknownMessageVersion):
        RenderParams.from_dict({**FULL.to_dict(), "v": 99})


def test_digest_names_the_rendering_not_its_spelling():
    assert RenderParams(window=Window(200, 800)).digest() == (
        RenderParams(window=Window(200.0, 800.0)).digest()
    )
    assert RenderParams(PNG, quality=10).digest() == RenderParams(PNG).digest()
    assert RenderParams(JPEG, quality=10).digest() != RenderParams(JPEG).digest()
    assert RenderParams(PDF, window=Window(1, 2)).digest() == RenderParams(PDF).digest()
    assert len({RenderParams(t).digest() for t in (JPEG, PNG, GIF, PDF)}) == 4


def test_rendered_key():
    key = rendered_key("instances/ab/cd/abcd.dcm", 3, FULL.digest(), FULL.extension)
    assert key == f"rendered/abcd/3-{FULL.digest()}.jpg"  # one folder per instance


@pytest.mark.parametrize(
    "make",
    [
        lambda: Window(1, 0.5, "linear"),  # linear needs width >= 1
        lambda: Window(1, 0, "sigmoid"),
        lambda: Window(1, 1, "cubic"),
        lambda: Viewport(0, 10),
        lambda: Viewport(20000, 10),
        lambda: Viewport(16000, 16000),
        lambda: RenderParams(quality=0),
        lambda: RenderParams("image/webp"),
    ],
)
def test_invalid_params_are_bad_requests(make):
    with pytest.raises(BadRequest):
        make()


def test_window_query():
    assert parse_window("40,400,linear") == Window(40, 400, "linear")
    assert parse_window(" -600.5 , 1600 , LINEAR-EXACT ") == Window(-600.5, 1600, "linear-exact")
    assert parse_window("40,400,linear_exact").function == "linear-exact"
    for bad in ("40,400", "40,400,gamma", "a,400,linear", "40,nan,linear", "40,0,linear"):
        with pytest.raises(BadRequest):
            parse_window(bad)


def test_viewport_query():
    assert parse_viewport("512,256") == (Viewport(512, 256), None)
    assert parse_viewport("64,64,,,,") == (Viewport(64, 64), None)
    assert parse_viewport("64,64,10,20,,-30") == (Viewport(64, 64), Region(10, 20, None, -30))
    for bad in ("64", "64,64,1", "0,64", "x,64", "64,64,-1,0,10,10", "64,64,0,0,0,10"):
        with pytest.raises(BadRequest):
            parse_viewport(bad)


def test_rendering_query():
    query = QueryParams("window=40,400,sigmoid&quality=70&viewport=64,32&annotation=patient")
    params = rendering_query(query, JPEG)
    assert params == RenderParams(JPEG, 70, Window(40, 400, "sigmoid"), None, Viewport(64, 32))
    assert rendering_query(QueryParams(""), PNG) == RenderParams(PNG)
    for bad in ("quality=0", "quality=high", "window=1,2,linear&window=1,2,linear"):
        with pytest.raises(BadRequest):
            rendering_query(QueryParams(bad), JPEG)


def test_wado_uri_region():
    assert region("0.25,0,1,0.5") == Region(0.25, 0, 0.75, 0.5, fraction=True)
    assert region(None) is None
    for bad in ("0,0,1", "0.5,0,0.25,1", "0,0,1.5,1", "-0.1,0,1,1", "a,b,c,d"):
        with pytest.raises(BadRequest):
            region(bad)


@pytest.mark.parametrize(
    ("accept", "offers", "chosen"),
    [
        (None, IMAGE_MEDIA_TYPES, JPEG),  # the default (PS3.18 Table 8.7.4-1)
        ("*/*", IMAGE_MEDIA_TYPES, JPEG),
        ("image/*", IMAGE_MEDIA_TYPES, JPEG),
        ("image/png", IMAGE_MEDIA_TYPES, PNG),
        ("image/jpeg;q=0.5, image/png", IMAGE_MEDIA_TYPES, PNG),
        ("image/gif, image/png", IMAGE_MEDIA_TYPES, PNG),  # equal q: server order
        ("*/*, image/jpeg;q=0", IMAGE_MEDIA_TYPES, PNG),  # excluded
        ("image/jpg", IMAGE_MEDIA_TYPES, JPEG),  # a common misspelling
        ('multipart/related; type="image/png"', IMAGE_MEDIA_TYPES, PNG),
        ("multipart/related", IMAGE_MEDIA_TYPES, JPEG),
        ("application/dicom", IMAGE_MEDIA_TYPES, None),
        ("image/webp", IMAGE_MEDIA_TYPES, None),
        ("*/*", (PDF,), PDF),
        ("image/jpeg", (PDF,), None),
        ("*/*", (), None),
    ],
)
def test_rendered_media_type(accept, offers, chosen):
    assert choose_media_type(parse_accept(accept), offers) == chosen
