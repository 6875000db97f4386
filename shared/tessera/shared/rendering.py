"""What retrieve asks transcode to render: the parameters of a rendered representation.

Retrieve parses them from WADO-RS (PS3.18 8.3.5.1: ``window``, ``viewport``, ``quality``)
or WADO-URI (PS3.18 9.5.1.2: ``windowCenter``/``windowWidth``, ``rows``/``columns``,
``region``, ``imageQuality``) query parameters; transcode renders with them. Both sides
derive the cache key of a rendering from :meth:`RenderParams.digest`, so the same
rendering asked through either service lands on the same stored object.

The rendering pipeline (PS3.4 N.2, in the order PS3.18 8.3.5.1 gives): Modality LUT,
VOI (the requested :class:`Window`, else the instance's), Presentation (MONOCHROME1
inverted), then the source :class:`Region`, then the :class:`Viewport`, then the encoder
(8 bits per channel, PS3.18 8.7.4).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from tessera.shared.errors import BadRequest
from tessera.shared.messages import UnknownMessageVersion

RENDER_PARAMS_VERSION = 1

JPEG = "image/jpeg"
PNG = "image/png"
GIF = "image/gif"
PDF = "application/pdf"
IMAGE_MEDIA_TYPES = (JPEG, PNG, GIF)  # server preference, best first
EXTENSIONS = {JPEG: "jpg", PNG: "png", GIF: "gif", PDF: "pdf"}

# PS3.18 8.3.5.1.4 function tokens; PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3 (the others)
WINDOW_FUNCTIONS = ("linear", "linear-exact", "sigmoid")
DEFAULT_QUALITY = 90  # JPEG quality when the request names none (as Orthanc)
# Largest rendered image we produce, per side and in pixels: a client cannot make a
# worker allocate gigabytes by asking for a huge viewport.
MAX_SIDE = 16384
MAX_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class Window:
    """A VOI window: center, width and function (PS3.3 C.11.2.1.2, C.11.2.1.3)."""

    center: float
    width: float
    function: str = "linear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "center", float(self.center))  # 200 and 200.0: one key
        object.__setattr__(self, "width", float(self.width))
        if self.function not in WINDOW_FUNCTIONS:
            raise BadRequest(
                f"window function {self.function!r} is not one of {', '.join(WINDOW_FUNCTIONS)}"
            )
        if self.function == "linear" and not self.width >= 1:
            raise BadRequest(f"a linear window needs a width of at least 1, not {self.width:g}")
        if not self.width > 0:
            raise BadRequest(f"a window width must be greater than 0, not {self.width:g}")


@dataclass(frozen=True)
class Region:
    """The source image region to render (PS3.18 8.3.5.1.3 ``sx,sy,sw,sh``; 9.5.1.2 ``region``).

    ``x``/``y`` is the top-left corner; ``width``/``height`` None means "to the edge",
    and a negative one flips the region along that axis (as Orthanc reads ``sw``/``sh``).
    With ``fraction`` (WADO-URI ``region``) the values are fractions of the image size.
    """

    x: float = 0.0
    y: float = 0.0
    width: float | None = None
    height: float | None = None
    fraction: bool = False

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class Viewport:
    """Bounds of the rendered image (PS3.18 8.3.5.1.3 ``vw,vh``; 9.5.1.2 ``columns``/
    ``rows``): the region is scaled to fit them, keeping its aspect ratio. None leaves
    that side unbounded; without ``upscale`` a smaller image keeps its size (thumbnails)."""

    width: int | None
    height: int | None
    upscale: bool = True

    def __post_init__(self) -> None:
        for side in (self.width, self.height):
            if side is not None and not 0 < side <= MAX_SIDE:
                raise BadRequest(f"a viewport side must be from 1 to {MAX_SIDE}, not {side}")
        if self.width and self.height and self.width * self.height > MAX_PIXELS:
            raise BadRequest(f"a viewport of {self.width}x{self.height} is too large")


@dataclass(frozen=True)
class RenderParams:
    """One rendering of one frame; JSON on the Celery wire (:meth:`to_dict`)."""

    media_type: str = JPEG
    quality: int = DEFAULT_QUALITY
    window: Window | None = None
    region: Region | None = None
    viewport: Viewport | None = None

    def __post_init__(self) -> None:
        if self.media_type not in EXTENSIONS:
            raise BadRequest(f"cannot render to {self.media_type}")
        if not 1 <= self.quality <= 100:
            raise BadRequest(f"quality must be from 1 to 100, not {self.quality}")

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.media_type]

    def normalized(self) -> RenderParams:
        """The same rendering with the parameters that cannot change it dropped: quality
        for lossless formats; everything for a PDF (returned as encapsulated)."""
        if self.media_type == PDF:
            return RenderParams(PDF)
        if self.media_type != JPEG and self.quality != DEFAULT_QUALITY:
            return replace(self, quality=DEFAULT_QUALITY)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"v": RENDER_PARAMS_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RenderParams:
        if d.get("v") != RENDER_PARAMS_VERSION:
            raise UnknownMessageVersion(f"render params version {d.get('v')!r}")
        window, region, viewport = d.get("window"), d.get("region"), d.get("viewport")
        return cls(
            media_type=d["media_type"],
            quality=d["quality"],
            window=Window(**window) if window else None,
            region=Region(**region) if region else None,
            viewport=Viewport(**viewport) if viewport else None,
        )

    def digest(self) -> str:
        """A short hash naming this rendering (of its normalized form) in cache keys."""
        canonical = json.dumps(self.normalized().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:32]
