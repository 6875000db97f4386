"""Parse one STOW-RS part (a PS3.10 file) without reading its pixel data.

:func:`parse_instance` reads the File Meta Information and the data set up to the Pixel
Data element with pydicom, locates the Pixel Data value by byte offset (so retrieval can
read frames with ranged reads), reads any elements that follow it, validates what an
archive needs, and encodes the data set as DICOM JSON (:mod:`tessera.shared.dicomjson`).
Every failure is an :class:`~tessera.shared.errors.InvalidInstance` carrying a PS3.18
Table I.2-2 Failure Reason; nothing else escapes, whatever the bytes.

Most files (explicit VR little endian, ASCII text, nothing after the pixel data) are read
first by :mod:`tessera.shared.fastheader`, from their bytes, with the same answer in a
fraction of the time; whatever it declines is read the pydicom way described here.

Decisions
---------
* **PS3.10 header required.** STOW-RS ``application/dicom`` parts are PS3.10 files
  (PS3.18 8.6.1.1.1 / 10.5) and WADO-RS returns the bytes exactly as stored, so a part
  without the 128-byte preamble and ``DICM`` prefix (PS3.10 7.1), e.g. a bare data set as
  written by some old tools, is refused with 0xC000 rather than read with ``force=True``:
  accepting it would mean later serving non-PS3.10 ``application/dicom``, or rewriting it.
* **Transfer syntax.** (0002,0010) missing -> 0xC000 (PS3.10 7.1 makes it Type 1); not a
  transfer syntax pydicom can decode the data set of -> 0xC122. Every standard transfer
  syntax is accepted, including Deflated and the retired Big Endian: objects are stored
  as received.
* **Identifiers** (0xA900 "Data Set does not match SOP Class", PS3.4 B.2.3, since the
  object does not meet its IOD): SOPClassUID, SOPInstanceUID, StudyInstanceUID and
  SeriesInstanceUID must be present, single-valued and valid UIDs per PS3.5 9.1 (digits
  and dots, no empty component, no leading zero, at most 64 characters). The UIDs also
  become resource paths, so this check is also what keeps them safe in URLs and keys.
* **File Meta vs data set.** A MediaStorageSOPInstanceUID / MediaStorageSOPClassUID that
  differs from the data set is accepted with a warning: the data set is what is indexed and
  what every toolkit uses, and such files are common after de-identification (corpus:
  ``Issue143.dcm``). A Media Storage Directory (DICOMDIR) is refused with 0x0122.
* **Truncation** (a value, pixel data or sequence running past the end of the file) ->
  0xC000. Sequences nested beyond what the reader can recurse into -> 0xC000. Resource
  guards (a single value over ``max_value_size`` that must be read, a Deflated data set
  inflating beyond ``max_inflated_size``) -> 0xA700.
* **Pixel data not read.** The data set is read with ``stop_before_pixels`` and
  ``defer_size``: values above the bulk data threshold are skipped with a seek, not read,
  and Pixel Data is walked (item headers only, for encapsulated data) to find its end;
  the item positions become the frame index (:mod:`tessera.shared.frameindex`), each
  frame's byte range, which the index stores with the instance.
  Elements after the Pixel Data (rare: Digital Signatures, Data Set Trailing Padding,
  misplaced private tags) are read too, so metadata is that of the whole data set; bytes
  after the pixel data that do not parse as ascending elements are ignored with a warning.
* **Metadata** is the data set only: File Meta Information (group 0002) is not part of
  the data set (PS3.10 7.1) and PS3.18 F.2 encodes a data set, as does pydicom's
  ``FileDataset.to_json_dict``. Group 0002 elements misplaced in the data set body are
  left out too, with a warning.
* **Values are not validated** beyond the above (pydicom reading validation ``IGNORE``):
  the archive stores objects as received; what cannot be represented in JSON is reported
  (``discarded_tags``) so the caller can answer Warning 0xB006.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import IO, Any

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import dcmread, read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from tessera.shared.boundedio import BoundedReader, TooLarge, inflate
from tessera.shared.dicomjson import (
    DEFAULT_LARGE_VALUE_THRESHOLD,
    MAX_SEQUENCE_DEPTH,
    CapturedWarnings,
    dataset_to_json,
    quiet_pydicom,
)
from tessera.shared.errors import InvalidInstance
from tessera.shared.fastheader import HEAD, Decline, Header, read_header
from tessera.shared.frameindex import FrameIndex, Geometry, build_frame_index
from tessera.shared.pixeldata import (
    PIXEL_TAGS,
    LocatedPixelData,
    PixelDataError,
    PixelDataInfo,
    locate_pixel_data,
)
from tessera.shared.rawelements import (
    UNDEFINED,
    data_set_end,
    raw_elements,
    raw_value,
    read_trailing,
    small_int,
)
from tessera.shared.status import FailureReason
from tessera.shared.uids import is_valid_uid

log = logging.getLogger(__name__)

__all__ = ["ParsedInstance", "PixelDataInfo", "is_valid_uid", "parse_instance"]

MIB = 1024 * 1024
GIB = 1024 * MIB

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_REQUIRED_UIDS = (
    ("SOPClassUID", "(0008,0016)"),
    ("SOPInstanceUID", "(0008,0018)"),
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
)
# pydicom (read_dataset) turns an EOFError inside a sequence into this warning
_EOF_WARNING = "End of file reached"


@dataclass(frozen=True)
class ParsedInstance:
    """What the archive needs to know about one stored PS3.10 file.

    ``metadata`` is the DICOM JSON of the data set (no group 0002), with root-relative
    BulkDataURIs; ``discarded_tags`` the tag paths left out of it (Warning 0xB006),
    ``fallback_tags`` those pydicom could not decode, encoded as stored (UN bytes, IS/DS text);
    ``warnings`` human-readable notes (pydicom warnings, File Meta inconsistencies...).
    """

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    metadata: dict[str, Any]
    discarded_tags: tuple[str, ...]
    number_of_frames: int | None
    rows: int | None
    columns: int | None
    pixel_data: PixelDataInfo | None
    fallback_tags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    frame_index: FrameIndex | None = None

    def pixel_data_json(self) -> dict[str, Any] | None:
        """What the index stores in ``instance.pixel_data``: where the Pixel Data value is
        and the frame index (:mod:`tessera.shared.frameindex`)."""
        p = self.pixel_data
        if p is None:
            return None
        doc: dict[str, Any] = {
            "offset": p.offset,
            "length": p.length,
            "vr": p.vr,
            "encapsulated": p.encapsulated,
            "tag": p.tag,
            "deflated": p.deflated,
        }
        if self.frame_index is not None:
            doc.update(self.frame_index.to_json())
        return doc


class _Known:
    """UIDs learnt so far, for the InvalidInstance of a later failure."""

    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    def fail(self, reason: FailureReason, message: str) -> InvalidInstance:
        return InvalidInstance(int(reason), message, self.sop_class_uid, self.sop_instance_uid)


# --------------------------------------------------------------------------- entry point


def parse_instance(
    fp: IO[bytes],
    bulk_base: str | None = None,
    *,
    bulk_data_threshold: int = 1024,
    large_value_threshold: int | None = DEFAULT_LARGE_VALUE_THRESHOLD,
    max_value_size: int = 256 * MIB,
    max_inflated_size: int = 4 * GIB,
) -> ParsedInstance:
    """Parse and validate one PS3.10 file from a seekable binary file.

    ``fp`` is read from offset 0 and left at an unspecified position; the pixel data is
    never read. BulkDataURIs are ``{bulk_base}/studies/{study}/series/{series}/instances/
    {sop}/bulk/{tag_path}`` (``bulk_base`` empty by default: root-relative). Raises
    :class:`~tessera.shared.errors.InvalidInstance` and nothing else.
    """
    bulk_base = (bulk_base or "").rstrip("/")
    fast = _parse_fast(
        fp,
        BoundedReader(fp, max_value_size),
        max_value_size=max_value_size,
        bulk_base=bulk_base,
        bulk_data_threshold=bulk_data_threshold,
        large_value_threshold=large_value_threshold,
    )
    if fast is not None:
        return fast
    known = _Known()
    with quiet_pydicom() as captured, ExitStack() as stack:
        try:
            parsed = _parse(
                BoundedReader(fp, max_value_size),
                known,
                stack,
                captured,
                bulk_base=bulk_base,
                bulk_data_threshold=bulk_data_threshold,
                large_value_threshold=large_value_threshold,
                max_value_size=max_value_size,
                max_inflated_size=max_inflated_size,
            )
        except InvalidInstance:
            raise
        except RecursionError:
            raise known.fail(
                FailureReason.CANNOT_UNDERSTAND,
                "sequences are nested too deeply to be parsed",
            ) from None
        except (TooLarge, MemoryError) as exc:
            raise known.fail(
                FailureReason.REFUSED_OUT_OF_RESOURCES, f"refused: {exc or 'out of memory'}"
            ) from None
        except Exception as exc:
            raise known.fail(
                FailureReason.CANNOT_UNDERSTAND,
                f"cannot parse the data set: {type(exc).__name__}: {_clip(str(exc))}",
            ) from None
    notes = dict.fromkeys([*parsed.warnings, *captured.messages])
    return replace(parsed, warnings=tuple(notes))


def _parse(
    fp: BoundedReader,
    known: _Known,
    stack: ExitStack,
    captured: CapturedWarnings,
    *,
    bulk_base: str,
    bulk_data_threshold: int,
    large_value_threshold: int | None,
    max_value_size: int,
    max_inflated_size: int,
) -> ParsedInstance:
    notes: list[str] = []
    size = fp.seek(0, 2)
    fp.seek(0)

    # -- PS3.10 7.1: preamble, prefix, File Meta Information
    head = fp.read(132)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise known.fail(FailureReason.CANNOT_UNDERSTAND, _not_ps310_message(head))
    file_meta = FileMetaDataset(
        read_dataset(
            fp.io, False, True, stop_when=lambda tag, vr, length: tag >> 16 != 2, defer_size=MIB
        )
    )
    ms_class = _uid_value(file_meta, "MediaStorageSOPClassUID")
    ms_instance = _uid_value(file_meta, "MediaStorageSOPInstanceUID")
    known.sop_class_uid = ms_class if is_valid_uid(ms_class) else None
    known.sop_instance_uid = ms_instance if is_valid_uid(ms_instance) else None
    if ms_class == MEDIA_STORAGE_DIRECTORY:
        raise known.fail(
            FailureReason.SOP_CLASS_NOT_SUPPORTED,
            "a DICOMDIR (Media Storage Directory Storage) is not a storable instance",
        )

    ts_value = _uid_value(file_meta, "TransferSyntaxUID")
    if not ts_value:
        raise known.fail(
            FailureReason.CANNOT_UNDERSTAND,
            "File Meta Information has no TransferSyntaxUID (0002,0010) (PS3.10 7.1)",
        )
    ts = UID(ts_value)
    if not _decodable(ts):
        raise known.fail(
            FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED,
            f"{_clip(ts_value)!r} is not a known transfer syntax",
        )

    # -- the data set, up to the pixel data
    defer = max(bulk_data_threshold, 0)
    if ts.is_deflated:
        inflated = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=16 * MIB))
        try:
            inflate(fp, inflated, max_inflated_size)
        except (EOFError, zlib.error) as exc:
            raise known.fail(FailureReason.CANNOT_UNDERSTAND, f"{exc}") from None
        size = inflated.tell()
        inflated.seek(0)
        stream = BoundedReader(inflated, max_value_size)
        body = read_dataset(stream.io, False, True, stop_when=_at_pixels, defer_size=defer)
        ds: FileDataset = FileDataset(stream.io, body, head[:128], file_meta, False, True)
        ds.set_original_encoding(False, True, body._character_set)
    else:
        stream = fp
        fp.seek(0)
        ds = dcmread(fp.io, defer_size=defer, stop_before_pixels=True)
    stopped_at = stream.tell()  # reading a deferred value below moves the stream
    if any(_EOF_WARNING in message for message in captured.messages):
        raise known.fail(FailureReason.CANNOT_UNDERSTAND, "the file is truncated")
    _check_extents(ds, size, known)
    last_end = data_set_end(ds)

    # -- UIDs (PS3.5 9.1)
    uids = {keyword: _required_uid(ds, keyword, tag, known) for keyword, tag in _REQUIRED_UIDS}
    known.sop_class_uid = uids["SOPClassUID"]
    known.sop_instance_uid = uids["SOPInstanceUID"]
    if ms_instance and ms_instance != uids["SOPInstanceUID"]:
        notes.append(
            f"MediaStorageSOPInstanceUID {ms_instance} differs from SOPInstanceUID "
            f"{uids['SOPInstanceUID']}"
        )
    if ms_class and ms_class != uids["SOPClassUID"]:
        notes.append(
            f"MediaStorageSOPClassUID {ms_class} differs from SOPClassUID {uids['SOPClassUID']}"
        )

    # -- pixel data and whatever follows it
    is_implicit, is_little = ds.original_encoding
    stream.seek(stopped_at)
    try:
        pixel = locate_pixel_data(
            stream, size, bool(is_implicit), bool(is_little), bool(ts.is_deflated)
        )
    except PixelDataError as exc:
        raise known.fail(FailureReason.CANNOT_UNDERSTAND, str(exc)) from None
    if pixel is not None:
        read_trailing(ds, stream, pixel.end, size, pixel.info.tag, defer, notes)
    elif last_end is not None and last_end < size:
        # pydicom stops quietly at a last element header shorter than 8 bytes
        notes.append(f"{size - last_end} stray bytes at the end of the file ignored")

    for tag in [t for t in ds.keys() if t >> 16 == 0x0002]:
        del ds[tag]
        notes.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) in the data set body left out")

    # -- DICOM JSON
    prefix = (
        f"{bulk_base}/studies/{uids['StudyInstanceUID']}/series/{uids['SeriesInstanceUID']}"
        f"/instances/{uids['SOPInstanceUID']}/bulk"
    )
    encoded = dataset_to_json(
        ds, prefix, bulk_data_threshold, large_value_threshold=large_value_threshold
    )
    metadata = encoded.json
    info = pixel.info if pixel is not None else None
    if info is not None:
        metadata[f"{info.tag:08X}"] = {"vr": info.vr, "BulkDataURI": f"{prefix}/{info.tag:08X}"}
        metadata = dict(sorted(metadata.items()))
    notes.extend(encoded.warnings)

    return ParsedInstance(
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=str(ts),
        metadata=metadata,
        discarded_tags=tuple(encoded.discarded),
        number_of_frames=_frames(ds, info),
        rows=small_int(ds, "Rows"),
        columns=small_int(ds, "Columns"),
        pixel_data=info,
        fallback_tags=tuple(encoded.fallbacks),
        warnings=tuple(notes),
        frame_index=_frame_index(ds, stream, pixel, str(ts)),
    )


# --------------------------------------------------------------------------- helpers


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _not_ps310_message(head: bytes) -> str:
    message = "not a DICOM PS3.10 file: no 128-byte preamble followed by 'DICM' (PS3.10 7.1)"
    if len(head) >= 8:
        group, _, length = struct.unpack("<HHL", head[:8])
        explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
        if group in (0x0002, 0x0008) and (explicit_vr or length < 0x10000):
            message += "; this looks like a bare data set without File Meta Information"
    return message


def _at_pixels(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in PIXEL_TAGS


def _decodable(ts: UID) -> bool:
    try:
        return bool(ts.is_valid and ts.is_transfer_syntax)
    except Exception:
        return False


def _uid_value(ds: Dataset, keyword: str) -> str | None:
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _required_uid(ds: Dataset, keyword: str, tag: str, known: _Known) -> str:
    try:
        present = keyword in ds
        value = ds.get(keyword) if present else None
    except Exception as exc:
        raise known.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            f"{keyword} {tag} cannot be decoded: {_clip(str(exc))}",
        ) from None
    if not present:
        raise known.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} {tag} is missing"
        )
    if value is None or value == "" or (not isinstance(value, str) and len(value) == 0):
        raise known.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} {tag} is empty"
        )
    if not is_valid_uid(value):
        raise known.fail(
            FailureReason.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
            f"{keyword} {tag} {_clip(str(value))!r} is not a valid UID (PS3.5 9.1)",
        )
    return str(value)


def _check_extents(ds: Dataset, size: int, known: _Known) -> None:
    """Every top-level value read or skipped (deferred) must end within the file."""
    for raw in raw_elements(ds):
        if raw.length != UNDEFINED and raw.value_tell + raw.length > size:
            raise known.fail(
                FailureReason.CANNOT_UNDERSTAND,
                f"the file is truncated: ({raw.tag.group:04X},{raw.tag.element:04X}) "
                f"declares {raw.length} bytes, the file ends before",
            )


def _frames(ds: Dataset, pixel: PixelDataInfo | None) -> int | None:
    frames = small_int(ds, "NumberOfFrames")
    if frames is not None and frames >= 1:
        return frames
    return 1 if pixel is not None else None


def _frame_index(
    ds: Dataset, fp: BoundedReader, pixel: LocatedPixelData | None, ts: str
) -> FrameIndex | None:
    """Each frame's byte range (:mod:`tessera.shared.frameindex`); a layout that cannot be
    indexed is recorded as such (its frames are decoded), never a failure."""
    if pixel is None:
        return None
    photometric = ds.get("PhotometricInterpretation")
    geometry = Geometry(
        rows=small_int(ds, "Rows"),
        columns=small_int(ds, "Columns"),
        samples_per_pixel=small_int(ds, "SamplesPerPixel"),
        bits_allocated=small_int(ds, "BitsAllocated"),
        photometric_interpretation=photometric if isinstance(photometric, str) else None,
    )
    extended_offsets = raw_value(ds, 0x7FE00001, _reader(fp))
    return _index(fp, pixel, ts, _frames(ds, pixel.info) or 1, geometry, extended_offsets)


def _index(
    fp: BoundedReader,
    pixel: LocatedPixelData,
    ts: str,
    frames: int,
    geometry: Geometry,
    extended_offsets: bytes | None,
) -> FrameIndex:
    try:
        return build_frame_index(
            pixel.info,
            pixel.items,
            transfer_syntax=ts,
            number_of_frames=frames,
            geometry=geometry,
            extended_offsets=extended_offsets,
            read=_reader(fp),
        )
    except Exception as exc:  # a table pointing anywhere, a value that will not read...
        return FrameIndex(decode=f"frame index not built: {type(exc).__name__}: {_clip(str(exc))}")


def _reader(fp: BoundedReader) -> Callable[[int, int], bytes]:
    """``read(offset, length)`` over ``fp``."""

    def read(offset: int, length: int) -> bytes:
        fp.seek(offset)
        return fp.read(length)

    return read


# --------------------------------------------------------------------------- fast path


def _parse_fast(
    raw: IO[bytes],
    fp: BoundedReader,
    *,
    max_value_size: int,
    bulk_base: str,
    bulk_data_threshold: int,
    large_value_threshold: int | None,
) -> ParsedInstance | None:
    """The instance read by :mod:`tessera.shared.fastheader`, or None when that reader
    declines it (or anything unexpected happens there): then the pydicom way reads it,
    and says what is wrong with it if anything is. What this answers is exactly what the
    pydicom way answers for the same file (tests/unit/test_fastheader.py)."""
    if max_value_size < HEAD:
        return None  # it reads HEAD bytes at once: below that the bound is pydicom's
    try:
        size = raw.seek(0, 2)
        head = read_header(
            raw, size, max(bulk_data_threshold, 0), large_value_threshold, MAX_SEQUENCE_DEPTH
        )
        return _from_header(head, fp, size, bulk_base)
    except Decline:
        return None
    except Exception:  # ours to fix; the pydicom way still reads the file
        log.exception("the fast header reader failed; reading the file with pydicom")
        return None


def _from_header(head: Header, fp: BoundedReader, size: int, bulk_base: str) -> ParsedInstance:
    md = head.metadata
    uids = {}
    for keyword, tag in _REQUIRED_UIDS:
        value = _json_single(md, tag[1:5] + tag[6:10])
        if not isinstance(value, str) or not is_valid_uid(value):
            raise Decline  # the pydicom way says why
        uids[keyword] = value
    for stated, actual in (
        (head.media_storage_sop_class_uid, uids["SOPClassUID"]),
        (head.media_storage_sop_instance_uid, uids["SOPInstanceUID"]),
    ):
        if stated and stated != actual:
            raise Decline  # a DICOMDIR, or a warning to give
    pixel = None
    if head.pixel_start is not None:
        fp.seek(head.pixel_start)
        try:
            pixel = locate_pixel_data(fp, size, False, True, False)
        except PixelDataError:
            raise Decline from None
        if pixel is None or pixel.end != size:
            raise Decline  # elements after the pixel data: the pydicom way reads them
    prefix = (
        f"{bulk_base}/studies/{uids['StudyInstanceUID']}/series/{uids['SeriesInstanceUID']}"
        f"/instances/{uids['SOPInstanceUID']}/bulk"
    )
    head.resolve(prefix)
    frames = _json_count(md, "00280008")
    rows, columns = _json_count(md, "00280010"), _json_count(md, "00280011")
    frame_index = None
    info = None
    if pixel is not None:
        info = pixel.info
        md[f"{info.tag:08X}"] = {"vr": info.vr, "BulkDataURI": f"{prefix}/{info.tag:08X}"}
        photometric = md.get("00280004")
        geometry = Geometry(
            rows=rows,
            columns=columns,
            samples_per_pixel=_json_count(md, "00280002"),
            bits_allocated=_json_count(md, "00280100"),
            photometric_interpretation=(
                None if photometric is None else _json_single(md, "00280004", "")
            ),
        )
        frame_index = _index(
            fp, pixel, head.transfer_syntax_uid, frames if frames else 1, geometry, None
        )
    return ParsedInstance(
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        sop_class_uid=uids["SOPClassUID"],
        transfer_syntax_uid=head.transfer_syntax_uid,
        metadata=md,
        discarded_tags=(),
        number_of_frames=frames if frames else (1 if info is not None else None),
        rows=rows,
        columns=columns,
        pixel_data=info,
        frame_index=frame_index,
    )


def _json_single(md: dict[str, Any], tag: str, empty: Any = None) -> Any:
    """The one value of a top-level element; ``empty`` if it has none, None if absent or
    multi-valued (as ``Dataset.get`` then gives no single value)."""
    element = md.get(tag)
    if element is None:
        return None
    values = element.get("Value")
    if values is None:
        return empty
    return values[0] if len(values) == 1 else None


def _json_count(md: dict[str, Any], tag: str) -> int | None:
    """:func:`small_int` of the JSON: a single non-negative integer, else None."""
    value = _json_single(md, tag)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
