"""STOW-RS of metadata and bulk data (PS3.18 10.5.1.1.2, 8.6.1.2; F.2, PS3.19 A.1).

Besides PS3.10 instances (``multipart/related; type="application/dicom"``), a STOW-RS
request may send each instance as its metadata plus bulk data:

* ``multipart/related; type="application/dicom+json"``: parts of DICOM JSON (each a
  JSON array of data sets, or one data set), or ``type="application/dicom+xml"``: parts
  that are each one Native DICOM Model document;
* the other parts are bulk data, each found by its ``Content-Location`` (or
  ``Content-ID``, for a ``cid:`` URI), which a ``BulkDataURI`` (XML: ``BulkData@uri``)
  of the metadata names: ``application/octet-stream`` for uncompressed values, or Pixel
  Data compressed as a Table 8.7.3-5 media type (``image/jpeg``, ``image/jls``...) with
  its ``transfer-syntax`` (else the type's default); a compressed multi-frame Pixel Data
  is one part per frame under the same location, in frame order.

The router turns each data set into the PS3.10 instance it describes (File Meta
Information from its UIDs; Explicit VR Little Endian, or the compressed Transfer Syntax
of its Pixel Data part) and stores those as any STOW-RS: so an instance stored this way
is the same, read back, as the same instance sent as a PS3.10 file. A data set that does
not give an instance (no SOP Class/Instance UID or Study UID, a bulk data URI with no
part, values pydicom cannot encode) is a FailedSOPSequence item with Failure Reason
0xC000 and the reason as Error Comment, merged into the shards' answer (PS3.18 10.5.3).

Memory: parts are spooled as for any STOW-RS; one instance's values are in memory while
it is written (a data set of several GB of bulk data should be sent as a PS3.10 file).
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import IO, Any

from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian
from starlette.requests import Request
from starlette.responses import Response

from tessera.router.xml_answers import read_body
from tessera.shared.dicomjson import quiet_pydicom
from tessera.shared.dicomxml import DICOM_XML, xml_to_dataset
from tessera.shared.errors import BadGateway, BadRequest, MultipartError
from tessera.shared.http import DICOM_JSON, DicomJSONResponse
from tessera.shared.mediatypes import MediaType, parse_media_type
from tessera.shared.multipart import (
    Part,
    multipart_content_type,
    new_boundary,
)
from tessera.shared.settings import Settings
from tessera.shared.stow import failed_item, read_stow_parts, response_status

Endpoint = Callable[[Request], Awaitable[Response]]

METADATA_TYPES = (DICOM_JSON, DICOM_XML)
CANNOT_UNDERSTAND = 0xC000  # PS3.18 Table I.2-2 / PS3.4 C.4.2.1.4.1
PIXEL_DATA = "7FE00010"
# PS3.18 Table 8.7.3-5: the default (D) Transfer Syntax of each compressed media type
_DEFAULTS = {
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/x-jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/jxl": "1.2.840.10008.1.2.4.110",
}


def metadata_type(request: Request) -> str | None:
    """``application/dicom+json`` or ``+xml`` when the STOW-RS sends metadata parts."""
    try:
        mt = parse_media_type(request.headers.get("content-type", ""))
    except BadRequest:
        return None
    part_type = mt.params.get("type", "").strip().lower()
    if mt.essence == "multipart/related" and part_type in METADATA_TYPES:
        return part_type
    return None


@dataclass
class _Bulk:
    """The bulk data parts of one location: a value, or a compressed frame each."""

    media_type: MediaType
    files: list[IO[bytes]] = field(default_factory=list)

    def read(self) -> bytes:
        return b"".join(_read(f) for f in self.files)

    def frames(self) -> list[bytes]:
        return [_read(f) for f in self.files]


def _read(f: IO[bytes]) -> bytes:
    f.seek(0)
    return f.read()


class _Unusable(Exception):
    """A data set that does not give an instance: the reason, in words."""


def _uid(doc: dict[str, Any], tag: str) -> str | None:
    value = (doc.get(tag) or {}).get("Value") or [None]
    return value[0] if isinstance(value[0], str) else None


def instance_of(doc: dict[str, Any], bulk: dict[str, _Bulk]) -> bytes:
    """The PS3.10 file of one data set of the metadata, its bulk data resolved."""
    for tag, name in (
        ("00080016", "SOPClassUID"),
        ("00080018", "SOPInstanceUID"),
        ("0020000D", "StudyInstanceUID"),
    ):
        if not _uid(doc, tag):
            raise _Unusable(f"the data set has no {name}")
    transfer_syntax: str = ExplicitVRLittleEndian

    def resolve(tag: str, vr: str, uri: str) -> bytes:
        nonlocal transfer_syntax
        part = bulk.get(uri) or bulk.get(uri.removeprefix("cid:"))
        if part is None:
            raise _Unusable(f"no bulk data part for {tag}")
        own = part.media_type.params.get("transfer-syntax")
        compressed = part.media_type.essence in _DEFAULTS
        if tag.upper() == PIXEL_DATA and (compressed or (own and own != ExplicitVRLittleEndian)):
            transfer_syntax = own or _DEFAULTS[part.media_type.essence]
            return encapsulate(part.frames(), has_bot=len(part.files) > 1)
        return part.read()

    with quiet_pydicom():
        try:
            ds = Dataset.from_json(doc, bulk_data_uri_handler=resolve)
        except _Unusable:
            raise
        except Exception as e:
            raise _Unusable(f"metadata not understood: {type(e).__name__}") from None
        if PIXEL_DATA in doc and transfer_syntax != ExplicitVRLittleEndian:
            ds["PixelData"].VR = "OB"
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
        out = io.BytesIO()
        try:
            dcmwrite(out, ds, enforce_file_format=True)
        except Exception as e:
            raise _Unusable(f"the data set cannot be encoded: {type(e).__name__}") from None
    return out.getvalue()


def _datasets(part: Part, part_type: str) -> list[dict[str, Any]]:
    data = _read(part.file)
    if part_type == DICOM_XML:
        return [xml_to_dataset(data)]
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise BadRequest(f"a metadata part is not JSON: {e}") from None
    docs = doc if isinstance(doc, list) else [doc]
    if not all(isinstance(d, dict) for d in docs):
        raise BadRequest("a metadata part is not DICOM JSON: an array of data sets (F.2)")
    return docs


@dataclass
class Converted:
    """The request as PS3.10 instances, and the data sets that gave none."""

    body: SpooledTemporaryFile[bytes]
    size: int
    content_type: str
    count: int
    failures: list[dict[str, Any]]


async def convert(request: Request, part_type: str, settings: Settings) -> Converted:
    """Read the metadata and bulk data parts; write the instances they describe as a
    ``multipart/related; type="application/dicom"`` body."""
    metadata: list[Part] = []
    bulk: dict[str, _Bulk] = {}
    kept: list[IO[bytes]] = []
    reader = read_stow_parts(request.stream(), request.headers.get("content-type", ""), settings)
    try:
        async with aclosing(reader):
            async for part in reader:
                kept.append(part.detach())
                essence = part.content_type.essence if part.content_type else part_type
                if essence in METADATA_TYPES:
                    metadata.append(part)
                    continue
                media_type = part.content_type or MediaType("application", "octet-stream")
                for key in _keys(part):
                    bulk.setdefault(key, _Bulk(media_type)).files.append(part.file)
        if not metadata:
            raise MultipartError(f"no {part_type} part: the metadata must come with its bulk data")
        return await asyncio.to_thread(_write, metadata, part_type, bulk, settings)
    finally:
        for f in kept:
            f.close()


def _keys(part: Part) -> list[str]:
    keys = []
    if part.content_location:
        keys.append(part.content_location.strip())
    content_id = part.headers.get("content-id", "").strip().strip("<>")
    if content_id:
        keys.append(content_id)
    return keys


def _write(
    metadata: list[Part], part_type: str, bulk: dict[str, _Bulk], settings: Settings
) -> Converted:
    boundary = new_boundary()
    out: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(
        max_size=settings.spool_threshold, dir=settings.spool_dir or None
    )
    failures, count = [], 0
    for part in metadata:
        for doc in _datasets(part, part_type):
            try:
                instance = instance_of(doc, bulk)
            except _Unusable as e:
                failures.append(
                    failed_item(
                        _uid(doc, "00080016"), _uid(doc, "00080018"), CANNOT_UNDERSTAND, str(e)
                    )
                )
                continue
            out.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            out.write(instance)
            out.write(b"\r\n")
            count += 1
    out.write(f"--{boundary}--\r\n".encode())
    size = out.tell()
    out.seek(0)
    return Converted(
        out, size, multipart_content_type("application/dicom", boundary), count, failures
    )


def as_instances_request(request: Request, converted: Converted) -> Request:
    """The same request carrying the converted body."""
    scope = dict(request.scope)
    dropped = (b"content-type", b"content-length", b"transfer-encoding")
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() not in dropped] + [
        (b"content-type", converted.content_type.encode()),
        (b"content-length", str(converted.size).encode()),
    ]
    body = converted.body

    async def receive() -> dict[str, Any]:
        chunk = await asyncio.to_thread(body.read, 1 << 20)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    return Request(scope, receive)


def with_metadata_form(endpoint: Endpoint, settings: Settings) -> Endpoint:
    """``endpoint`` (a STOW-RS of PS3.10 instances) also taking metadata + bulk data."""

    async def wrapped(request: Request) -> Response:
        part_type = metadata_type(request)
        if part_type is None:
            return await endpoint(request)
        converted = await convert(request, part_type, settings)
        try:
            if not converted.count and not converted.failures:
                raise BadRequest(f"the {part_type} metadata holds no data set")
            if not converted.count:
                body = {"00081198": {"vr": "SQ", "Value": converted.failures}}
                return DicomJSONResponse(body, status_code=409)
            response = await endpoint(as_instances_request(request, converted))
        finally:
            converted.body.close()
        if not converted.failures:
            return response
        return await _with_failures(response, converted.failures)

    wrapped.__name__ = getattr(endpoint, "__name__", "store_instances")
    return wrapped


async def _with_failures(response: Response, failures: list[dict[str, Any]]) -> Response:
    """The shard's STOW-RS answer with the data sets that gave no instance added."""
    if response.status_code not in (200, 202, 409):
        return response
    body = await read_body(response)
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        raise BadGateway("the ingest answered malformed DICOM JSON") from None
    failed = (doc.get("00081198") or {}).get("Value") or []
    doc["00081198"] = {"vr": "SQ", "Value": failed + failures}
    referenced = (doc.get("00081199") or {}).get("Value") or []
    merged = DicomJSONResponse(doc, status_code=response_status(referenced, True, None))
    for warning in response.headers.getlist("warning"):
        merged.headers.append("Warning", warning)
    return merged
