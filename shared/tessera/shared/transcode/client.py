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

import celery
import celery.exceptions
import kombu.exceptions
import redis.exceptions

from tessera.shared.errors import (
    NotAcceptable,
    NotFound,
    ObjectNotFound,
    ServiceUnavailable,
    TesseraError,
)
from tessera.shared.settings import Settings
from tessera.shared.transcode.contract import HEARTBEAT, Request, alive_key, queue_name

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

    def close(self) -> None:
        self.app.close()
        self.redis.close()
