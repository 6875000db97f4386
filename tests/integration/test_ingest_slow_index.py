"""A STOW-RS whose index does not commit in time (no index worker here) waits the whole
``index_timeout`` and reports each instance as 0xA700 (PS3.18 Table I.2-2, Refused: Out
of Resources) — never a 500 because a Redis socket timed out first (redis-py's default
socket timeout is 5 s, shorter than the wait; issue 15)."""

from __future__ import annotations

import time
from pathlib import Path

from tessera.ingest.app import create_app
from tessera.shared.settings import Settings
from tests.support.dicomgen import make_instance, multipart
from tests.support.retrieve import asgi_client, running

OUT_OF_RESOURCES = 0xA700


async def test_a_slow_index_is_0xa700_after_index_timeout_not_a_500(
    redis_db: str, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_db,
        storage_url=(tmp_path / "objects").as_uri(),
        shard="slow-index",
        index_timeout=6.5,  # longer than redis-py's 5 s default socket timeout
    )
    app = create_app(settings)
    body, ctype = multipart([make_instance(), make_instance()])
    async with running(app), asgi_client(app) as client:
        started = time.monotonic()
        r = await client.post("/studies", content=body, headers={"Content-Type": ctype})
        waited = time.monotonic() - started
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"]
    assert [f["00081197"]["Value"] for f in failed] == [[OUT_OF_RESOURCES]] * 2
    assert waited >= settings.index_timeout - 0.2  # the whole wait, not cut at 5 s
