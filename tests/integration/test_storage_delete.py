"""``ObjectStore.delete_instance`` / ``delete_prefix`` on both backends (a local folder and
the S3 API server): an instance goes with everything derived from it, and nothing else."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tessera.shared.settings import Settings
from tessera.shared.storage import (
    ObjectStore,
    derived_frame_key,
    derived_key,
    instance_key,
    open_store,
    rendered_key,
)
from tessera.shared.storage.s3 import S3Store

ONE, TWO = "a" * 64, "b" * 64
EVRLE = "1.2.840.10008.1.2.1"


@pytest.fixture(params=["file", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_settings: dict[str, str], s3_bucket: str
) -> AsyncIterator[ObjectStore]:
    if request.param == "file":
        settings = Settings(storage_url=(tmp_path / "objects").as_uri())
    else:
        settings = Settings(storage_url=f"s3://{s3_bucket}/prefix", **s3_settings)  # type: ignore[arg-type]
    opened = open_store(settings)
    yield opened
    await opened.close()


def keys_of(sha: str) -> list[str]:
    key = instance_key(sha)
    return [
        key,
        derived_key(key, EVRLE),
        derived_frame_key(key, 1, EVRLE),
        derived_frame_key(key, 2, EVRLE),
        rendered_key(key, 1, "d" * 16, "jpg"),
    ]


async def test_delete_instance_removes_the_object_and_what_was_derived_from_it(store):
    for key in keys_of(ONE) + keys_of(TWO):
        await store.put_bytes(key, key.encode())
    await store.delete_instance(instance_key(ONE))
    assert [await store.exists(k) for k in keys_of(ONE)] == [False] * 5
    assert [await store.exists(k) for k in keys_of(TWO)] == [True] * 5
    await store.delete_instance(instance_key(ONE))  # already gone: no error


async def test_delete_prefix_takes_a_folder_only(store):
    await store.put_bytes("derived/x/1", b"1")
    await store.put_bytes("derived/xy/1", b"2")
    await store.delete_prefix("derived/x/")
    assert not await store.exists("derived/x/1")
    assert await store.exists("derived/xy/1")


async def test_list_objects_in_key_order_and_resumes_after_a_key(store):
    keys = sorted(keys_of(ONE) + keys_of(TWO))
    for key in reversed(keys):
        await store.put_bytes(key, b"12345")
    listed = [o async for o in store.list_objects("")]
    assert [o.key for o in listed] == keys
    assert {o.size for o in listed} == {5}
    instances = [o.key async for o in store.list_objects("instances/")]
    assert instances == [instance_key(ONE), instance_key(TWO)]
    after = [o.key async for o in store.list_objects("", start_after=instance_key(ONE))]
    assert after == [k for k in keys if k > instance_key(ONE)]
    after = [o.key async for o in store.list_objects("derived/", start_after="derived/b")]
    assert after == [k for k in keys if k.startswith("derived/b")]


async def test_touch_renews_the_modification_time_and_keeps_the_bytes(store):
    key = instance_key(ONE)
    assert await store.touch(key) is False
    assert await store.modified(key) is None
    await store.put_bytes(key, b"the bytes")
    first = await store.modified(key)
    assert first is not None
    await asyncio.sleep(1.1)  # S3's LastModified has whole seconds
    assert await store.touch(key) is True
    touched = await store.modified(key)
    assert touched is not None and touched > first
    assert await store.get_bytes(key) == b"the bytes"


async def test_put_file_unless_present_writes_once_and_then_touches(store):
    key = instance_key(ONE)
    assert await store.put_file_unless_present(key, io.BytesIO(b"the bytes"), 9) is True
    first = await store.modified(key)
    assert first is not None
    await asyncio.sleep(1.1)  # S3's LastModified has whole seconds
    assert await store.put_file_unless_present(key, io.BytesIO(b"other"), 5) is False
    touched = await store.modified(key)
    assert touched is not None and touched > first
    assert await store.get_bytes(key) == b"the bytes"


async def test_an_interrupted_write_leaves_a_temporary_that_can_be_removed(store, tmp_path):
    key = instance_key(ONE)
    if isinstance(store, S3Store):  # a multipart upload begun, never finished
        s3 = await store._s3()
        await s3.create_multipart_upload(Bucket=store.bucket, Key=store._k(key))
    else:  # a writer killed between mkstemp and rename
        folder = tmp_path / "objects" / key.rsplit("/", 1)[0]
        folder.mkdir(parents=True)
        (folder / ".put-abc123").write_bytes(b"half")
    found = [t async for t in store.temporaries()]
    assert [t.key for t in found] in ([key], [key.rsplit("/", 1)[0] + "/.put-abc123"])
    assert [o async for o in store.list_objects("")] == []  # not an object
    await store.remove_temporary(found[0])
    assert [t async for t in store.temporaries()] == []
