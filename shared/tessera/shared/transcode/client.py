""":class:`TranscodeClient`: send a request to a shard's transcode workers, wait for the key.

Retrieve uses it (it runs no tasks). The Celery call blocks, so it runs in a thread, off
the event loop. Failures map onto the error tree:

* the queue down, no worker alive (no heartbeat: :func:`.contract.alive_key`, checked
  before sending and while waiting), or no result within ``transcode_timeout``: 503;
* a conversion the workers refuse (:class:`~tessera.shared.errors.NotAcceptable`, carried
  back by Celery as itself): 406; a frame the object does not have: 404;
* a stored object the workers cannot find, and anything else they raise: 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import celery
import celery.exceptions
import kombu.exceptions
import redis.asyncio as aioredis
import redis.exceptions
from redis.exceptions import RedisError

from tessera.shared.errors import (
    BadRequest,
    NotAcceptable,
    NotFound,
    ObjectNotFound,
    ServiceUnavailable,
    TesseraError,
)
from tessera.shared.settings import Settings
from tessera.shared.transcode.contract import (
    HEARTBEAT,
    RenderRequest,
    Request,
    alive_key,
    queue_name,
)
from tessera.shared.transcode.lane import (
    BAD_REQUEST,
    MISSING,
    NATIVE,
    NOT_ACCEPTABLE,
    PUSH_IF_ALIVE,
    UNAVAILABLE,
    LaneAnswer,
    LaneJob,
    lane_alive_key,
    lane_key,
    lane_reply_key,
)

# A Redis that is down must give a prompt 503, not a request held for Celery's default
# ~20 reconnection attempts: few retries, short connect timeouts (seconds).
_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def celery_client(settings: Settings) -> celery.Celery:
    """A Celery app that only sends transcode tasks and reads their results."""
    app = celery.Celery("tessera", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_publish_retry_policy=_RETRY,
        broker_connection_timeout=2.0,
        redis_socket_connect_timeout=2.0,
        result_backend_transport_options={"retry_policy": _RETRY},
    )
    return app


def _unreachable(exc: BaseException) -> bool:
    """A connection failure to Redis, as the publisher or the result consumer report it
    (the Redis result consumer wraps it in a RuntimeError "must be restarted")."""
    errors = (
        kombu.exceptions.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        OSError,
    )
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, errors):
        return True
    return isinstance(exc, errors)


LANE_TIMEOUT = 15.0


class _NoWorker(Exception):
    pass


class TranscodeClient:
    """Sends requests to the transcode queue of ``settings.shard``."""

    def __init__(self, settings: Settings, app: celery.Celery | None = None) -> None:
        self.timeout = settings.transcode_timeout
        self.shard = settings.shard
        self.queue = queue_name(settings.shard)
        self.app = app if app is not None else celery_client(settings)
        self.redis = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self.redis_url = settings.redis_url
        self.lane = settings.transcode_lane
        # a rendering of an uncompressed image takes milliseconds to a second or two, and
        # a lane job lost with its worker is never answered: no longer than this
        self.lane_timeout = min(self.timeout, LANE_TIMEOUT)
        self._async: aioredis.Redis | None = None  # the lane's, made on first use

    def _check_alive(self) -> None:
        if not self.redis.exists(alive_key(self.shard)):
            raise _NoWorker(f"no transcode worker of shard {self.shard} is running")

    async def key_of(self, request: Request) -> str:
        """Run ``request`` on a worker; the storage key of its result."""
        what = request.describe()
        timeout = self.timeout

        def run() -> object:
            self._check_alive()
            result = self.app.send_task(request.task, args=(request.to_json(),), queue=self.queue)
            deadline = time.monotonic() + timeout
            try:
                while True:  # in slices, so that a worker gone meanwhile is noticed
                    left = deadline - time.monotonic()
                    try:
                        value = result.get(timeout=max(0.01, min(HEARTBEAT, left)))
                        break
                    except celery.exceptions.TimeoutError:
                        if left <= HEARTBEAT:
                            raise
                        self._check_alive()
                result.forget()
                return value
            finally:
                # unsubscribe now, while the client is open: a result given up on
                # would do it when collected, reconnecting a closed client
                with contextlib.suppress(Exception):
                    self.app.backend.remove_pending_result(result)

        try:
            value = await asyncio.to_thread(run)
        except _NoWorker as e:
            raise ServiceUnavailable(str(e), retry_after=5) from None
        except celery.exceptions.TimeoutError:
            raise ServiceUnavailable(
                f"{what} did not finish within {timeout:g}s", retry_after=5
            ) from None
        except ObjectNotFound:  # indexed, yet not in storage: ours to fix, not the client's
            raise TesseraError(
                f"{what}: the stored object {request.storage_key} is missing"
            ) from None
        except (NotAcceptable, NotFound):
            raise
        except Exception as e:
            if _unreachable(e):
                cause = e.__cause__ if isinstance(e, RuntimeError) else e
                raise ServiceUnavailable(
                    f"transcode queue unreachable: {cause}", retry_after=5
                ) from None
            raise TesseraError(
                f"{what} of {request.storage_key} failed: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(value, str) or not value:
            raise TesseraError(f"{what} returned no object key ({value!r})")
        return value

    async def render(
        self, request: RenderRequest, transfer_syntax: str | None
    ) -> tuple[str, bytes | None]:
        """The key of a rendering, and the rendering's bytes when the worker answered
        them (it writes the rendering to storage after: serve these). Through the render
        lane for an uncompressed image while a worker serves it (:mod:`.lane`), else as
        any request (:meth:`key_of`, no bytes)."""
        if self.lane and transfer_syntax in NATIVE:
            answered = await self._through_lane(request)
            if answered is not None:
                return answered
        return await self.key_of(request), None

    async def _through_lane(self, request: RenderRequest) -> tuple[str, bytes | None] | None:
        """The key the lane answered (with the bytes when it sent them), or None when no
        worker serves the lane."""
        if self._async is None:
            self._async = aioredis.from_url(
                self.redis_url, socket_timeout=self.timeout + 5, socket_connect_timeout=2.0
            )
        reply_to = lane_reply_key(self.shard, uuid.uuid4().hex)
        job = LaneJob(reply_to, request)
        try:
            pushed = await self._async.eval(
                PUSH_IF_ALIVE, 2, lane_alive_key(self.shard), lane_key(self.shard), job.dumps()
            )
            if not pushed:
                return None
            got = await self._lane_answer(reply_to)
        except RedisError as e:
            raise ServiceUnavailable(f"transcode queue unreachable: {e}", retry_after=5) from None
        what = request.describe()
        if got is None:
            raise ServiceUnavailable(
                f"{what} did not finish within {self.lane_timeout:g}s", retry_after=5
            )
        answer = LaneAnswer.loads(got)
        if answer.key:
            return answer.key, answer.body
        if answer.error == NOT_ACCEPTABLE:
            raise NotAcceptable(answer.reason)
        if answer.error == BAD_REQUEST:
            raise BadRequest(answer.reason)
        if answer.error == UNAVAILABLE:
            raise ServiceUnavailable(f"{what}: {answer.reason}", retry_after=5)
        if answer.error == MISSING:
            raise TesseraError(f"{what}: the stored object {request.storage_key} is missing")
        raise TesseraError(f"{what} of {request.storage_key} failed: {answer.reason}")

    async def _lane_answer(self, reply_to: str) -> bytes | str | None:
        """The answer on ``reply_to``; None when none came within ``lane_timeout``, or as
        soon as no worker serves the lane (killed, stopped: its job is lost with it)."""
        assert self._async is not None
        deadline = time.monotonic() + self.lane_timeout
        while (left := deadline - time.monotonic()) > 0:
            got = await self._async.blpop([reply_to], timeout=max(0.01, min(HEARTBEAT, left)))
            if got is not None:
                return got[1]
            if not await self._async.exists(lane_alive_key(self.shard)):
                return None
        return None

    def close(self) -> None:
        self.app.close()
        self.redis.close()

    async def aclose(self) -> None:
        self.close()
        if self._async is not None:
            await self._async.aclose()
