"""Retrieve with a real transcode worker (Celery, in threads of this process): rendered,
thumbnail, WADO-URI and frames.

    worker    module scope: a transcode worker on a Redis database of its own and an
              object folder of its own; its settings
    retrieve  a retrieve app (lifespan run) on the test's database and the worker's
              Redis and objects, and an httpx client on it
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette

from tessera.shared.settings import Settings
from tests.support.rendering import retrieve_settings, started, transcode_worker
from tests.support.servers import RedisDatabases


@pytest.fixture(scope="module")
def worker(
    redis_databases: RedisDatabases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    with transcode_worker(redis_databases, tmp_path_factory.mktemp("objects")) as settings:
        yield settings


@pytest.fixture
async def retrieve(
    database: str, worker: Settings
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    async for pair in started(retrieve_settings(database, worker)):
        yield pair
