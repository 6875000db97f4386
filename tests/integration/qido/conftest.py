"""``client``: the index service's QIDO-RS over the archive of
:mod:`tests.support.qido_archive`, for the tests of this folder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.qido_archive import archive, index, serve


@pytest.fixture
async def client(database: str) -> AsyncIterator[httpx.AsyncClient]:
    await index(database, archive())
    async with serve(database) as c:
        yield c
