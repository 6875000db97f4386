"""A real transcode worker and retrieve app for the rendering tests (rendered, thumbnail,
WADO-URI), and helpers to read what they answer.

The transcode service's Celery app runs as a worker in threads of this process on the
session's Redis (a leased database of its own), sharing a local object folder with
retrieve; the index is a fresh PostgreSQL database per test. Renders are
counted by wrapping :func:`tessera.transcode.render.render`, which every rendering goes
through.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker
from PIL import Image
from starlette.applications import Starlette

from tessera.retrieve.app import create_app
from tessera.shared.settings import Settings
from tessera.transcode import render
from tessera.transcode.cache import close_loops
from tessera.transcode.celery_app import TranscodeCelery
from tessera.transcode.celery_app import create_app as create_transcode_app
from tests.support.servers import RedisDatabases

# Celery 5.7's Redis result backend stores results with redis-py's deprecated setex; in
# the worker thread that warning, made an error, would lose every result.
IGNORE_SETEX = pytest.mark.filterwarnings(
    "ignore:Call to deprecated setex:DeprecationWarning:celery.backends.redis"
)


@contextmanager
def transcode_worker(redis_databases: RedisDatabases, objects: Path) -> Iterator[Settings]:
    """A transcode worker on a leased Redis database, objects in ``objects``; its
    settings. A database of its own: a worker of another module still draining would
    otherwise take tasks whose results land in its own object folder."""
    with redis_databases.lease() as url:
        settings = Settings.from_env({}, redis_url=url, storage_url=objects.as_uri())
        with worker_app(settings):
            yield settings


@contextmanager
def worker_app(settings: Settings) -> Iterator[TranscodeCelery]:
    """The transcode Celery app of ``settings``, running as a worker in threads of this
    process (the failures some tests expect are not logged)."""
    app = create_transcode_app(settings)
    with start_worker(
        app,
        pool="threads",
        concurrency=2,
        perform_ping_check=False,
        shutdown_timeout=30,
        loglevel="CRITICAL",
    ):
        yield app
    close_loops()  # the tasks' loops and clients (the worker_shutdown signal's job)
    app.close()


async def started(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A retrieve app (lifespan run) and an httpx client on it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield app, c


def retrieve_settings(database: str, worker: Settings, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database,
        "storage_url": worker.storage_url,
        "redis_url": worker.redis_url,
        "transcode_timeout": 60.0,
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


class RenderCount:
    """How many frames transcode has rendered since the fixture started."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = render.render

        def counting(*args: object, **kwargs: object) -> bytes:
            self.calls += 1
            return original(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(render, "render", counting)


def image_of(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def pixels_of(data: bytes | Image.Image) -> np.ndarray:
    picture = data if isinstance(data, Image.Image) else image_of(data)
    return np.asarray(picture).astype(np.int32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB (inf if equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
