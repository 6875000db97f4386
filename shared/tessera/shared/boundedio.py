"""Reading an untrusted file with bounds: no single read, and no inflated data set,
larger than a limit (the resource guards of :mod:`tessera.shared.dicomfile`)."""

from __future__ import annotations

import zlib
from typing import IO, BinaryIO, cast

MIB = 1024 * 1024


class TooLarge(Exception):
    pass


class BoundedReader:
    """Seekable read-only view of ``fp`` refusing any single read larger than ``limit``.

    pydicom reads each value it does not defer with one ``read(length)``; this turns a
    huge (or bogus) length into an error instead of an allocation of that size.
    """

    def __init__(self, fp: IO[bytes], limit: int) -> None:
        self._fp = fp
        self._limit = limit

    @property
    def io(self) -> BinaryIO:
        """This reader, typed as the file object pydicom's readers take."""
        return cast(BinaryIO, self)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            here = self._fp.tell()
            size = self._fp.seek(0, 2) - here
            self._fp.seek(here)
        if size > self._limit:
            raise TooLarge(f"a value of more than {self._limit} bytes would have to be read")
        return self._fp.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


def inflate(source: BoundedReader, target: IO[bytes], limit: int) -> None:
    """PS3.5 A.5: the data set after the File Meta Information is raw deflate."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    chunk_size = MIB
    while True:
        chunk = source.read(chunk_size)
        data = inflater.decompress(chunk, chunk_size) if chunk else inflater.flush()
        while True:
            total += len(data)
            if total > limit:
                raise TooLarge(f"the Deflated data set inflates to more than {limit} bytes")
            target.write(data)
            if not inflater.unconsumed_tail:
                break
            data = inflater.decompress(inflater.unconsumed_tail, chunk_size)
        if inflater.eof:
            return
        if not chunk:
            raise EOFError("the Deflated data set is truncated")
