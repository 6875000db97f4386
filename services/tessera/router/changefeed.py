"""The cluster's change feed (issue 13), in the spirit of Microsoft's DICOM change feed:

    GET {prefix}/changefeed?cursor=C&limit=N&timeout=S
        {"events": [...], "cursor": "<next>", "more": true|false}
    GET {prefix}/changefeed/latest
        {"cursor": "<the end of the feed>", "latest": {shard: seq}}

Each event: ``action`` (``create``, ``replace``, ``delete``, ``move``), ``study``, ``series``,
``instance`` (the UIDs), ``at`` (commit time), ``shard`` and ``seq`` (its number on that
shard). Events come in commit order per shard (:mod:`tessera.shared.changefeed`); the
shards' events are interleaved by time. The cursor is opaque (the last ``seq`` read of
each shard): a reader that passes each answer's ``cursor`` to the next request never
misses nor repeats an event, across pages and shard restarts; a shard added later is
read from its beginning. Without ``cursor`` the feed is read from the beginning;
``/changefeed/latest`` gives the cursor of its end (to follow only what comes next).

``timeout`` (seconds, at most 60) makes the request wait for events when there are none
yet (long polling): the answer comes as soon as one is committed, so a follower does not
poll in a loop. A shard that does not answer is 503 + Retry-After: a page without it
would let the cursor run past nothing, but a reader could not tell a gap from quiet.

A rebalance's move of a study shows as one ``move`` event per instance, on the shard it
moved to, when the copy there commits; its delete from the old shard is not shown (the
shards record them as ``move-in`` and ``move-out``, :mod:`tessera.shared.changefeed`).
A follower that has the instance does nothing; one that has not fetches it.

Not yet: webhooks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.router.shards import Service, Shard, ShardMap
from tessera.shared.auth.internal import FORWARD_KEY
from tessera.shared.changefeed import (
    FEED_PATH,
    MAX_LIMIT,
    MOVE,
    MOVE_IN,
    MOVE_OUT,
    decode_cursor,
    encode_cursor,
)
from tessera.shared.errors import BadRequest, ServiceUnavailable

MAX_WAIT = 60.0
POLL = 0.25  # seconds between looks while a long poll waits


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query_params.get(name, str(default)))
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be {low}..{high}")
    return value


def merged(feeds: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` events of the shards' feeds, interleaved by time but each
    shard's in its own order (a cursor past an event is past every earlier one)."""
    heads = [0] * len(feeds)
    out: list[dict[str, Any]] = []
    while len(out) < limit:
        ready = [i for i, feed in enumerate(feeds) if heads[i] < len(feed)]
        if not ready:
            break
        i = min(ready, key=lambda i: (feeds[i][heads[i]]["at"], feeds[i][heads[i]]["shard"]))
        out.append(feeds[i][heads[i]])
        heads[i] += 1
    return out


def public(event: dict[str, Any]) -> dict[str, Any]:
    """An event as readers see it: a rebalance's copy of an instance is a "move" to the
    event's shard (its delete from the old shard is not shown)."""
    if event["action"] == MOVE_IN:
        return {**event, "action": MOVE}
    return event


class ChangeFeed:
    def __init__(self, shards: Callable[[], ShardMap], http: Callable[[], httpx.AsyncClient]):
        self.shards = shards
        self.http = http

    async def _read(self, request: Request, shard: Shard, after: int, limit: int) -> dict[str, Any]:
        # the caller's own credential (its labels), not the router's
        credential = request.scope.get(FORWARD_KEY)
        headers = {"Authorization": credential} if credential else {}
        try:
            r = await self.http().get(
                shard.url(Service.INDEX) + FEED_PATH,
                params={"after": str(after), "limit": str(limit)},
                headers=headers,
                auth=None,
            )
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"shard {shard.name} did not answer ({e})", 5) from None
        if r.status_code != 200:
            raise ServiceUnavailable(f"shard {shard.name} answered {r.status_code}", 5)
        doc: dict[str, Any] = r.json()
        return doc

    async def _page(
        self, request: Request, positions: dict[str, int], limit: int
    ) -> tuple[list[dict[str, Any]], dict[str, int], bool]:
        shards = self.shards().all()
        pages = await asyncio.gather(
            *(self._read(request, s, positions.get(s.name, 0), limit) for s in shards)
        )
        taken = merged([[{**e, "shard": s.name} for e in p["events"]]
                        for s, p in zip(shards, pages, strict=True)], limit)  # fmt: skip
        after = dict(positions)
        for e in taken:
            after[e["shard"]] = max(after.get(e["shard"], 0), e["seq"])
        counts = Counter(e["shard"] for e in taken)
        for s, page in zip(shards, pages, strict=True):
            if counts[s.name] == len(page["events"]):  # all read: past what it skipped
                after[s.name] = max(after.get(s.name, 0), int(page["through"]))
        more = any(
            page["latest"] > after.get(s.name, 0) for s, page in zip(shards, pages, strict=True)
        )
        return taken, after, more

    async def changes(self, request: Request) -> Response:
        positions = decode_cursor(request.query_params.get("cursor", ""))
        limit = _int(request, "limit", 100, 1, MAX_LIMIT)
        wait = min(float(_int(request, "timeout", 0, 0, int(MAX_WAIT))), MAX_WAIT)
        deadline = time.monotonic() + wait
        while True:
            taken, after, more = await self._page(request, positions, limit)
            events = [public(e) for e in taken if e["action"] != MOVE_OUT]
            if events or time.monotonic() >= deadline:
                break
            positions = after  # past what a move hid
            await asyncio.sleep(POLL)
        body = {"events": events, "cursor": encode_cursor(after), "more": more}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def latest(self, request: Request) -> Response:
        shards = self.shards().all()
        pages = await asyncio.gather(*(self._read(request, s, 0, 1) for s in shards))
        latest = {s.name: int(p["latest"]) for s, p in zip(shards, pages, strict=True)}
        body = {"cursor": encode_cursor(latest), "latest": latest}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def routes(self, prefix: str, read: Callable[[Any], Any]) -> list[Route]:
        return [
            Route(f"{prefix}/changefeed", read(self.changes), methods=["GET"]),
            Route(f"{prefix}/changefeed/latest", read(self.latest), methods=["GET"]),
        ]
