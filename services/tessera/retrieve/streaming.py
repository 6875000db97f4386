"""Streaming multipart/related responses from object storage with bounded memory.

A WADO-RS study can be gigabytes (PS3.18 10.4.1.1), so its parts are never buffered:
each part's object is streamed chunk by chunk. To hide per-object latency (an S3 GET
takes tens of milliseconds before its first byte) the :class:`PartPipeline` opens the
next ``window`` parts (and asks for their conversions) while the current one is sent;
each opened part holds one chunk, so a response holds about ``window + 1`` chunks.

Whatever way the response ends (done, failed, client gone) the
:class:`ClosingStreamingResponse` closes the open storage streams and cancels the
look-ahead at once, rather than leaving them to the garbage collector.

Failing before the status. Once the status is sent, a part that cannot be opened can
only abort the connection (the client sees a truncated multipart body). So the first
part is opened before the status (:meth:`PartPipeline.start`), and
:func:`missing_objects` lets a caller check that every object exists — one HEAD (S3) or
stat (local) each, :data:`PREFLIGHT_CONCURRENCY` at a time, overlapping the first part's
opening — and refuse up front. It is bounded (:data:`PREFLIGHT_MAX_OBJECTS`): at ~10-30 ms
per S3 HEAD, 128 objects are 4 rounds, about one GET's latency, hidden behind the first
GET; checking a 3000-instance study would add ~1-2 s before the first byte, so beyond the
bound only the look-ahead window is opened early. A part that fails after the status
(an object gone past the bound, a conversion failing) is logged as an error naming the
part, and the connection is aborted.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Generic, TypeVar

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tessera.shared.errors import TesseraError
from tessera.shared.multipart import PartOut, write_parts
from tessera.shared.storage import ObjectStore

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 2
PREFLIGHT_CONCURRENCY = 32
PREFLIGHT_MAX_OBJECTS = 128


async def missing_objects(
    store: ObjectStore, keys: Sequence[str], concurrency: int = PREFLIGHT_CONCURRENCY
) -> list[str]:
    """The keys of ``keys`` that are not in ``store`` (in order), checked in parallel;
    an empty list when there are more than :data:`PREFLIGHT_MAX_OBJECTS` (not checked)."""
    if len(keys) > PREFLIGHT_MAX_OBJECTS:
        return []
    gate = asyncio.Semaphore(concurrency)

    async def exists(key: str) -> bool:
        async with gate:
            return await store.exists(key)

    found = await asyncio.gather(*(exists(k) for k in keys))
    return [k for k, ok in zip(keys, found, strict=True) if not ok]


async def _aclose(it: object) -> None:
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body and calls ``close`` however it ends."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        *,
        close: Callable[[], Awaitable[None]],
        media_type: str,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(
            content,
            status_code=status_code,
            media_type=media_type,
            headers=headers,
            background=background,
        )
        self._close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await _aclose(self.body_iterator)
            await self._close()


class OpenedPart:
    """One part's body: a storage stream whose first chunk has been read already."""

    def __init__(self, stream: AsyncIterator[bytes], first: bytes, **part: Any) -> None:
        self._stream = stream
        self._first: bytes | None = first
        self.part = PartOut(body=self, **part)

    def __aiter__(self) -> OpenedPart:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
        return await anext(self._stream)

    def unread(self, data: bytes) -> None:
        """Yield ``data`` first again (what was read since the last unread)."""
        self._first = data

    async def aclose(self) -> None:
        await _aclose(self._stream)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


def opened_bytes(data: bytes, **part: Any) -> OpenedPart:
    """A part whose body is ``data``, already in memory (a rendering the worker answered)."""
    return OpenedPart(_nothing(), data, **part)


# a single-object answer up to this size is sent whole, with a Content-Length: the
# router then reads it whole too, and a retrieve that dies mid-answer becomes a 503 there,
# not a connection the client sees cut (a rendering, a thumbnail)
WHOLE_ANSWER_LIMIT = 1024 * 1024


async def whole_if_small(opened: OpenedPart, limit: int = WHOLE_ANSWER_LIMIT) -> bytes | None:
    """The whole body of ``opened`` if it is at most ``limit`` bytes (and ``opened`` is
    closed); else None, and ``opened`` still yields every byte from its start."""
    chunks, ended = await _read_up_to(opened, limit)
    if not ended:
        opened.unread(b"".join(chunks))
        return None
    await opened.aclose()
    return b"".join(chunks)


async def _read_up_to(body: AsyncIterator[bytes], limit: int) -> tuple[list[bytes], bool]:
    """The chunks of ``body`` until it ends (True) or they pass ``limit`` bytes (False)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return chunks, False
    return chunks, True


Filter = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]


async def open_part(
    store: ObjectStore,
    key: str,
    *,
    start: int = 0,
    length: int | None = None,
    through: Filter | None = None,
    **part: Any,
) -> OpenedPart:
    """Open ``key`` (or a byte range of it, passed ``through`` a filter) and read its
    first chunk.

    ``part`` are the :class:`PartOut` fields (``content_type``, ``content_location``,
    ``headers``). Raises what the store raises for a missing object.
    """
    stream = store.stream(key, start, length)
    if through is not None:
        stream = through(stream)
    try:
        first = await anext(stream, b"")
    except BaseException:
        await _aclose(stream)
        raise
    return OpenedPart(stream, first, **part)


class PartPipeline(Generic[T]):
    """The parts of a response, opened up to ``window`` ahead of the one being sent."""

    def __init__(
        self,
        items: Sequence[T],
        open_one: Callable[[T], Coroutine[Any, Any, OpenedPart]],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._items: Iterator[T] = iter(items)
        self._open = open_one
        self._window = max(window, 1)
        self._pending: deque[asyncio.Task[OpenedPart]] = deque()
        self._current: OpenedPart | None = None
        self._gen: AsyncIterator[PartOut] | None = None

    def _fill(self) -> None:
        while len(self._pending) < self._window:
            item = next(self._items, None)
            if item is None:
                return
            self._pending.append(asyncio.create_task(self._open(item)))

    async def start(self, whole_window: bool = False) -> None:
        """Open the first part now, so that its failure is the response's status; with
        ``whole_window``, every part of the first window (opened together), so that a
        response whose parts all fit in it never fails after its status."""
        self._fill()
        if self._pending:
            try:
                if whole_window:
                    await asyncio.gather(*self._pending)
                else:
                    await self._pending[0]
            except BaseException:
                await self.aclose()
                raise

    def parts(self) -> AsyncIterator[PartOut]:
        if self._gen is None:
            self._gen = self._parts()
        return self._gen

    async def _parts(self) -> AsyncIterator[PartOut]:
        self._fill()
        sent = 0
        while self._pending:
            try:
                opened = await self._pending[0]
            except Exception as e:
                log.error(
                    "response aborted after %d parts, its status already sent: part %d failed: %s",
                    sent,
                    sent + 1,
                    getattr(e, "reason", None) or repr(e),
                )
                raise
            sent += 1
            self._pending.popleft()
            self._current = opened
            self._fill()
            yield opened.part
            self._current = None
            await opened.aclose()

    async def aclose(self) -> None:
        """Close the part being sent and everything opened ahead of it."""
        if self._gen is not None:
            await _aclose(self._gen)
        if self._current is not None:
            await self._current.aclose()
            self._current = None
        pending, self._pending = list(self._pending), deque()
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in pending:
            if not task.cancelled() and task.exception() is None:
                await task.result().aclose()

    def response(
        self,
        media_type: str,
        boundary: str,
        *,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> ClosingStreamingResponse:
        """The multipart/related response streaming these parts (PS3.18 8.7.5)."""
        return ClosingStreamingResponse(
            write_parts(self.parts(), boundary),
            close=self.aclose,
            media_type=media_type,
            status_code=status_code,
            headers=headers,
        )

    async def small_response(
        self, media_type: str, boundary: str, *, limit: int = WHOLE_ANSWER_LIMIT
    ) -> Response:
        """:meth:`response`, but a body of at most ``limit`` bytes is read first and sent
        whole with its Content-Length (a frame, a few frames): one write instead of a
        stream, the router reads it whole too, and a part that fails is still the status."""
        body = write_parts(self.parts(), boundary)
        try:
            chunks, ended = await _read_up_to(body, limit)
        except BaseException:
            await self.aclose()
            raise
        if not ended:
            return ClosingStreamingResponse(
                _after(chunks, body), close=self.aclose, media_type=media_type
            )
        await self.aclose()
        return Response(b"".join(chunks), media_type=media_type)


async def _after(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in first:
        yield chunk
    async for chunk in rest:
        yield chunk


async def until_sequence_delimiter(
    chunks: AsyncIterator[bytes], *, values_only: bool = False
) -> AsyncIterator[bytes]:
    """The items of an undefined-length value (PS3.5 7.5.2, A.4), streamed from its first
    item tag up to, not including, the Sequence Delimitation Item (FFFE,E0DD).

    Only item headers are parsed; fragment bytes pass through. Encapsulated syntaxes are
    all little endian. With ``values_only`` the item headers are dropped too and the
    stream may end after any whole item (a frame's fragments, read as one range).
    """
    header = bytearray()
    remaining = 0  # bytes of the current item's value still to pass
    try:
        async for chunk in chunks:
            pos, size = 0, len(chunk)
            while pos < size:
                if remaining:
                    take = min(remaining, size - pos)
                    yield chunk if take == size else chunk[pos : pos + take]
                    pos, remaining = pos + take, remaining - take
                    continue
                need = 8 - len(header)
                header += chunk[pos : pos + need]
                pos += min(need, size - pos)
                if len(header) < 8:
                    break
                group, element, length = struct.unpack("<HHL", header)
                if (group, element) == (0xFFFE, 0xE0DD):
                    return
                if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                    raise TesseraError(
                        f"malformed encapsulated value: ({group:04X},{element:04X}) where an"
                        " item was expected"
                    )
                if not values_only:
                    yield bytes(header)
                header.clear()
                remaining = length
        if values_only and not header and not remaining:
            return
        raise TesseraError("encapsulated value without a Sequence Delimitation Item")
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
