"""Reading a rendered request: its media type (PS3.18 8.7.4, 8.3.3.1) and its rendering
query parameters (WADO-RS, PS3.18 8.3.5.1).

Media type: the offers depend on what the instance is (PS3.18 Table 8.7.4-1): an image
is rendered as ``image/jpeg`` (the default), ``image/png`` or ``image/gif``; an
Encapsulated PDF as ``application/pdf``. The highest ``q`` wins, then the server's order;
a ``q=0`` range excludes what it names. ``multipart/related; type="image/png"`` asks for
parts of that type (study, series and frame list responses).

Parameters, each at most once (400 otherwise, as for malformed values, PS3.18 8.3.5.1):

    window=center,width,function   function: linear | linear-exact | sigmoid (8.3.5.1.4)
    viewport=vw,vh[,sx,sy,sw,sh]   an empty sx..sh takes its default (8.3.5.1.3)
    quality=1..100                 JPEG quality (8.3.5.1.2)

``annotation``, ``charset`` and ``iccprofile`` are not supported and are ignored, as
PS3.18 8.3.5.1 allows (no annotation is burned in; no ICC profile is embedded).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import QueryParams

from tessera.shared.errors import BadRequest, NotAcceptable
from tessera.shared.mediatypes import AcceptRange, MediaType, parse_media_type
from tessera.shared.rendering import (
    DEFAULT_QUALITY,
    WINDOW_FUNCTIONS,
    Region,
    RenderParams,
    Viewport,
    Window,
)

# Spellings clients send for a function token or a media type, and what they mean.
_FUNCTION_ALIASES = {"linear_exact": "linear-exact"}
_MEDIA_ALIASES = {"image/jpg": "image/jpeg"}


def one(query: QueryParams, name: str) -> str | None:
    """The single value of query parameter ``name``; 400 if it is repeated."""
    values = query.getlist(name)
    if len(values) > 1:
        raise BadRequest(f"query parameter {name} is given {len(values)} times")
    return values[0] if values else None


def number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"{what} must be a number, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{what} must be a finite number, not {text!r}")
    return value


def integer(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"{what} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{what} must be from {low} to {high}, not {value}")
    return value


def parse_window(text: str) -> Window:
    """``center,width,function`` (PS3.18 8.3.5.1.4)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise BadRequest(f"window must be center,width,function, not {text!r}")
    function = parts[2].lower()
    function = _FUNCTION_ALIASES.get(function, function)
    if function not in WINDOW_FUNCTIONS:
        raise BadRequest(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    return Window(number(parts[0], "window center"), number(parts[1], "window width"), function)


def parse_viewport(text: str) -> tuple[Viewport, Region | None]:
    """``vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3): the output size and the source region."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 6):
        raise BadRequest(f"viewport must be vw,vh or vw,vh,sx,sy,sw,sh, not {text!r}")
    viewport = Viewport(
        integer(parts[0], "viewport width", 1, 1 << 30),
        integer(parts[1], "viewport height", 1, 1 << 30),
    )
    if len(parts) == 2 or not any(parts[2:]):
        return viewport, None
    sx, sy, sw, sh = (None if not p else number(p, "viewport region") for p in parts[2:])
    if (sx is not None and sx < 0) or (sy is not None and sy < 0):
        raise BadRequest(f"the viewport region's sx and sy cannot be negative: {text!r}")
    if sw == 0 or sh == 0:
        raise BadRequest(f"the viewport region cannot be empty: {text!r}")
    return viewport, Region(sx or 0.0, sy or 0.0, sw, sh)


def rendering_query(query: QueryParams, media_type: str) -> RenderParams:
    """The rendering a WADO-RS rendered request asks for (PS3.18 8.3.5.1)."""
    window_text, viewport_text = one(query, "window"), one(query, "viewport")
    quality_text = one(query, "quality")
    viewport, region = parse_viewport(viewport_text) if viewport_text else (None, None)
    return RenderParams(
        media_type=media_type,
        quality=integer(quality_text, "quality", 1, 100) if quality_text else DEFAULT_QUALITY,
        window=parse_window(window_text) if window_text else None,
        region=region,
        viewport=viewport,
    )


def _wanted(r: AcceptRange) -> MediaType | None:
    """The media type a range asks for; a multipart range stands for its parts' type."""
    essence = _MEDIA_ALIASES.get(r.essence, r.essence)
    if r.type == "multipart" and essence in ("multipart/*", "multipart/related"):
        inner = r.params.get("type")
        if not inner:
            return MediaType("*", "*")
        try:
            wanted = parse_media_type(inner)
        except BadRequest:
            return None
        essence = _MEDIA_ALIASES.get(wanted.essence, wanted.essence)
    kind, _, sub = essence.partition("/")
    return MediaType(kind, sub)


def _q(ranges: Sequence[AcceptRange], offer: str) -> float:
    """The weight of ``offer``: that of the most specific range naming it (RFC 9110 12.5.1)."""
    best: tuple[int, float] | None = None
    kind, _, sub = offer.partition("/")
    for r in ranges:
        wanted = _wanted(r)
        if wanted is None or wanted.type not in ("*", kind) or wanted.subtype not in ("*", sub):
            continue
        specificity = (wanted.type != "*") + (wanted.subtype != "*")
        if best is None or specificity > best[0]:
            best = (specificity, r.q)
    return 0.0 if best is None else best[1]


def choose_media_type(ranges: Sequence[AcceptRange], offers: Sequence[str]) -> str | None:
    """The offer to send (highest ``q``, then the first offer); None if none is acceptable."""
    chosen, best = None, 0.0
    for offer in offers:
        q = _q(ranges, offer)
        if q > best:
            chosen, best = offer, q
    return chosen


def not_acceptable(
    ranges: Sequence[AcceptRange], offers: Sequence[str], what: str
) -> NotAcceptable:
    asked = ", ".join(str(r) for r in ranges)
    if not offers:
        return NotAcceptable(f"{what} cannot be rendered (Accept was {asked!r})")
    return NotAcceptable(
        f"{what} is rendered as {', '.join(offers)} only; Accept was {asked!r} (PS3.18 8.7.4)"
    )
