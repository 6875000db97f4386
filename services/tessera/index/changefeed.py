"""``GET /internal/changefeed``: this shard's change feed rows after a sequence number
(:mod:`tessera.shared.changefeed`), for the router's cluster-wide change feed: the
events, the shard's ``latest`` number, and ``through``, the number up to which this
answer looked (past rows the caller may not see).

A caller limited to some labels sees the events of the studies it can see now; the
events of deleted studies (whose labels are gone with them) only an unlimited caller.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tessera.shared.auth.internal import principal_of
from tessera.shared.changefeed import FEED_PATH, MAX_LIMIT
from tessera.shared.errors import BadRequest


async def changes(request: Request) -> Response:
    try:
        after = int(request.query_params.get("after", "0"))
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise BadRequest("after and limit must be integers") from None
    if after < 0 or not 0 < limit <= MAX_LIMIT:
        raise BadRequest(f"after must be 0 or more, limit 1..{MAX_LIMIT}")
    labels = principal_of(request).labels
    pool = request.app.state.pool
    latest = await pool.fetchval("SELECT coalesce(max(seq), 0) FROM change_feed")
    rows = await pool.fetch(
        """SELECT f.seq, f.action, f.study_instance_uid, f.series_instance_uid,
                  f.sop_instance_uid, f.at
             FROM change_feed f
            WHERE f.seq > $1 AND f.seq <= $4
              AND ($3::text[] IS NULL OR EXISTS (
                    SELECT 1 FROM study st WHERE st.study_instance_uid = f.study_instance_uid
                       AND st.labels && $3::text[]))
            ORDER BY f.seq LIMIT $2""",
        after,
        limit,
        None if labels is None else sorted(labels),
        latest,
    )
    # how far this answer has looked: past the events the caller may not see too
    through = latest if len(rows) < limit else rows[-1]["seq"]
    events = [
        {
            "seq": r["seq"],
            "action": r["action"],
            "study": r["study_instance_uid"],
            "series": r["series_instance_uid"],
            "instance": r["sop_instance_uid"],
            "at": r["at"].isoformat(),
        }
        for r in rows
    ]
    return JSONResponse({"events": events, "latest": latest, "through": through})


def routes() -> list[Route]:
    return [Route(FEED_PATH, changes, methods=["GET"])]
