"""``ObjectStore.delete_instance`` / ``delete_prefix`` on both backends (a local folder and
the S3 API server): an instance goes with everything derived from it, and nothing else."""

from __future__ import annotations

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
