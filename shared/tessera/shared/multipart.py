"""Streaming ``multipart/related`` reader and writer (RFC 2046 §5.1, RFC 2387; PS3.18 8.7.5).

STOW-RS request bodies (PS3.18 10.5) go through :func:`read_parts`, WADO-RS responses
(PS3.18 8.7.5) through :func:`write_parts`.

Reading. The body is scanned for the delimiter ``CRLF "--" boundary`` (RFC 2046 §5.1.1) with
``bytearray.find``; body bytes go to the part's file in slices of 64 KiB or more (unless a
delimiter cuts one short), so at most one chunk plus 64 KiB is buffered, and only a
delimiter-sized tail is carried over once a slice is written. Each part is spooled to a
:class:`~tempfile.SpooledTemporaryFile` that stays in memory up to ``spool_threshold`` bytes
and moves to disk above it. The reader accepts a preamble and ignores the epilogue, a first
boundary at the very start of the body, transport padding after a boundary, and LF-only
line ends in part headers (and after the boundary). The delimiter itself is strict: it must
be preceded by CRLF (the CRLF belongs to the delimiter, not to the part), and a line that
starts with ``--boundary`` but continues with anything other than padding or ``--`` is
content, as in Go's ``mime/multipart``.

Ownership of part files: the reader owns them. A yielded part's file is closed when the
consumer asks for the next part, when the generator finishes, or when it is closed (use
:func:`contextlib.aclosing` to close it promptly after an early ``break``). A consumer that
needs the file longer calls :meth:`Part.detach` and must then close it itself.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile

from tessera.shared.errors import (
    BadRequest,
    MultipartError,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from tessera.shared.mediatypes import MediaType, parse_media_type

__all__ = [
    "Part",
    "PartOut",
    "multipart_content_type",
    "new_boundary",
    "read_parts",
    "write_parts",
]

MAX_HEADER_SIZE = 64 * 1024  # one part's header block
_MAX_PADDING = 1024  # transport padding after a boundary
_FLUSH_SIZE = 64 * 1024  # pending body bytes written to the part file at once
# after "CRLF--boundary": padding then the line end, or (need more data) the end of the buffer
_AFTER_DELIMITER = re.compile(rb"[ \t]*(?:(\r?\n)|\r?\Z)")
# RFC 2046 §5.1.1 boundary, for the ones we make; we take any printable ASCII from clients
_BCHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_LENIENT_BOUNDARY = re.compile(r"[\x20-\x7e]{1,200}")


@dataclass(eq=False)
class Part:
    """One body part of a multipart/related request, its body in :attr:`file` at offset 0."""

    headers: dict[str, str]
    content_type: MediaType | None
    content_location: str | None
    file: SpooledTemporaryFile[bytes]
    size: int = 0
    _detached: bool = field(default=False, init=False, repr=False)

    def detach(self) -> SpooledTemporaryFile[bytes]:
        """Take ownership of :attr:`file`: the reader will not close it, the caller must."""
        self._detached = True
        return self.file

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Part:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _release(self) -> None:
        if not self._detached:
            self.file.close()


async def read_parts(
    chunks: AsyncIterable[bytes],
    content_type: str,
    *,
    spool_threshold: int,
    max_part_size: int,
    max_total_size: int,
    spool_dir: str | None = None,
) -> AsyncGenerator[Part, None]:
    """Yield the parts of a ``multipart/related`` body one by one as each one is complete.

    ``content_type`` is the request's Content-Type: anything but multipart/related raises
    :class:`UnsupportedMediaType`, a missing or invalid boundary :class:`MultipartError`.
    A part without a Content-Type gets the ``type`` parameter of ``content_type`` (RFC 2387
    §3.1), or None. ``spool_threshold <= 0`` spools every part to disk. Raises
    :class:`MultipartError` for a malformed or truncated body or one without parts, and
    :class:`PayloadTooLarge` when a part exceeds ``max_part_size`` or the body (preamble and
    epilogue included) exceeds ``max_total_size``. See the module docstring for who closes
    the part files.
    """
    boundary, default_type = _parse_content_type(content_type)
    stream = _Stream(chunks, boundary, max_total_size)
    current: Part | None = None
    try:
        closed = await stream.next_delimiter(None)  # skip the preamble
        if closed:
            raise MultipartError("multipart body has no parts")
        while not closed:
            headers = await stream.read_headers()
            part_type = default_type
            if "content-type" in headers:
                part_type = _parse_part_type(headers["content-type"])
            spooled: SpooledTemporaryFile[bytes] = SpooledTemporaryFile(
                max_size=max(spool_threshold, 0), dir=spool_dir or None
            )
            current = Part(headers, part_type, headers.get("content-location"), spooled)
            if spool_threshold <= 0:
                spooled.rollover()  # max_size=0 would mean "never roll over"
            closed = await stream.next_delimiter(_body_sink(current, max_part_size))
            spooled.seek(0)
            yield current
            current._release()
            current = None
        await stream.drain()
    finally:
        if current is not None:
            current._release()


def _body_sink(part: Part, max_part_size: int) -> Callable[[memoryview], None]:
    def write(data: memoryview) -> None:
        part.size += len(data)
        if part.size > max_part_size:
            raise PayloadTooLarge(
                f"a multipart body part is larger than the {max_part_size}-byte limit"
                " (max_part_size)"
            )
        part.file.write(data)

    return write


class _Stream:
    """The unread bytes of a multipart body: a buffer refilled chunk by chunk."""

    def __init__(self, chunks: AsyncIterable[bytes], boundary: bytes, max_total: int) -> None:
        self._chunks = aiter(chunks)
        self._boundary = boundary
        self._delimiter = b"\r\n--" + boundary
        self._max_total = max_total
        self._total = 0
        # the leading CRLF lets a first boundary at the very start of the body match
        self._buf = bytearray(b"\r\n")

    async def _more(self) -> None:
        """Append the next non-empty chunk; raise MultipartError at the end of the body."""
        async for chunk in self._chunks:
            self._count(chunk)
            if chunk:
                self._buf += chunk
                return
        reason = "multipart body ended before the closing boundary"
        tail = bytes(self._buf[-len(self._delimiter) - 8 :]).rstrip()
        if tail.endswith(b"--" + self._boundary + b"--"):
            reason += " (the CRLF before the closing boundary is missing)"
        raise MultipartError(reason)

    def _emit(self, sink: Callable[[memoryview], None] | None, n: int) -> None:
        """Pass the first ``n`` buffered bytes to ``sink`` (or drop them) and discard them."""
        if n <= 0:
            return
        if sink is not None:
            with memoryview(self._buf) as view, view[:n] as head:
                sink(head)
        del self._buf[:n]

    async def next_delimiter(self, sink: Callable[[memoryview], None] | None) -> bool:
        """Consume content up to and including the next delimiter line.

        Content goes to ``sink`` (``None`` drops it: preamble). Returns True for the close
        delimiter, after which the rest of the buffer is epilogue, False for a boundary,
        after which the buffer starts with the part's headers.
        """
        buf, delimiter = self._buf, self._delimiter
        pos = 0  # no delimiter starts before pos
        while True:
            i = buf.find(delimiter, pos)
            if i < 0:
                pos = max(pos, len(buf) - len(delimiter) + 1)
                if pos >= _FLUSH_SIZE:
                    self._emit(sink, pos)
                    pos = 0
                await self._more()
                continue
            end = i + len(delimiter)
            if len(buf) - end < 2:  # need more bytes to decide
                self._emit(sink, i)
                pos = 0
                await self._more()
                continue
            if buf[end : end + 2] == b"--":
                self._emit(sink, i)
                buf.clear()
                return True
            m = _AFTER_DELIMITER.match(buf, end)
            if m is None:  # "--boundary" followed by something else: content
                pos = i + 1
            elif m[1] is not None:
                self._emit(sink, i)
                del buf[: m.end() - i]
                return False
            elif m.end() - end > _MAX_PADDING:
                raise MultipartError("transport padding after a multipart boundary is too long")
            else:  # need more bytes to decide
                self._emit(sink, i)
                pos = 0
                await self._more()

    async def read_headers(self) -> dict[str, str]:
        """Consume and parse a part's header block and the empty line that ends it."""
        buf = self._buf
        pos = 0  # start of the current line
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) > MAX_HEADER_SIZE:
                    break
                await self._more()
                continue
            if nl == pos or (nl == pos + 1 and buf[pos] == 0x0D):
                block = bytes(buf[:pos])
                del buf[: nl + 1]
                return _parse_headers(block)
            pos = nl + 1
            if pos > MAX_HEADER_SIZE:
                break
        raise MultipartError(f"multipart part headers are larger than {MAX_HEADER_SIZE} bytes")

    async def drain(self) -> None:
        """Read and drop the epilogue."""
        self._buf.clear()
        async for chunk in self._chunks:
            self._count(chunk)

    def _count(self, chunk: bytes) -> None:
        self._total += len(chunk)
        if self._total > self._max_total:
            raise PayloadTooLarge(
                f"multipart body is larger than the {self._max_total}-byte limit (max_total_size)"
            )


def _parse_content_type(content_type: str) -> tuple[bytes, MediaType | None]:
    try:
        mt = parse_media_type(content_type)
    except BadRequest as e:
        raise UnsupportedMediaType(f"malformed Content-Type: {e.reason}") from None
    if mt.essence != "multipart/related":
        raise UnsupportedMediaType(f"expected a multipart/related body, not {mt.essence}")
    boundary = mt.params.get("boundary")
    if boundary is None:
        raise MultipartError("multipart/related Content-Type has no boundary parameter")
    if not _LENIENT_BOUNDARY.fullmatch(boundary):
        raise MultipartError(f"invalid multipart boundary {boundary!r} (RFC 2046 §5.1.1)")
    default_type = None
    if "type" in mt.params:
        try:
            default_type = parse_media_type(mt.params["type"])
        except BadRequest:
            raise UnsupportedMediaType(
                f"malformed type parameter {mt.params['type']!r} of multipart/related"
            ) from None
    return boundary.encode("ascii"), default_type


def _parse_part_type(value: str) -> MediaType:
    try:
        return parse_media_type(value)
    except BadRequest as e:
        raise MultipartError(f"malformed Content-Type of a part: {e.reason}") from None


def _parse_headers(block: bytes) -> dict[str, str]:
    """RFC 5322 style header fields; folded lines are unfolded, repeated fields joined."""
    headers: dict[str, str] = {}
    name = ""
    for raw in block.decode("latin-1").split("\n")[:-1]:  # block ends with a line end
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t") and name:
            headers[name] = f"{headers[name]} {line.strip()}".strip()
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t").lower()
        if not colon or not name or any(c in name for c in " \t"):
            raise MultipartError(f"malformed multipart part header line {line[:80]!r}")
        value = value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


# --- writing -------------------------------------------------------------------------------


@dataclass
class PartOut:
    """One part for :func:`write_parts`; ``body`` is bytes or an async iterable of chunks."""

    content_type: str
    body: AsyncIterable[bytes] | bytes
    content_location: str | None = None
    headers: Mapping[str, str] | None = None


def new_boundary() -> str:
    """A fresh random boundary (32 hex digits: a token, so it needs no quoting)."""
    return secrets.token_hex(16)


def multipart_content_type(part_type: str, boundary: str, **params: str) -> str:
    """``multipart/related; type="<part_type>"; ...; boundary=<boundary>`` (RFC 2387 §3).

    Keyword names have ``_`` replaced by ``-``: ``transfer_syntax=...`` gives
    ``transfer-syntax=...``.
    """
    if not _BCHARS.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    fields = {"type": part_type} | {k.replace("_", "-"): v for k, v in params.items()}
    return str(MediaType("multipart", "related", fields | {"boundary": boundary}))


async def write_parts(
    parts: AsyncIterable[PartOut] | Iterable[PartOut], boundary: str
) -> AsyncGenerator[bytes, None]:
    """Yield a multipart/related body: each part as ``--boundary CRLF headers CRLF CRLF body``,
    parts separated by CRLF, then ``CRLF --boundary-- CRLF``. CRLF throughout (PS3.18 8.7.5).

    Zero parts give just the close delimiter, which RFC 2046 does not allow: callers should
    answer 404 (or similar) before starting an empty response.
    """
    if not _BCHARS.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    if isinstance(parts, AsyncIterable):
        items: AsyncIterator[PartOut] = aiter(parts)
    else:
        items = _aiter_sync(parts)
    separator = b"--" + boundary.encode("ascii")
    async for part in items:
        fields = {"Content-Type": part.content_type}
        if part.content_location is not None:
            fields["Content-Location"] = part.content_location
        fields.update(part.headers or {})
        head = bytearray(separator + b"\r\n")
        for name, value in fields.items():
            if any(c in f"{name}{value}" for c in "\r\n\0") or not name:
                raise ValueError(f"invalid header for a multipart part: {name!r}: {value!r}")
            head += f"{name}: {value}\r\n".encode("latin-1")
        head += b"\r\n"
        if isinstance(part.body, bytes | bytearray | memoryview):
            if len(part.body) <= _FLUSH_SIZE:
                yield bytes(head + part.body)
            else:
                yield bytes(head)
                yield bytes(part.body)
        else:
            yield bytes(head)
            async for chunk in part.body:
                if chunk:
                    yield chunk
        separator = b"\r\n--" + boundary.encode("ascii")
    yield separator + b"--\r\n"


async def _aiter_sync(items: Iterable[PartOut]) -> AsyncGenerator[PartOut, None]:
    for item in items:
        yield item
