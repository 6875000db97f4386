"""The retrieve app on a local object folder, for the tests of this folder (no transcode:
its Redis URL names a port where nothing listens)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tessera.retrieve.app import create_app
from tessera.shared.settings import Settings
from tests.support.retrieve import asgi_client, running


@pytest.fixture
def settings(database: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database,
        storage_url=f"file://{tmp_path / 'objects'}",
        redis_url="redis://127.0.0.1:9/0",  # nothing listens: these tests never transcode
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    async with running(create_app(settings)) as started:
        yield started


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as c:
        yield c
