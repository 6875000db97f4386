"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=...``.

One instance, named by all three UIDs (required, PS3.18 Table 9.1.2-1; a malformed one
is 400, an unknown one 404), as one of two transactions told apart by the selected media
type (PS3.18 9.1): ``contentType`` when given (it replaces Accept, 9.1.2), else the
Accept header.

Retrieve DICOM Instance (9.4), ``application/dicom``: the instance in ``transferSyntax``
when given (406 if it cannot be produced, 9.4.2.4), else in Explicit VR Little Endian,
the default for DICOM web services (9.4.2.4); an instance stored so is sent byte for byte,
and so is one whose stored syntax transcode cannot decode (rather than nothing).
``anonymize`` is refused with 400: Tessera does not de-identify, and ignoring the
parameter would send identifying data to a client that asked for none (9.4.2.3 lets an
origin server that "is unable or refuses to anonymize" answer with an error).

Retrieve Rendered Instance (9.5): an image instance as ``image/jpeg`` (the default for a
``*/*`` Accept, Table 8.7.4-1), ``image/png`` or ``image/gif``; an Encapsulated PDF as
``application/pdf`` (its default here); others as ``application/dicom`` by default.
Parameters (9.5.1.2): ``frameNumber`` (a multi-frame instance only, else 400, 9.5.2),
``windowCenter`` + ``windowWidth`` (both or neither; a linear window), ``rows`` /
``columns`` (bounds the image is scaled to fit, keeping its aspect ratio), ``region``
(``x1,y1,x2,y2`` fractions of the image), ``imageQuality`` (1..100). ``annotation``,
``charset`` and the presentation state UIDs are not supported and are ignored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.retrieve.context import Context, context
from tessera.retrieve.render_params import choose_media_type, integer, not_acceptable, number, one
from tessera.retrieve.renderables import Renderable, renderables
from tessera.retrieve.rendered import single
from tessera.retrieve.streaming import ClosingStreamingResponse, open_part
from tessera.shared.accept import requested_accept
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import BadRequest, NotAcceptable, ObjectNotFound, TesseraError
from tessera.shared.mediatypes import parse_accept
from tessera.shared.refs import InstanceRef, check_uid
from tessera.shared.rendering import DEFAULT_QUALITY, Region, RenderParams, Viewport, Window
from tessera.shared.transcode import TARGETS, can_transcode
from tessera.shared.transcode.syntaxes import EXPLICIT_VR_LITTLE_ENDIAN

DICOM = "application/dicom"
MAX_SIDE = 1 << 30  # Viewport refuses what is too large, with a clearer message


def instance_of(request: Request) -> InstanceRef:
    q = request.query_params
    request_type = one(q, "requestType")
    if request_type != "WADO":
        raise BadRequest(f"requestType must be WADO, not {request_type!r} (PS3.18 9.1.2)")
    uids = []
    for name in ("studyUID", "seriesUID", "objectUID"):
        value = one(q, name)
        if not value:
            raise BadRequest(f"{name} is required (PS3.18 Table 9.1.2-1)")
        uids.append(check_uid(value, name))
    return InstanceRef(*uids)


async def retrieve_dicom(ctx: Context, request: Request, inst: Renderable) -> Response:
    """Retrieve DICOM Instance (PS3.18 9.4)."""
    q = request.query_params
    if one(q, "anonymize") is not None:
        raise BadRequest("anonymize is not supported: Tessera does not de-identify (9.4.2.3)")
    stored = inst.transfer_syntax_uid
    asked = one(q, "transferSyntax")
    if asked is None:
        target = (
            EXPLICIT_VR_LITTLE_ENDIAN
            if can_transcode(stored, EXPLICIT_VR_LITTLE_ENDIAN)
            else stored
        )
    else:
        target = check_uid(asked, "transferSyntax")
        if target != stored and not can_transcode(stored, target):
            offers = ", ".join(sorted({stored, *(t for t in TARGETS if can_transcode(stored, t))}))
            raise NotAcceptable(
                f"the instance is stored as {stored} and cannot be sent as {target};"
                f" it can be sent as {offers}"
            )
    key = await ctx.transcoder.key_for(inst.storage_key, stored, target)
    try:
        opened = await open_part(ctx.store, key, content_type=DICOM)
    except ObjectNotFound:
        raise TesseraError(f"the stored object of {inst.describe()} ({key}) is missing") from None
    return ClosingStreamingResponse(opened, close=opened.aclose, media_type=DICOM)


def frame_number(request: Request, inst: Renderable) -> int:
    text = one(request.query_params, "frameNumber")
    if text is None:
        return 1
    if inst.number_of_frames < 2:
        raise BadRequest("frameNumber applies to multi-frame instances only (PS3.18 9.5.2)")
    return integer(text, "frameNumber", 1, inst.number_of_frames)


def uri_rendering(request: Request, media_type: str) -> RenderParams:
    """The rendering a WADO-URI request asks for (PS3.18 9.5.1.2)."""
    q = request.query_params
    center, width = one(q, "windowCenter"), one(q, "windowWidth")
    if (center is None) != (width is None):
        raise BadRequest("windowCenter and windowWidth go together (PS3.18 9.5.1.2)")
    window = None
    if center is not None and width is not None:
        window = Window(number(center, "windowCenter"), number(width, "windowWidth"))
    rows, columns = one(q, "rows"), one(q, "columns")
    viewport = None
    if rows is not None or columns is not None:
        viewport = Viewport(
            integer(columns, "columns", 1, MAX_SIDE) if columns is not None else None,
            integer(rows, "rows", 1, MAX_SIDE) if rows is not None else None,
        )
    quality = one(q, "imageQuality")
    return RenderParams(
        media_type=media_type,
        quality=integer(quality, "imageQuality", 1, 100) if quality else DEFAULT_QUALITY,
        window=window,
        region=region(one(q, "region")),
        viewport=viewport,
    )


def region(text: str | None) -> Region | None:
    """``x1,y1,x2,y2``: top-left and bottom-right corners as fractions (PS3.18 9.5.1.2)."""
    if text is None:
        return None
    values = [number(v, "region") for v in text.split(",")]
    if len(values) != 4:
        raise BadRequest(f"region must be x1,y1,x2,y2, not {text!r}")
    x1, y1, x2, y2 = values
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise BadRequest(f"region must have 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1: {text!r}")
    return Region(x1, y1, x2 - x1, y2 - y1, fraction=True)


async def wado_uri(request: Request) -> Response:
    """Retrieve DICOM Instance or Retrieve Rendered Instance (PS3.18 9.4, 9.5)."""
    ctx = context(request)
    (inst,) = await renderables(ctx.pool, instance_of(request), principal_of(request).labels)
    one(request.query_params, "contentType")  # at most one (PS3.18 9.1.2.1)
    requested = requested_accept(request, "contentType")
    ranges = parse_accept(requested)
    if not ranges:
        raise BadRequest(f"contentType / Accept {requested!r} has no valid media type")
    offers = (*inst.offers, DICOM)
    chosen = choose_media_type(ranges, offers)
    if chosen is None:
        raise not_acceptable(ranges, offers, inst.describe())
    if chosen == DICOM:
        return await retrieve_dicom(ctx, request, inst)
    frame = frame_number(request, inst)
    return await single(ctx, request, inst, frame, uri_rendering(request, chosen))


routes = [Route("/wado", wado_uri, methods=["GET"], name="wado_uri")]
