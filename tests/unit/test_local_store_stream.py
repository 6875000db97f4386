"""LocalStore.stream: the object, or a range of it, in chunks; the first chunk read with
the open (one thread hop for an object that fits a chunk)."""

from __future__ import annotations

import pytest

from tessera.shared.errors import ObjectNotFound
from tessera.shared.storage.local import LocalStore

DATA = bytes(range(256)) * 40  # 10,240 bytes


async def read(store: LocalStore, **kw: int) -> list[bytes]:
    return [chunk async for chunk in store.stream("a/b/x.dcm", **kw)]


@pytest.mark.parametrize("chunk", [1000, 1024, 10_240, 10_241, 1 << 20])
@pytest.mark.parametrize(
    ("start", "length"), [(0, None), (0, 10_240), (5, None), (1000, 2048), (0, 0), (10_000, 500)]
)
async def test_every_byte_of_the_range_once_in_chunks(tmp_path, chunk, start, length):
    store = LocalStore(tmp_path)
    await store.put_bytes("a/b/x.dcm", DATA)
    chunks = await read(store, start=start, length=length, chunk_size=chunk)
    end = len(DATA) if length is None else min(len(DATA), start + length)
    assert b"".join(chunks) == DATA[start:end]
    assert all(0 < len(c) <= chunk for c in chunks)


async def test_a_missing_object(tmp_path):
    with pytest.raises(ObjectNotFound):
        await read(LocalStore(tmp_path))
