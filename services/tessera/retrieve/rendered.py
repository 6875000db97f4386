"""WADO-RS Retrieve Rendered and Thumbnail resources (PS3.18 10.4.1.1.3, 10.4.1.1.4).

    GET /studies/{s}[/series/{se}]/rendered                   multipart/related, one part
                                                              per image instance (frame 1)
    GET .../instances/{i}/rendered                            one image: the first frame
    GET .../instances/{i}/frames/{list}/rendered              one image for one frame, else
                                                              multipart/related, one per frame
    GET /studies/{s}[/series/{se}[/instances/{i}[/frames/{list}]]]/thumbnail
                                                              one image (10.4.3.3.4)

Rendering is PS3.18 8.3.5 (see :mod:`tessera.shared.rendering`), done by transcode
(:class:`~tessera.retrieve.renderer.Renderer`); a rendering already stored is served
from storage. The media type is negotiated per :mod:`.render_params`: ``image/jpeg``
unless the client prefers ``image/png`` or ``image/gif``; an Encapsulated PDF instance is
``application/pdf``; a video or non-image instance is 406. Study and series renderings
hold their image instances only.

A single rendering names its bytes: ``ETag`` is derived from the stored object's hash and
the rendering parameters (an ``If-None-Match`` that matches is 304, nothing rendered), and
``Cache-Control: private`` (PHI stays out of shared caches) lets the client keep it for a
day; an instance replaced under the same UID gets another ETag.

A thumbnail is the rendering of :func:`~.renderables.representative` fitted in
:data:`THUMBNAIL_SIZE` (never enlarged) unless ``viewport`` says otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.retrieve.context import Context, context
from tessera.retrieve.queries import target_of
from tessera.retrieve.render_params import choose_media_type, not_acceptable, rendering_query
from tessera.retrieve.renderables import Renderable, renderables, representative
from tessera.retrieve.streaming import (
    ClosingStreamingResponse,
    OpenedPart,
    PartPipeline,
    open_part,
    opened_bytes,
    whole_if_small,
)
from tessera.shared.accept import accept_ranges
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import BadRequest, NotAcceptable, NotFound, ObjectNotFound, TesseraError
from tessera.shared.multipart import multipart_content_type, new_boundary
from tessera.shared.refs import InstanceRef
from tessera.shared.rendering import IMAGE_MEDIA_TYPES, RenderParams, Viewport

THUMBNAIL_SIZE = 128
CACHE_CONTROL = "private, max-age=86400"
MAX_FRAMES_IN_LIST = 10000


def frame_list(text: str | None) -> list[int] | None:
    """The frame numbers of a ``/frames/{list}`` path (PS3.18 8.3.3.1: 1-based, comma
    separated); None for a route without frames."""
    if text is None:
        return None
    frames = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) < 1:
            raise BadRequest(f"{text!r} is not a list of frame numbers (1, 2, ...)")
        frames.append(int(part))
    if len(frames) > MAX_FRAMES_IN_LIST:
        raise BadRequest(f"at most {MAX_FRAMES_IN_LIST} frames may be asked at once")
    return frames


def check_frames(inst: Renderable, frames: list[int]) -> None:
    for n in frames:
        if n > inst.number_of_frames:
            raise NotFound(
                f"frame {n} not found: instance {inst.ref.sop_instance_uid} has"
                f" {inst.number_of_frames} frame(s)"
            )


def etag(key: str) -> str:
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def _matches(request: Request, tag: str) -> bool:
    header = request.headers.get("if-none-match", "")
    return any(t.strip().removeprefix("W/") in (tag, "*") for t in header.split(","))


async def _open(ctx: Context, key: str, media_type: str, location: str | None) -> OpenedPart:
    try:
        return await open_part(ctx.store, key, content_type=media_type, content_location=location)
    except ObjectNotFound:
        raise TesseraError(f"the rendering {key} is missing from storage") from None


async def single(
    ctx: Context, request: Request, inst: Renderable, frame: int, params: RenderParams
) -> Response:
    """One rendered frame as the whole response."""
    tag = etag(ctx.renderer.key(inst.storage_key, frame, params))
    headers = {"ETag": tag, "Cache-Control": CACHE_CONTROL}
    if _matches(request, tag):
        return Response(status_code=304, headers=headers)
    key, rendering = await ctx.renderer.rendering_for(
        inst.storage_key, frame, params, inst.transfer_syntax_uid
    )
    if rendering is not None:  # made for this request: not necessarily in storage yet
        return Response(rendering, media_type=params.media_type, headers=headers)
    opened = await _open(ctx, key, params.media_type, None)
    try:
        body = await whole_if_small(opened)
    except BaseException:
        await opened.aclose()
        raise
    if body is not None:
        return Response(body, media_type=params.media_type, headers=headers)
    return ClosingStreamingResponse(
        opened, close=opened.aclose, media_type=params.media_type, headers=headers
    )


async def multipart(
    ctx: Context, request: Request, items: list[tuple[Renderable, int, str]], params: RenderParams
) -> Response:
    """Several rendered frames as ``multipart/related; type=<media type>`` (PS3.18 8.7.5),
    each part with the URL of its own rendering as Content-Location."""
    base = ctx.base_url(request)

    async def open_one(item: tuple[Renderable, int, str]) -> OpenedPart:
        inst, frame, path = item
        key, rendering = await ctx.renderer.rendering_for(
            inst.storage_key, frame, params, inst.transfer_syntax_uid
        )
        if rendering is not None:
            return opened_bytes(rendering, content_type=params.media_type,
                                content_location=base + path)  # fmt: skip
        return await _open(ctx, key, params.media_type, base + path)

    pipeline = PartPipeline(items, open_one)
    await pipeline.start()
    boundary = new_boundary()
    return pipeline.response(multipart_content_type(params.media_type, boundary), boundary)


async def retrieve_rendered(request: Request) -> Response:
    """Retrieve Rendered Study / Series / Instance / Frames (PS3.18 10.4.1.1.3)."""
    ctx = context(request)
    target = target_of(request.path_params)
    frames = frame_list(request.path_params.get("frames"))
    instances = await renderables(ctx.pool, target, principal_of(request).labels)
    ranges = accept_ranges(request)
    if isinstance(target, InstanceRef):
        (inst,) = instances
        frames = frames or [1]
        check_frames(inst, frames)
        media_type = choose_media_type(ranges, inst.offers)
        if media_type is None:
            raise not_acceptable(ranges, inst.offers, inst.describe())
        params = rendering_query(request.query_params, media_type)
        if len(frames) == 1:
            return await single(ctx, request, inst, frames[0], params)
        path = inst.ref.path + "/frames/{}/rendered"
        return await multipart(ctx, request, [(inst, n, path.format(n)) for n in frames], params)
    images = [i for i in instances if i.category == "image"]
    if not images:
        raise NotAcceptable(f"no instance of {target.path} is an image that can be rendered")
    media_type = choose_media_type(ranges, IMAGE_MEDIA_TYPES)
    if media_type is None:
        raise not_acceptable(ranges, IMAGE_MEDIA_TYPES, f"the images of {target.path}")
    params = rendering_query(request.query_params, media_type)
    items = [(i, 1, i.ref.path + "/rendered") for i in images]
    return await multipart(ctx, request, items, params)


async def retrieve_thumbnail(request: Request) -> Response:
    """Retrieve Thumbnail of a Study / Series / Instance / Frames (PS3.18 10.4.1.1.4)."""
    ctx = context(request)
    target = target_of(request.path_params)
    frames = frame_list(request.path_params.get("frames")) or [1]
    instances = await renderables(ctx.pool, target, principal_of(request).labels)
    inst = representative(instances)
    if inst is None:
        raise NotAcceptable(f"{target.path} has no image to make a thumbnail of")
    check_frames(inst, frames[:1])
    ranges = accept_ranges(request)
    media_type = choose_media_type(ranges, IMAGE_MEDIA_TYPES)
    if media_type is None:
        raise not_acceptable(ranges, IMAGE_MEDIA_TYPES, "a thumbnail")
    params = rendering_query(request.query_params, media_type)
    if params.viewport is None:
        params = replace(params, viewport=Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE, upscale=False))
    return await single(ctx, request, inst, frames[0], params)


_STUDY = "/studies/{study}"
_SERIES = _STUDY + "/series/{series}"
_INSTANCE = _SERIES + "/instances/{instance}"
_FRAMES = _INSTANCE + "/frames/{frames}"

routes = [
    Route(f"{base}/{kind}", endpoint, methods=["GET"], name=f"retrieve_{level}_{kind}")
    for level, base in (
        ("study", _STUDY),
        ("series", _SERIES),
        ("instance", _INSTANCE),
        ("frames", _FRAMES),
    )
    for kind, endpoint in (("rendered", retrieve_rendered), ("thumbnail", retrieve_thumbnail))
]
