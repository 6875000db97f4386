"""multipart/related reading and writing (RFC 2046 §5.1.1, RFC 2387, PS3.18 8.7.5, 10.5)."""

from __future__ import annotations

import os
import re
import tracemalloc
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tessera.shared import multipart
from tessera.shared.errors import MultipartError, PayloadTooLarge, UnsupportedMediaType
from tessera.shared.multipart import (
    Part,
    PartOut,
    multipart_content_type,
    new_boundary,
    read_parts,
    write_parts,
)

KIB = 1024
MIB = 1024 * KIB
B = "tessera-boundary"
CT = f'multipart/related; type="application/dicom"; boundary={B}'
LIMITS: dict[str, Any] = {
    "spool_threshold": 64 * KIB,
    "max_part_size": 64 * MIB,
    "max_total_size": 256 * MIB,
}


async def chunked(data: bytes, size: int | Iterable[int] = 64 * KIB) -> AsyncIterator[bytes]:
    sizes = iter([size]) if isinstance(size, int) else iter(size)
    step = size if isinstance(size, int) else 1
    pos = 0
    while pos < len(data):
        step = next(sizes, step)
        yield data[pos : pos + step]
        pos += step


async def read_all(
    data: bytes, content_type: str = CT, chunk: int | Iterable[int] = 64 * KIB, **limits: Any
) -> list[tuple[dict[str, str], bytes]]:
    out = []
    async with aclosing(read_parts(chunked(data, chunk), content_type, **(LIMITS | limits))) as it:
        async for part in it:
            body = part.file.read()
            assert len(body) == part.size
            out.append((part.headers, body))
    return out


async def bodies(data: bytes, chunk: int | Iterable[int] = 64 * KIB, **limits: Any) -> list[bytes]:
    return [body for _, body in await read_all(data, chunk=chunk, **limits)]


async def join(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


def body_of(*parts: bytes, boundary: str = B) -> bytes:
    """A well-formed body with a Content-Type header per part."""
    b = boundary.encode()
    out = b"".join(
        b"--" + b + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts
    )
    return out + b"--" + b + b"--\r\n"


# --- round trips -----------------------------------------------------------------------------


async def test_round_trip_writer_to_reader() -> None:
    async def stream_body() -> AsyncIterator[bytes]:
        yield b"first "
        yield b""
        yield b"second"

    boundary = new_boundary()
    parts = [
        PartOut("application/dicom", b"\x00DICM" * 100, content_location="/studies/1"),
        PartOut("application/octet-stream", stream_body(), headers={"X-Extra": "yes"}),
        PartOut("application/dicom", b""),
        PartOut("application/dicom", b"x" * (200 * KIB)),
    ]
    data = await join(write_parts(parts, boundary))
    ct = multipart_content_type("application/dicom", boundary)
    got = []
    async for part in read_parts(chunked(data, 4099), ct, **LIMITS):
        got.append((str(part.content_type), part.content_location, part.headers, part.file.read()))
    assert got == [
        (
            "application/dicom",
            "/studies/1",
            {"content-type": "application/dicom", "content-location": "/studies/1"},
            b"\x00DICM" * 100,
        ),
        (
            "application/octet-stream",
            None,
            {"content-type": "application/octet-stream", "x-extra": "yes"},
            b"first second",
        ),
        ("application/dicom", None, {"content-type": "application/dicom"}, b""),
        ("application/dicom", None, {"content-type": "application/dicom"}, b"x" * (200 * KIB)),
    ]


TRICKY = [
    b"--" + B.encode(),
    b"--" + B.encode() + b"--",
    b"\r\n--" + B.encode() + b"x",
    b"\r\n--" + B.encode()[:-1],
    b"\r\n-",
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b" \t",
]
part_bodies = st.lists(
    st.lists(st.binary(max_size=40) | st.sampled_from(TRICKY), max_size=8).map(b"".join),
    min_size=1,
    max_size=5,
)


# a delimiter line inside a body (what follows a body is always CRLF "--" boundary)
_DELIMITER_LINE = re.compile(rb"\r\n--" + re.escape(B.encode()) + rb"(?:--|[ \t]*\r?\n)")


def has_delimiter_line(body: bytes) -> bool:
    """True for a body that is not allowed to go into a part (RFC 2046 §5.1.1)."""
    m = _DELIMITER_LINE.search(body + b"\r\n--" + B.encode() + b"--")
    return m is not None and m.start() < len(body)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(parts=part_bodies, sizes=st.lists(st.integers(1, 50), min_size=1, max_size=30))
async def test_property_any_bodies_any_chunking(parts: list[bytes], sizes: list[int]) -> None:
    assume(not any(has_delimiter_line(p) for p in parts))
    data = await join(write_parts([PartOut("application/dicom", p) for p in parts], B))
    assert await bodies(data, chunk=sizes) == parts


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 17, 20, 21, 22, 4096, 64 * KIB, MIB])
async def test_chunk_boundaries(chunk: int) -> None:
    parts = [b"", b"a\r\nb", b"--" + B.encode(), b"\r\n--" + B.encode() + b"x", b"z\r"]
    assert await bodies(body_of(*parts), chunk=chunk) == parts


@pytest.mark.parametrize("chunk", [MIB, 65537, 8191])
async def test_one_large_part(chunk: int) -> None:
    payload = os.urandom(5 * MIB + 3)
    assert await bodies(body_of(payload), chunk=chunk) == [payload]


async def test_large_parts_in_one_chunk() -> None:
    parts = [os.urandom(3 * MIB), os.urandom(2 * MIB + 1)]
    assert await bodies(body_of(*parts), chunk=16 * MIB) == parts


# --- tolerated variations ----------------------------------------------------------------------


async def test_preamble_and_epilogue_are_ignored() -> None:
    data = b"This is a preamble.\r\n--x--\r\n" + body_of(b"one", b"two") + b"epilogue\r\n--x"
    assert await bodies(data) == [b"one", b"two"]


async def test_preamble_lines_starting_like_the_boundary() -> None:
    data = b"--" + B.encode() + b"x\r\n\r\n" + body_of(b"one")
    assert await bodies(data, chunk=1) == [b"one"]


async def test_transport_padding_and_lf_only_headers() -> None:
    b = B.encode()
    data = (
        b"--" + b + b"  \t\r\n"
        b"content-type: application/dicom\n"
        b"CONTENT-LOCATION:   /a  \n"
        b"\n"
        b"one\r\n--" + b + b"\t\n"
        b"\r\n"
        b"two\r\n--" + b + b"--  \r\n"
    )
    got = await read_all(data, chunk=3)
    assert got == [
        ({"content-type": "application/dicom", "content-location": "/a"}, b"one"),
        ({}, b"two"),
    ]


async def test_folded_and_repeated_headers() -> None:
    data = (
        b"--" + B.encode() + b"\r\n"
        b"X-Long: a\r\n  b\r\n\tc\r\n"
        b"X-Rep: 1\r\nx-rep: 2\r\n\r\n"
        b"body\r\n--" + B.encode() + b"--"
    )
    [(headers, body)] = await read_all(data)
    assert headers == {"x-long": "a b c", "x-rep": "1, 2"}
    assert body == b"body"


async def test_quoted_boundary_and_part_type_fallback() -> None:
    boundary = "DICOM DATA BOUNDARY"
    b = boundary.encode()
    data = (
        b"--" + b + b"\r\n\r\nno type\r\n"
        b"--" + b + b"\r\nContent-Type: application/dicom+xml\r\n\r\nxml\r\n--" + b + b"--"
    )
    ct = f'Multipart/Related; Type=application/dicom; BOUNDARY="{boundary}"'
    got = []
    async for part in read_parts(chunked(data, 7), ct, **LIMITS):
        assert part.content_type is not None
        got.append((part.content_type.essence, part.file.read()))
    assert got == [("application/dicom", b"no type"), ("application/dicom+xml", b"xml")]


async def test_part_without_any_type_has_none() -> None:
    data = b"--b\r\n\r\nx\r\n--b--"
    async for part in read_parts(chunked(data), "multipart/related; boundary=b", **LIMITS):
        assert part.content_type is None
        assert part.headers == {}


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", "multipart/mixed; boundary=b", "multipart/form-data; boundary=b", "x"],
)
async def test_wrong_media_type(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        await read_all(body_of(b"x"), content_type=content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; boundary=",
        'multipart/related; boundary=""',
        'multipart/related; boundary="' + "x" * 201 + '"',
    ],
)
async def test_missing_or_bad_boundary(content_type: str) -> None:
    with pytest.raises(MultipartError):
        await read_all(body_of(b"x"), content_type=content_type)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", ""),
        (b"just a preamble", ""),
        (b"--" + B.encode(), ""),
        (b"--" + B.encode() + b"\r\n", ""),
        (b"--" + B.encode() + b"\r\nContent-Type: application/dicom\r\n", ""),
        (b"--" + B.encode() + b"\r\n\r\nhalf a body", ""),
        (b"--" + B.encode() + b"\r\n\r\nbody\r\n--" + B.encode(), ""),
        (b"--" + B.encode() + b"\r\n\r\nbody\r\n--" + B.encode() + b"-", ""),
        (b"--" + B.encode() + b"\r\n\r\nbody\r\n--" + B.encode() + b"  \r", ""),
        # the CRLF before the close delimiter is missing: strict, with a hint
        (b"--" + B.encode() + b"\r\n\r\nbody--" + B.encode() + b"--\r\n", "CRLF"),
        (b"--" + B.encode() + b"\r\n\r\nbody\n--" + B.encode() + b"--", "CRLF"),
    ],
)
@pytest.mark.parametrize("chunk", [1, 64 * KIB])
async def test_truncated_bodies(data: bytes, detail: str, chunk: int) -> None:
    with pytest.raises(MultipartError, match="ended before the closing boundary") as e:
        await read_all(data, chunk=chunk)
    assert detail in e.value.reason


async def test_zero_parts() -> None:
    with pytest.raises(MultipartError, match="no parts"):
        await read_all(b"preamble\r\n--" + B.encode() + b"--\r\n")


@pytest.mark.parametrize(
    "headers",
    [b"no colon here\r\n", b": empty name\r\n", b"bad name: x\r\n", b" folded first: x\r\n"],
)
async def test_malformed_header_lines(headers: bytes) -> None:
    data = b"--" + B.encode() + b"\r\n" + headers + b"\r\nx\r\n--" + B.encode() + b"--"
    with pytest.raises(MultipartError, match="malformed multipart part header"):
        await read_all(data)


async def test_malformed_part_content_type() -> None:
    data = b"--" + B.encode() + b"\r\nContent-Type: dicom\r\n\r\nx\r\n--" + B.encode() + b"--"
    with pytest.raises(MultipartError, match="Content-Type"):
        await read_all(data)


@pytest.mark.parametrize("chunk", [1000, MIB])
async def test_header_block_limit(chunk: int) -> None:
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(700))
    data = b"--" + B.encode() + b"\r\n" + headers + b"\r\nx\r\n--" + B.encode() + b"--"
    with pytest.raises(MultipartError, match="headers are larger"):
        await read_all(data, chunk=chunk)
    one_line = b"--" + B.encode() + b"\r\nX: " + b"v" * (70 * KIB)
    with pytest.raises(MultipartError, match="headers are larger"):
        await read_all(one_line, chunk=chunk)


async def test_transport_padding_limit() -> None:
    data = b"--" + B.encode() + b" " * 2000 + b"\r\n\r\nx\r\n--" + B.encode() + b"--"
    with pytest.raises(MultipartError, match="padding"):
        await read_all(data, chunk=100)


async def test_max_part_size() -> None:
    data = body_of(b"a" * 1000, b"b" * 1001)
    assert await bodies(data, max_part_size=1001) == [b"a" * 1000, b"b" * 1001]
    with pytest.raises(PayloadTooLarge, match="1000-byte limit") as e:
        await bodies(data, max_part_size=1000)
    assert "max_part_size" in e.value.reason


async def test_max_total_size_counts_preamble_and_epilogue() -> None:
    data = b"p" * 100 + b"\r\n" + body_of(b"x") + b"e" * 100
    assert len(await bodies(data, max_total_size=len(data))) == 1
    with pytest.raises(PayloadTooLarge, match="max_total_size"):
        await bodies(data, max_total_size=len(data) - 1)
    with pytest.raises(PayloadTooLarge, match="max_total_size"):
        await bodies(data, max_total_size=50)


# --- spooling and ownership ------------------------------------------------------------------


def _on_disk(part: Part) -> bool:
    return bool(getattr(part.file, "_rolled"))  # noqa: B009


def _spooled_under(part: Part, folder: Path) -> bool:
    """Where the part's temp file lives, where /proc tells (Linux); True elsewhere."""
    if not os.path.exists("/proc/self/fd"):
        return True
    return os.readlink(f"/proc/self/fd/{part.file.fileno()}").startswith(str(folder))


async def test_spooling_threshold(tmp_path: Path) -> None:
    data = body_of(b"s" * 100, b"L" * 101, b"")
    seen = []
    limits = {"spool_threshold": 100, "spool_dir": str(tmp_path)}
    parts = read_parts(chunked(data, 7), CT, **(LIMITS | limits))
    async for part in parts:
        seen.append((part.size, _on_disk(part)))
        if _on_disk(part):
            assert _spooled_under(part, tmp_path)
    assert seen == [(100, False), (101, True), (0, False)]


async def test_spool_threshold_zero_always_on_disk() -> None:
    parts = read_parts(chunked(body_of(b"", b"x")), CT, **(LIMITS | {"spool_threshold": 0}))
    assert [(_on_disk(p), p.file.read()) async for p in parts] == [(True, b""), (True, b"x")]


class TrackingFile(SpooledTemporaryFile[bytes]):
    made: list[TrackingFile] = []  # noqa: RUF012

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        TrackingFile.made.append(self)


@pytest.fixture
def tracked(monkeypatch: pytest.MonkeyPatch) -> list[TrackingFile]:
    TrackingFile.made = []
    monkeypatch.setattr(multipart, "SpooledTemporaryFile", TrackingFile)
    return TrackingFile.made


async def test_previous_part_closed_when_consumer_moves_on(tracked: list[TrackingFile]) -> None:
    parts = read_parts(chunked(body_of(b"1", b"2", b"3")), CT, **LIMITS)
    seen = []
    async for part in parts:
        assert all(f.closed for f in tracked[:-1])
        assert not part.file.closed
        seen.append(part)
    assert len(seen) == 3
    assert all(p.file.closed for p in seen)


async def test_detached_part_is_left_open(tracked: list[TrackingFile]) -> None:
    kept = []
    async for part in read_parts(chunked(body_of(b"1", b"2")), CT, **LIMITS):
        if part.file.read() == b"1":
            kept.append(part.detach())
    assert [f.closed for f in tracked] == [False, True]
    kept[0].seek(0)
    assert kept[0].read() == b"1"
    kept[0].close()


async def test_early_break_closes_files(tracked: list[TrackingFile]) -> None:
    data = body_of(b"a" * 1000, b"b" * 1000, b"c")
    async with aclosing(
        read_parts(chunked(data, 10), CT, **(LIMITS | {"spool_threshold": 10}))
    ) as parts:
        async for part in parts:
            assert part.file.read(1) == b"a"
            break
    assert len(tracked) == 1
    assert tracked[0].closed


@pytest.mark.parametrize(
    ("data", "max_part_size", "error"),
    [
        (body_of(b"ok", b"x" * 5000), 4000, PayloadTooLarge),
        (body_of(b"ok", b"x" * 5000)[:-40], MIB, MultipartError),
    ],
)
async def test_errors_close_the_part_being_read(
    tracked: list[TrackingFile], data: bytes, max_part_size: int, error: type[Exception]
) -> None:
    limits = LIMITS | {"max_part_size": max_part_size, "spool_threshold": 1000}
    with pytest.raises(error):
        async for part in read_parts(chunked(data, 100), CT, **limits):
            assert part.file.read() == b"ok"
    assert len(tracked) == 2
    assert all(f.closed for f in tracked)


async def test_fifty_megabytes_in_bounded_memory(tmp_path: Path) -> None:
    size = 50 * MIB
    boundary = new_boundary().encode()
    block = bytes(range(256)) * 256  # 64 KiB

    async def generate() -> AsyncIterator[bytes]:
        yield b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n"
        for _ in range(size // len(block)):
            yield block
        yield b"\r\n--" + boundary + b"--\r\n"

    tracemalloc.start()
    try:
        parts = read_parts(
            generate(),
            multipart_content_type("application/dicom", boundary.decode()),
            spool_threshold=MIB,
            max_part_size=size,
            max_total_size=2 * size,
            spool_dir=str(tmp_path),
        )
        sizes = []
        async for part in parts:
            sizes.append(part.size)
            assert _on_disk(part)
            assert part.file.read(len(block)) == block
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [size]
    assert peak < 4 * MIB, peak


# --- writing -----------------------------------------------------------------------------------


async def test_writer_exact_bytes_crlf_everywhere() -> None:
    async def parts() -> AsyncIterator[PartOut]:
        yield PartOut("application/dicom", b"AB", content_location="/x")
        yield PartOut('application/octet-stream; transfer-syntax="1.2.3"', b"")

    data = await join(write_parts(parts(), "bnd"))
    assert data == (
        b"--bnd\r\nContent-Type: application/dicom\r\nContent-Location: /x\r\n\r\nAB"
        b'\r\n--bnd\r\nContent-Type: application/octet-stream; transfer-syntax="1.2.3"\r\n\r\n'
        b"\r\n--bnd--\r\n"
    )
    assert b"\n" not in data.replace(b"\r\n", b"")


async def test_writer_large_body_is_not_copied_into_the_header_chunk() -> None:
    body = b"x" * MIB
    chunks = [c async for c in write_parts([PartOut("application/dicom", body)], "b")]
    assert body in chunks


async def test_writer_rejects_header_injection() -> None:
    with pytest.raises(ValueError, match="invalid header"):
        await join(write_parts([PartOut("a/b", b"", headers={"X": "1\r\nY: 2"})], "b"))
    with pytest.raises(ValueError, match="invalid header"):
        await join(write_parts([PartOut("a/b\r\n", b"")], "b"))


def test_multipart_content_type() -> None:
    assert (
        multipart_content_type("application/dicom", "abc")
        == 'multipart/related; type="application/dicom"; boundary=abc'
    )
    assert multipart_content_type(
        "application/octet-stream", "abc", transfer_syntax="1.2.840.10008.1.2.1"
    ) == (
        'multipart/related; type="application/octet-stream";'
        " transfer-syntax=1.2.840.10008.1.2.1; boundary=abc"
    )
    assert multipart_content_type("a/b", "with space") == (
        'multipart/related; type="a/b"; boundary="with space"'
    )
    with pytest.raises(ValueError, match="boundary"):
        multipart_content_type("a/b", "x" * 71)


def test_new_boundary() -> None:
    boundaries = {new_boundary() for _ in range(100)}
    assert len(boundaries) == 100
    assert all(len(b) == 32 and b.isalnum() for b in boundaries)
