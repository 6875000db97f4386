"""The change feed's contract between each shard's index and the router (issue 13).

Each shard's ``change_feed`` table has a row per create, replace and delete of an
instance, numbered by ``seq``. Rows are numbered in **commit order**: every transaction
that writes feed rows first takes the shard's :data:`FEED_LOCK` (a transaction-scoped
advisory lock), so a transaction cannot take a number while an earlier-numbered one is
still uncommitted, and a reader that has seen ``seq`` N never later finds an N-1 it
missed.

    GET /internal/changefeed?after=SEQ&limit=N    {"events": [...], "latest": SEQ}

The router merges the shards' feeds (:mod:`tessera.router.changefeed`) behind one opaque
cursor: :func:`encode_cursor` of ``{shard: last seq read}``.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request

from tessera.shared.auth.internal import from_the_cluster
from tessera.shared.errors import BadRequest

FEED_PATH = "/internal/changefeed"
# A rebalance's copy of a study to its new shard and its delete from the old one are
# recorded as these actions (not create and delete): the router shows the first as one
# "move" event and not the second, so a follower does not delete and fetch again what
# only changed shard. The rebalance marks its requests with MOVE_HEADER (the target
# shard's name); the router drops that header from clients' requests, and the shard
# services honour it only from the router's own credential.
MOVE_IN, MOVE_OUT, MOVE = "move-in", "move-out", "move"
MOVE_HEADER = "x-tessera-move"
# pg_advisory_xact_lock key of the feed writers ("tessera feed" in ASCII, as an int8)
FEED_LOCK = int.from_bytes(b"tss-feed", "big") & 0x7FFF_FFFF_FFFF_FFFF
MAX_LIMIT = 1000


def is_move(request: Request) -> bool:
    """The request is a rebalance's copy or delete of a study (see :data:`MOVE_HEADER`)."""
    return bool(request.headers.get(MOVE_HEADER)) and from_the_cluster(request)


def encode_cursor(positions: dict[str, int]) -> str:
    raw = json.dumps(dict(sorted(positions.items())), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> dict[str, int]:
    """``{shard: seq}`` of a cursor (empty: from the beginning); 400 if it is not one."""
    if not cursor:
        return {}
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = json.loads(raw)
    except (ValueError, binascii.Error):
        raise BadRequest("cursor is not one this archive gave") from None
    if not isinstance(doc, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in doc.items()
    ):
        raise BadRequest("cursor is not one this archive gave")
    return doc
