"""Top-level elements of a data set read by pydicom with deferred values: where they are
in the file, their stored bytes, and the elements that follow the Pixel Data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import read_dataset

from tessera.shared.boundedio import BoundedReader

UNDEFINED = 0xFFFFFFFF  # an undefined length (PS3.5 7.1.1)


def raw_elements(ds: Dataset) -> Iterator[RawDataElement]:
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            yield elem


def read_trailing(
    ds: FileDataset,
    fp: BoundedReader,
    offset: int,
    size: int,
    pixel_tag: int,
    defer: int,
    notes: list[str],
) -> None:
    """Add the elements that follow the pixel data, if they parse as such."""
    if offset >= size:
        return
    is_implicit, is_little = ds.original_encoding
    fp.seek(offset)
    try:
        trailing = read_dataset(
            fp.io,
            bool(is_implicit),
            bool(is_little),
            defer_size=defer,
            parent_encoding=ds.original_character_set,
        )
        elements = list(raw_or_elements(trailing))
        consumed = fp.tell() == size
    except Exception:
        elements, consumed = [], False
    tags = [int(e.tag) for e in elements]
    plausible = (
        consumed
        and bool(elements)
        and tags == sorted(set(tags))
        and tags[0] > pixel_tag
        and all(
            e.value_tell + e.length <= size
            for e in elements
            if isinstance(e, RawDataElement) and e.length != UNDEFINED
        )
    )
    if not plausible:
        notes.append(f"{size - offset} bytes after the Pixel Data are not elements; ignored")
        return
    for elem in elements:
        ds[elem.tag] = elem


def data_set_end(ds: Dataset) -> int | None:
    """Where the element read last ends, if known (not for an undefined length)."""
    last_position, end = -1, None
    for tag in ds.keys():
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            position = elem.value_tell
            elem_end = None if elem.length == UNDEFINED else position + elem.length
        else:
            position, elem_end = getattr(elem, "file_tell", None), None
        if position is not None and position > last_position:
            last_position, end = position, elem_end
    return end


def raw_or_elements(ds: Dataset) -> Iterator[Any]:
    for tag in list(ds.keys()):
        yield ds.get_item(tag, keep_deferred=True)


def small_int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        number = int(value) if value is not None and value != "" else None
    except Exception:
        return None
    if number is None or number < 0 or (isinstance(value, float) and value != number):
        return None
    return number


def raw_value(ds: Dataset, tag: int, read: Callable[[int, int], bytes]) -> bytes | None:
    """The stored bytes of a top-level binary value, read from the file if deferred."""
    if tag not in ds:
        return None
    elem = ds.get_item(tag, keep_deferred=True)
    if isinstance(elem, RawDataElement):
        if elem.value is not None:
            return bytes(elem.value)
        if elem.length in (0, UNDEFINED):
            return None
        return read(elem.value_tell, elem.length)
    value = elem.value
    return bytes(value) if isinstance(value, bytes | bytearray) else None
