"""WADO-RS Retrieve Bulkdata (PS3.18 10.4.1.3; media types 8.7.3.3, Table 8.7.3-4).

``GET /studies/{s}/series/{se}/instances/{i}/bulk/{tag_path}`` — the target of a
BulkDataURI in the instance's metadata (tag paths as in :mod:`tessera.shared.dicomjson`:
``7FE00010``, ``00540016/0/00181072``) — answers
``multipart/related; type="application/octet-stream"`` with one part holding the value
bytes as stored.

* Pixel Data (7FE0,0010) is a ranged read of the stored object at the offsets the index
  recorded (``instance.pixel_data``), nothing is parsed. An encapsulated value is its
  items, headers included, up to (not including) the Sequence Delimitation Item: its
  length follows from the frame index (the last frame ends with the last fragment);
* any other element is found by reading the object with pydicom — only the bytes before
  Pixel Data when the element precedes it — and :func:`~tessera.shared.dicomjson.
  resolve_tag_path`.

The part's ``transfer-syntax`` says how the bytes are encoded: the stored (compressed)
Transfer Syntax for encapsulated Pixel Data, Explicit VR Big Endian for values of an
object stored in it, and otherwise Explicit VR Little Endian (a value's bytes are the same
in Implicit and Explicit VR Little Endian, and in the inflated Deflated syntax).

Compressed Pixel Data is sent as stored when ``transfer-syntax=*`` (or its own) is asked,
in a part labelled with its Table 8.7.3-5 media type (``image/jpeg``...); asked as plain
``application/octet-stream`` (no ``transfer-syntax``: Explicit VR Little Endian, PS3.18
8.7.3.3.2) it is decoded, frame after frame, by transcode (:func:`decoded_pixel_data`).

Range (RFC 9110 14; :mod:`.ranges`). PS3.18 (2016b 6.5.5.2.1, Bulk Data Response): "If
the Range header is specified in the request, the server shall return only the specified
bytes of the bulk data object". So a Range counts bytes of the *value*, never of the
multipart/related wrapping, which stays (it is the media type the client accepted, and
how DICOMweb clients such as dicomweb-client read a ranged bulk answer):

* one range: 206, still ``multipart/related``, one part holding those bytes; the
  response and the part both carry ``Content-Range: bytes a-b/<value length>``;
* several ranges: 206, one part per range (after coalescing, :func:`.ranges.coalesce`),
  each with its ``Content-Range`` — the shape of ``multipart/byteranges`` (RFC 9110
  14.6) inside the media type DICOMweb asks for;
* no satisfiable range: 416 with ``Content-Range: bytes */<value length>``; a malformed
  Range, or an ``If-Range`` that is not the current entity tag: the whole value, 200.

Only the asked bytes are read from storage (a ranged read per range) for Pixel Data; a
value found with pydicom is read as before and cut. Every answer says
``Accept-Ranges: bytes``, except an encapsulated value whose length is unknown (no frame
index: rows indexed before it, or fragments it could not group), which is sent whole with
``Accept-Ranges: none``.

Validators: a *strong* ``ETag`` (If-Range needs strong comparison, RFC 9110 13.1.5) from
the object's SHA-256, the tag path, the Transfer Syntax and Content-Location. The
multipart boundary is derived from that tag, so the same tag always names the same
bytes. ``If-None-Match`` gives 304 before storage is read. Cache-Control and Vary as
:mod:`.caching` sets them for the instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator
from typing import Any

from pydicom import dcmread
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tessera.retrieve.caching import cache_headers, entity_tag, matches, not_modified
from tessera.retrieve.context import Context, context
from tessera.retrieve.frames import FrameSource, frame_location, part_type
from tessera.retrieve.negotiation import PartNegotiation
from tessera.retrieve.queries import StoredInstance, stored_instances, target_of
from tessera.retrieve.ranges import ByteRange, NotSatisfiable, requested_ranges
from tessera.retrieve.streaming import OpenedPart, PartPipeline, open_part, until_sequence_delimiter
from tessera.shared.accept import accept_ranges
from tessera.shared.auth.internal import principal_of
from tessera.shared.dicomjson import parse_tag_path, quiet_pydicom, resolve_tag_path
from tessera.shared.errors import NotFound, ObjectNotFound, TesseraError
from tessera.shared.multipart import PartOut, multipart_content_type, write_parts
from tessera.shared.refs import InstanceRef
from tessera.shared.transcode.syntaxes import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN as DEFLATED
from tessera.shared.transcode.syntaxes import EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN

PART_TYPE = "application/octet-stream"
PIXEL_DATA = 0x7FE00010
DECODE_AT_ONCE = 4  # frames of a decoded Pixel Data value asked of transcode together


def value_transfer_syntax(inst: StoredInstance, tag_path: str) -> str:
    """The Transfer Syntax that describes the bytes of the value at ``tag_path``."""
    pixel = inst.pixel_data or {}
    if tag_path == f"{PIXEL_DATA:08X}" and pixel.get("encapsulated"):
        return inst.transfer_syntax_uid
    if inst.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN:
        return EXPLICIT_VR_BIG_ENDIAN
    return EXPLICIT_VR_LITTLE_ENDIAN


def pixel_value_length(pixel: dict[str, Any]) -> int | None:
    """Bytes of the stored Pixel Data value as served: its defined length, or for
    encapsulated data the items up to the delimiter, known from the frame index's last
    frame (it ends with the last fragment, :mod:`tessera.shared.frameindex`)."""
    if pixel.get("length") is not None:
        return int(pixel["length"])
    frames = pixel.get("frames")
    if isinstance(frames, list) and frames:
        last = frames[-1]
        return int(last[0]) + int(last[1]) - int(pixel["offset"])
    return None


def bulk_entity_tag(inst: StoredInstance, tag_path: str, ts: str, location: str) -> str:
    """A strong entity tag: the answer's bytes follow from these (see the docstring)."""
    return entity_tag("bulkdata", inst.sha256, tag_path, ts, location).removeprefix("W/")


def boundary_of(etag: str) -> str:
    return hashlib.sha256(b"boundary" + etag.encode()).hexdigest()[:32]


async def retrieve_bulkdata(request: Request) -> Response:
    """One bulk data value of an instance, as stored, or byte ranges of it (PS3.18
    10.4.1.3; RFC 9110 14)."""
    ctx = context(request)
    target = target_of(request.path_params)
    assert isinstance(target, InstanceRef)
    tag_path = request.path_params["tag_path"].strip("/").upper()
    try:
        tag, parents = parse_tag_path(tag_path)
    except ValueError:
        raise NotFound(f"{tag_path!r} is not a bulk data tag path") from None
    negotiation = PartNegotiation(accept_ranges(request), PART_TYPE)
    if not negotiation.wanted:
        raise negotiation.not_acceptable((), noun="bulk data value")
    (inst,) = await stored_instances(ctx.pool, target, principal_of(request).labels)
    stored_ts = value_transfer_syntax(inst, tag_path)
    pixel = inst.pixel_data
    encapsulated = bool(pixel and pixel.get("encapsulated")) and tag_path == f"{PIXEL_DATA:08X}"
    source = FrameSource.of(inst) if encapsulated else None

    def decodable(_stored: str, wanted: str) -> bool:  # compressed Pixel Data only
        return (
            source is not None
            and wanted == EXPLICIT_VR_LITTLE_ENDIAN
            and source.convertible(_stored, wanted)
        )

    ts = negotiation.choose(stored_ts, decodable)
    if ts is None:
        raise negotiation.not_acceptable([stored_ts], noun="bulk data value")
    content_type = f"{part_type(PART_TYPE, ts)}; transfer-syntax={ts}"
    location = ctx.base_url(request) + f"{target.path}/bulk/{tag_path}"
    etag = bulk_entity_tag(inst, tag_path, ts, location)
    headers = cache_headers(ctx.settings, target, etag)
    if matches(request, etag):
        return not_modified(headers)
    boundary = boundary_of(etag)
    media_type = multipart_content_type(PART_TYPE, boundary)
    if source is not None and ts != stored_ts:
        return await decoded_pixel_data(ctx, source, content_type, location, media_type, headers)
    value: bytes | None = None
    if (
        tag != PIXEL_DATA
        or parents
        or not pixel
        or pixel.get("tag", PIXEL_DATA) != PIXEL_DATA  # Float / Double Float Pixel Data
        or inst.transfer_syntax_uid == DEFLATED  # offsets count inflated bytes
    ):
        value = await _read_value(ctx, inst, tag_path)
        length: int | None = len(value)
    else:
        length = pixel_value_length(pixel)
    if pixel and length is None:  # encapsulated of unknown length: whole, no ranges
        headers["Accept-Ranges"] = "none"
        whole = PartPipeline([inst], lambda i: _open_encapsulated(ctx, i, content_type, location))
        await whole.start()
        return whole.response(media_type, boundary, headers=headers)
    assert length is not None
    headers["Accept-Ranges"] = "bytes"
    try:
        ranges = requested_ranges(
            request.headers.get("range"), request.headers.get("if-range"), etag, length
        )
    except NotSatisfiable as e:
        return PlainTextResponse(
            f"Range Not Satisfiable: the bulk data value has {length} bytes\n",
            status_code=416,
            headers=headers | {"Content-Range": e.content_range},
        )
    status = 200 if ranges is None else 206
    if ranges is not None and len(ranges) == 1:
        headers["Content-Range"] = ranges[0].content_range(length)
    spans = ranges or [ByteRange(0, length - 1)]

    def part_headers(r: ByteRange) -> dict[str, str] | None:
        return None if ranges is None else {"Content-Range": r.content_range(length)}

    if value is not None or not length:  # in memory (or empty): cut it
        value = value or b""
        parts = [
            PartOut(content_type, value[r.start : r.end + 1], location, part_headers(r))
            for r in spans
        ]
        return StreamingResponse(
            write_parts(parts, boundary), status_code=status, headers=headers, media_type=media_type
        )
    assert pixel is not None
    offset = int(pixel["offset"])

    async def open_range(r: ByteRange) -> OpenedPart:
        try:
            return await open_part(
                ctx.store,
                inst.storage_key,
                start=offset + r.start,
                length=r.length,
                headers=part_headers(r),
                content_type=content_type,
                content_location=location,
            )
        except ObjectNotFound:
            raise TesseraError(f"the stored object {inst.storage_key} is missing") from None

    pipeline = PartPipeline(spans, open_range)
    await pipeline.start()
    return pipeline.response(media_type, boundary, status_code=status, headers=headers)


async def decoded_pixel_data(
    ctx: Context,
    source: FrameSource,
    content_type: str,
    location: str,
    media_type: str,
    headers: dict[str, str],
) -> Response:
    """Compressed Pixel Data asked as uncompressed bytes (PS3.18 8.7.3.3.2: an
    ``application/octet-stream`` without ``transfer-syntax`` is Explicit VR Little
    Endian): the value of the decoded Pixel Data, its frames decoded one after the other
    by transcode (a few at once) and sent in one part. Every frame is decoded (and kept
    by transcode as an object) before the status, so data transcode cannot decode, or a
    frame missing from the data, is a 406 and not a cut answer; the answer then streams
    the decoded frames from storage one after the other. No byte ranges (the length is
    not known before the last frame)."""
    boundary = media_type.rsplit("boundary=", 1)[1]
    inst, ts = source.inst, EXPLICIT_VR_LITTLE_ENDIAN
    at_once = asyncio.Semaphore(DECODE_AT_ONCE)

    async def decoded(n: int) -> str:
        async with at_once:
            return await ctx.transcoder.frame_key_for(
                inst.storage_key, n, ts, frame_location(source, n)
            )

    keys = await asyncio.gather(*(decoded(n) for n in range(1, source.count + 1)))

    async def frames() -> AsyncIterator[bytes]:
        for key in keys:
            try:
                opened = await open_part(ctx.store, key, content_type=content_type)
            except ObjectNotFound:
                raise TesseraError(f"a decoded frame of {inst.storage_key} is missing") from None
            try:
                async for chunk in opened:
                    yield chunk
            finally:
                await opened.aclose()

    headers["Accept-Ranges"] = "none"
    part = PartOut(content_type, frames(), location)
    return StreamingResponse(write_parts([part], boundary), headers=headers, media_type=media_type)


async def _open_encapsulated(
    ctx: Context, inst: StoredInstance, content_type: str, location: str
) -> OpenedPart:
    """The whole encapsulated value: its items, read up to the delimiter."""
    assert inst.pixel_data is not None
    try:
        return await open_part(
            ctx.store,
            inst.storage_key,
            start=int(inst.pixel_data["offset"]),
            through=until_sequence_delimiter,
            content_type=content_type,
            content_location=location,
        )
    except ObjectNotFound:
        raise TesseraError(f"the stored object {inst.storage_key} is missing") from None


async def _read_value(ctx: Context, inst: StoredInstance, tag_path: str) -> bytes:
    """The stored bytes of the element at ``tag_path``, read with pydicom: only the bytes
    before Pixel Data when the path starts before it (and the offsets are known)."""
    pixel = inst.pixel_data
    header_only = (
        pixel is not None
        and int(tag_path[:8], 16) < PIXEL_DATA
        and inst.transfer_syntax_uid != DEFLATED
    )
    try:
        if pixel is not None and header_only:
            data = await ctx.store.get_bytes(inst.storage_key, 0, int(pixel["offset"]))
        else:
            data = await ctx.store.get_bytes(inst.storage_key)
    except ObjectNotFound:
        raise TesseraError(f"the stored object {inst.storage_key} is missing") from None
    return await asyncio.to_thread(_value_bytes, data, tag_path, header_only)


def _value_bytes(data: bytes, tag_path: str, header_only: bool) -> bytes:
    with quiet_pydicom():
        ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=header_only)
    elem = resolve_tag_path(ds, tag_path)
    if elem.value is None:
        return b""
    if isinstance(elem.value, bytes | bytearray):
        return bytes(elem.value)
    return _encode(elem, ds.get("SpecificCharacterSet"))


def _encode(elem: DataElement, charset: str | list[str] | None) -> bytes:
    """A decoded (non-binary) value back to its little endian encoding."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    with quiet_pydicom():
        write_data_element(fp, elem, convert_encodings(charset or "ISO_IR 6"))
    return fp.getvalue()[8:]  # implicit VR header: tag (4) + length (4)


routes = [
    Route(
        "/studies/{study}/series/{series}/instances/{instance}/bulk/{tag_path:path}",
        retrieve_bulkdata,
        methods=["GET"],
        name="retrieve_bulkdata",
    )
]
