"""WADO-RS Retrieve Frames (PS3.18 10.4, Frames resource of Table 10.4.1-1; 8.7.3.3).

``GET /studies/{s}/series/{se}/instances/{i}/frames/{frame_list}``: ``frame_list`` is
comma-separated 1-based frame numbers (served in the order asked, a repeat once). The
answer is ``multipart/related; type=<part type>``, one part per frame:

* native pixel data (Table 8.7.3-4): ``application/octet-stream;
  transfer-syntax=1.2.840.10008.1.2.1`` — the frame's bytes (Implicit and Explicit VR
  Little Endian frames are the same bytes; Explicit VR Big Endian is labelled as such);
* encapsulated pixel data (Table 8.7.3-5): the frame's compressed bitstream, its
  fragments' values without item headers, as ``image/jpeg``, ``image/dicom-rle``,
  ``image/jls``, ``image/jp2``, ``image/jpx``, ``image/jphc`` with the stored
  ``transfer-syntax``, also when the client named ``application/octet-stream`` (OHIF:
  ``multipart/related; type=application/octet-stream; transfer-syntax=*``): the part is
  labelled with its own type, the multipart ``type`` stays the one asked.

A frame sent as stored is one ranged read of the stored object at the offsets of the
frame index (:mod:`tessera.shared.frameindex`); the object is never read whole, nor
decoded. A frame asked in another Transfer Syntax (Explicit VR Little Endian from a
compressed one, the default when ``transfer-syntax`` is absent), or one the index has no
range for (Deflated, unaligned 1-bit frames, rows indexed before the frame index), is
decoded by transcode, one frame at a time (:meth:`Transcoder.frame_key_for`).

Errors: a malformed frame list is 400; frame 0, a frame past NumberOfFrames, an instance
without pixel data are 404 with the reason; nothing acceptable in Accept is 406.
Caching: :mod:`.caching` (instance-level ETag and Cache-Control, 304 before any read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tessera.retrieve.caching import cache_headers, entity_tag, matches, not_modified
from tessera.retrieve.context import Context, context
from tessera.retrieve.negotiation import (
    COMPRESSED_MEDIA_TYPES,
    PartNegotiation,
    compressed_media_type,
)
from tessera.retrieve.queries import StoredInstance, stored_instances, target_of
from tessera.retrieve.streaming import (
    DEFAULT_WINDOW,
    OpenedPart,
    PartPipeline,
    open_part,
    until_sequence_delimiter,
)
from tessera.shared.accept import accept_ranges
from tessera.shared.auth.internal import principal_of
from tessera.shared.errors import BadRequest, NotFound, ObjectNotFound, TesseraError
from tessera.shared.frameindex import FrameRange, frame_range
from tessera.shared.multipart import multipart_content_type, new_boundary
from tessera.shared.refs import InstanceRef
from tessera.shared.transcode import FrameLocation, can_transcode_frame
from tessera.shared.transcode.syntaxes import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN

PART_TYPE = "application/octet-stream"
MAX_FRAMES_PER_REQUEST = 10_000


# frames opened (or converted) together before the status of a Retrieve Frames answer
FRAMES_AHEAD = 16


def parse_frame_list(text: str) -> list[int]:
    """The frame numbers of a ``{frame_list}`` path segment, in the order asked; 400 if
    it is not a comma-separated list of unsigned integers. The list is one of
    non-duplicate frame numbers (PS3.18 frame-list): a repeat is served once, so a short
    URL cannot ask for the same frame thousands of times (issue 15)."""
    parts = text.split(",")
    if len(parts) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    numbers = []
    for part in parts:
        part = part.strip()
        if not part.isascii() or not part.isdigit() or len(part) > 10:
            raise BadRequest(
                f"malformed frame list {text!r}: expected comma-separated frame numbers,"
                " e.g. 1,3,5 (PS3.18 10.4)"
            )
        numbers.append(int(part))
    return list(dict.fromkeys(numbers))


@dataclass(frozen=True)
class FrameSource:
    """How an instance's frames are stored: the Transfer Syntax their bytes are in, and
    whether the frame index gives their ranges."""

    inst: StoredInstance
    pixel: dict[str, Any]
    count: int
    transfer_syntax: str  # of the frames as served without conversion
    ranged: bool

    @classmethod
    def of(cls, inst: StoredInstance) -> FrameSource:
        pixel = inst.pixel_data
        if not pixel:
            raise NotFound(f"instance {inst.ref.sop_instance_uid} has no pixel data, so no frames")
        stored = inst.transfer_syntax_uid
        ranged = frame_range(pixel, 1) is not None
        if pixel.get("encapsulated") and ranged:
            ts = stored
        elif stored == EXPLICIT_VR_BIG_ENDIAN and ranged:
            ts = stored
        else:  # native little endian, or decoded by transcode
            ts = EXPLICIT_VR_LITTLE_ENDIAN
        return cls(inst, pixel, inst.number_of_frames or 1, ts, ranged)

    def convertible(self, _from: str, target: str) -> bool:
        return can_transcode_frame(self.inst.transfer_syntax_uid, target)

    def check(self, numbers: list[int]) -> None:
        for n in numbers:
            if not 1 <= n <= self.count:
                raise NotFound(
                    f"frame {n} does not exist: instance {self.inst.ref.sop_instance_uid} has"
                    f" {self.count} frame{'s' if self.count > 1 else ''}, numbered from 1"
                )

    def range(self, frame_number: int, transfer_syntax: str) -> FrameRange | None:
        """The frame's range when sent as stored in ``transfer_syntax``, else None."""
        if not self.ranged or transfer_syntax != self.transfer_syntax:
            return None
        return frame_range(self.pixel, frame_number)


async def retrieve_frames(request: Request) -> Response:
    """Retrieve Frames of one instance (PS3.18 10.4)."""
    ctx = context(request)
    target = target_of(request.path_params)
    assert isinstance(target, InstanceRef)
    numbers = parse_frame_list(request.path_params["frames"])
    negotiation = PartNegotiation(accept_ranges(request), PART_TYPE, COMPRESSED_MEDIA_TYPES)
    if not negotiation.wanted:
        raise negotiation.not_acceptable((), noun="frame")
    (inst,) = await stored_instances(ctx.pool, target, principal_of(request).labels)
    source = FrameSource.of(inst)
    source.check(numbers)
    chosen = negotiation.choose_part(source.transfer_syntax, source.convertible)
    if chosen is None:
        raise negotiation.not_acceptable([source.transfer_syntax], noun="frame")
    media_type, ts = chosen
    location = ctx.base_url(request) + target.path + "/frames/"
    etag = entity_tag("frames", inst.sha256, numbers, media_type, ts, location)
    headers = cache_headers(ctx.settings, target, etag)
    if matches(request, etag):
        return not_modified(headers)
    content_type = f"{part_type(media_type, ts)}; transfer-syntax={ts}"

    async def open_one(n: int) -> OpenedPart:
        return await open_frame(
            ctx, source, n, ts, content_type=content_type, content_location=f"{location}{n}"
        )

    # a frame list is short (a viewer asks one frame at a time): every frame opened, or
    # converted, before the status, so that a frame transcode refuses is a 406, not a
    # response cut after its first part (issue 15); longer lists: the first FRAMES_AHEAD
    window = max(DEFAULT_WINDOW, min(len(numbers), FRAMES_AHEAD))
    pipeline = PartPipeline(numbers, open_one, window=window)
    await pipeline.start(whole_window=True)
    boundary = new_boundary()
    answer_type = multipart_content_type(media_type, boundary)
    response = await pipeline.small_response(answer_type, boundary)
    response.headers.update(headers)
    return response


def part_type(asked: str, transfer_syntax: str) -> str:
    """The media type a frame's part is labelled with: a compressed frame always carries
    its own (Table 8.7.3-5: ``image/dicom-rle``, ``image/jpeg``...), also when the client
    asked ``type=application/octet-stream; transfer-syntax=*`` (as OHIF does): the bytes
    are not uncompressed pixels, which is what ``application/octet-stream`` names (8.7.3.3.2).
    The multipart ``type`` stays the one asked."""
    return compressed_media_type(transfer_syntax) or asked


async def open_frame(ctx: Context, source: FrameSource, n: int, ts: str, **part: Any) -> OpenedPart:
    """Frame ``n`` in ``ts``: a ranged read of the stored object, or transcode's frame."""
    inst = source.inst
    where = source.range(n, ts)
    try:
        if where is None:
            key = await ctx.transcoder.frame_key_for(
                inst.storage_key, n, ts, frame_location(source, n)
            )
            return await open_part(ctx.store, key, **part)
        return await open_part(
            ctx.store,
            inst.storage_key,
            start=where.offset,
            length=where.length,
            through=_values if where.items else None,
            **part,
        )
    except ObjectNotFound:
        raise TesseraError(
            f"the stored object of frame {n} ({inst.storage_key}) is missing"
        ) from None


def frame_location(source: FrameSource, n: int) -> FrameLocation | None:
    """Where transcode finds encapsulated frame ``n`` to decode it without reading the
    whole object: the Pixel Data value's offset (the attributes are the bytes before it)
    and the frame's range."""
    pixel = source.pixel
    if not pixel.get("encapsulated") or pixel.get("deflated"):
        return None
    where = frame_range(pixel, n)
    if where is None:
        return None
    return FrameLocation(int(pixel["offset"]), where.offset, where.length, where.items)


def _values(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A frame's fragments read as one range: their values, item headers dropped."""
    return until_sequence_delimiter(chunks, values_only=True)


routes = [
    Route(
        "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        retrieve_frames,
        methods=["GET"],
        name="retrieve_frames",
    )
]
