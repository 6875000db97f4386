"""Webhooks: the cluster's change feed POSTed to configured URLs (README "Change feed").

Each webhook follows the router's ``/changefeed`` (long polling, the read permission as
``webhook:NAME``, every study) from where it stands (``cursor``; a new one starts at
the feed's end unless ``"from": "beginning"``), keeps the events of the ``actions`` it
wants and POSTs them, a page at a time, as ``application/json``::

    {"webhook": "ai-pipeline", "events": [{"action": "create", "study": ..., "series": ...,
     "instance": ..., "at": ..., "shard": ..., "seq": ...}, ...]}

with ``X-Tessera-Delivery`` (an id per attempt's batch) and, when the webhook has a
secret, ``X-Tessera-Signature: sha256=<hex HMAC-SHA256 of the body>``. A 2xx answer
delivers the batch and the cursor moves past it. Anything else (or no answer in 30 s)
is retried with back-off (1, 2, 4... seconds, at most 60) ``max_attempts`` times; then
the batch becomes a **dead letter** (kept with the last error, listed, sent again on
request) and the webhook goes on with the next events. Delivery is at least once: a
receiver may see a batch again (after a gateway restart mid-delivery) and tells events
apart by ``shard`` and ``seq``.

One gateway delivers each webhook at a time (a PostgreSQL advisory lock per webhook);
another takes over when it stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import zlib
from typing import Any

import asyncpg
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tessera.dimse.admin import json_object, require_admin
from tessera.dimse.archive import router_url
from tessera.dimse.peers.registry import check_name
from tessera.shared.auth import Permission, Principal
from tessera.shared.auth.internal import InternalCredential
from tessera.shared.dimse_api import WEBHOOKS
from tessera.shared.errors import BadRequest, NotFound
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

ACTIONS = ("create", "replace", "delete", "move")
PAGE = 100
WAIT = 20  # seconds a change feed request waits for events
POLL = 1.0  # seconds between looks at the webhook table
_ONE = WEBHOOKS + "/{name}"
# the API: (path, method, the Webhooks method that answers), bound by the gateway's app
ROUTES = [
    (WEBHOOKS, "GET", "list_webhooks"),
    (_ONE, "GET", "get_webhook"),
    (_ONE, "PUT", "put_webhook"),
    (_ONE, "DELETE", "delete_webhook"),
    (_ONE + "/dead-letters", "GET", "dead_letters"),
    (_ONE + "/dead-letters/{id:int}/retry", "POST", "retry"),
    (_ONE + "/dead-letters/{id:int}", "DELETE", "drop"),
]
_COLUMNS = ("name, url, secret, actions, max_attempts, from_now, cursor, delivered, dead,"
            " last_error, updated_at")  # fmt: skip


def webhook_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "name": row["name"],
        "url": row["url"],
        "secret": "***" if row["secret"] else "",
        "actions": list(row["actions"]),
        "maxAttempts": row["max_attempts"],
        "delivered": row["delivered"],
        "deadLetters": row["dead"],
        "following": bool(row["cursor"]),  # it has its position in the feed
        "lastError": row["last_error"],
        "updated": row["updated_at"].isoformat(),
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn  # each delivering webhook holds its lock on a connection of its own
        self.feed = router_url(settings) + "/changefeed"
        self.credential = InternalCredential.gateway(settings)
        verify: Any = True
        if settings.dimse_router_ca:
            import ssl

            verify = ssl.create_default_context(cafile=settings.dimse_router_ca)
        self.router = httpx.AsyncClient(timeout=WAIT + 15, verify=verify)
        self.out = httpx.AsyncClient(timeout=30, follow_redirects=False)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None
        self.retry_base = 1.0  # seconds before the first retry (tests shorten it)

    async def start(self) -> None:
        self._watch = asyncio.create_task(self._watch_table(), name="webhooks")

    async def close(self) -> None:
        for task in [self._watch, *self._tasks.values()]:
            if task is not None:
                task.cancel()
        await self.router.aclose()
        await self.out.aclose()

    async def _watch_table(self) -> None:
        while True:
            try:
                names = {r["name"] for r in await self.pool.fetch("SELECT name FROM webhook")}
                for name in names - self._tasks.keys():
                    self._tasks[name] = asyncio.create_task(self._run(name), name=f"webhook-{name}")
                for name in list(self._tasks):
                    if name not in names or self._tasks[name].done():
                        self._tasks.pop(name).cancel()
            except (OSError, asyncpg.PostgresError, TimeoutError) as e:
                log.warning("webhooks not checked: %s", e)
            await asyncio.sleep(POLL)

    # -- one webhook ---------------------------------------------------------------------
    async def _run(self, name: str) -> None:
        lock = zlib.crc32(f"tessera-webhook:{name}".encode())
        conn = await asyncpg.connect(self.dsn)
        try:
            while True:  # another gateway may deliver it: wait for its lock
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                    break
                await asyncio.sleep(POLL)
            await self._deliver_forever(name)
        finally:
            await conn.close()  # the lock goes with the session

    async def _deliver_forever(self, name: str) -> None:
        principal = Principal(
            f"webhook:{name}", frozenset({Permission.READ}), None, method="webhook"
        )
        while True:
            row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM webhook WHERE name = $1", name)
            if row is None:
                return
            cursor = row["cursor"]
            try:
                if not cursor and row["from_now"]:
                    cursor = (await self._get("/latest", {}, principal))["cursor"]
                    await self._save(name, cursor, 0)
                page = await self._get("", {"cursor": cursor, "limit": str(PAGE),
                                            "timeout": str(WAIT)}, principal)  # fmt: skip
            except (httpx.HTTPError, KeyError, ValueError) as e:
                log.warning("webhook %s: the change feed did not answer (%s)", name, e)
                await asyncio.sleep(5)
                continue
            events = [e for e in page.get("events", []) if e.get("action") in row["actions"]]
            if events:
                await self._deliver(row, events)
            await self._save(name, str(page.get("cursor", cursor)), len(events))

    async def _get(self, path: str, params: dict[str, str], principal: Principal) -> dict[str, Any]:
        headers = {}
        if self.credential is not None:
            headers["Authorization"] = self.credential.header(principal)
        r = await self.router.get(self.feed + path, params=params, headers=headers)
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    async def _save(self, name: str, cursor: str, delivered: int) -> None:
        await self.pool.execute(
            "UPDATE webhook SET cursor = $2, delivered = delivered + $3, updated_at = now()"
            " WHERE name = $1",
            name,
            cursor,
            delivered,
        )

    async def _deliver(self, row: asyncpg.Record, events: list[dict[str, Any]]) -> None:
        """POST the batch until it is taken, or make it a dead letter."""
        error = ""
        delay = self.retry_base
        for attempt in range(1, row["max_attempts"] + 1):
            error = await self.post(row["name"], row["url"], row["secret"], events)
            if not error:
                if row["last_error"]:
                    await self.pool.execute(
                        "UPDATE webhook SET last_error = '' WHERE name = $1", row["name"]
                    )
                return
            log.warning("webhook %s: attempt %d failed: %s", row["name"], attempt, error)
            await self.pool.execute(
                "UPDATE webhook SET last_error = $2 WHERE name = $1", row["name"], error
            )
            if attempt < row["max_attempts"]:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
        await self.pool.execute(
            "INSERT INTO webhook_dead_letter (webhook, events, error, attempts)"
            " VALUES ($1, $2, $3, $4)",
            row["name"],
            json.dumps(events),
            error,
            row["max_attempts"],
        )
        await self.pool.execute("UPDATE webhook SET dead = dead + 1 WHERE name = $1", row["name"])

    async def post(self, name: str, url: str, secret: str, events: list[dict[str, Any]]) -> str:
        """One delivery attempt: '' when the receiver took it, else why not."""
        body = json.dumps({"webhook": name, "events": events}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "X-Tessera-Delivery": secrets.token_hex(8)}
        if secret:
            headers["X-Tessera-Signature"] = sign(secret, body)
        try:
            r = await self.out.post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            return f"{type(e).__name__}: {e}"[:300]
        return "" if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"

    # -- the admin API -------------------------------------------------------------------
    async def _row(self, request: Request) -> asyncpg.Record:
        _admin(request)
        name = check_name(request.path_params["name"])
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM webhook WHERE name = $1", name)
        if row is None:
            raise NotFound(f"no webhook {name}")
        return row

    async def list_webhooks(self, request: Request) -> Response:
        _admin(request)
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM webhook ORDER BY name")
        return JSONResponse({"webhooks": [webhook_json(r) for r in rows]})

    async def get_webhook(self, request: Request) -> Response:
        return JSONResponse(webhook_json(await self._row(request)))

    async def put_webhook(self, request: Request) -> Response:
        _admin(request)
        name = check_name(request.path_params["name"])
        doc = await json_object(request)
        unknown = set(doc) - {"name", "url", "secret", "actions", "maxAttempts", "from"}
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        url = doc.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise BadRequest("url: an http(s) URL")
        actions = doc.get("actions", list(ACTIONS))
        if not isinstance(actions, list) or not actions or any(a not in ACTIONS for a in actions):
            raise BadRequest(f"actions: a list of {', '.join(ACTIONS)}")
        attempts = doc.get("maxAttempts", 8)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
            raise BadRequest("maxAttempts: 1 to 100")
        start = doc.get("from", "now")
        if start not in ("now", "beginning"):
            raise BadRequest("from: now or beginning")
        secret = doc.get("secret", "")
        if not isinstance(secret, str):
            raise BadRequest("secret: a string")
        created = await self.pool.fetchval(
            "INSERT INTO webhook (name, url, secret, actions, max_attempts, from_now)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET url = $2,"
            " secret = CASE WHEN $3 = '***' THEN webhook.secret ELSE $3 END, actions = $4,"
            " max_attempts = $5, updated_at = now() RETURNING xmax = 0",
            name,
            url,
            secret,
            actions,
            attempts,
            start == "now",
        )
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM webhook WHERE name = $1", name)
        return JSONResponse(webhook_json(row), status_code=201 if created else 200)

    async def delete_webhook(self, request: Request) -> Response:
        row = await self._row(request)
        await self.pool.execute("DELETE FROM webhook WHERE name = $1", row["name"])
        await self.pool.execute("DELETE FROM webhook_dead_letter WHERE webhook = $1", row["name"])
        return Response(status_code=204)

    async def dead_letters(self, request: Request) -> Response:
        row = await self._row(request)
        rows = await self.pool.fetch(
            "SELECT id, events, error, attempts, created_at FROM webhook_dead_letter"
            " WHERE webhook = $1 ORDER BY id LIMIT 1000",
            row["name"],
        )
        return JSONResponse({"deadLetters": [
            {"id": r["id"], "events": json.loads(r["events"]), "error": r["error"],
             "attempts": r["attempts"], "created": r["created_at"].isoformat()}
            for r in rows
        ]})  # fmt: skip

    async def retry(self, request: Request) -> Response:
        """Send a dead letter again, once: 200 and gone from the list, or 502 with why."""
        row = await self._row(request)
        letter = await self.pool.fetchrow(
            "SELECT events FROM webhook_dead_letter WHERE webhook = $1 AND id = $2",
            row["name"],
            request.path_params["id"],
        )
        if letter is None:
            raise NotFound("no such dead letter")
        error = await self.post(
            row["name"], row["url"], row["secret"], json.loads(letter["events"])
        )
        if error:
            return JSONResponse({"delivered": False, "error": error}, status_code=502)
        await self.pool.execute(
            "DELETE FROM webhook_dead_letter WHERE id = $1", request.path_params["id"]
        )
        return JSONResponse({"delivered": True})

    async def drop(self, request: Request) -> Response:
        row = await self._row(request)
        done = await self.pool.execute(
            "DELETE FROM webhook_dead_letter WHERE webhook = $1 AND id = $2",
            row["name"],
            request.path_params["id"],
        )
        if done == "DELETE 0":
            raise NotFound("no such dead letter")
        return Response(status_code=204)


def _admin(request: Request) -> None:
    require_admin(request, "webhooks")
