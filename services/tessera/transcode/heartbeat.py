"""The worker's heartbeat: while a transcode worker consumes its shard's queue, a thread
of its main process renews :func:`~tessera.shared.transcode.contract.alive_key` every
``HEARTBEAT`` seconds. A worker killed, stopped (SIGSTOP) or cut from Redis stops
renewing it, and within ``ALIVE_TTL`` seconds senders answer 503 at once instead of
waiting ``transcode_timeout`` for a task no worker takes.

A Celery bootstep of the worker blueprint, so it runs in every worker of the app: the
prefork one of ``python -m tessera.transcode`` and the threaded ones tests start.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import redis
from celery import bootsteps

from tessera.shared.transcode.contract import ALIVE_TTL, HEARTBEAT, alive_key

log = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):
    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        settings = worker.app.tessera_settings
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=HEARTBEAT, socket_connect_timeout=HEARTBEAT
        )
        key, me = alive_key(settings.shard), socket.gethostname()
        self._stop.clear()

        def beat() -> None:
            while not self._stop.is_set():
                try:
                    client.set(key, me, ex=ALIVE_TTL)
                except redis.RedisError as e:  # Redis away: the key expires, as it should
                    log.warning("transcode heartbeat not written: %s", e)
                self._stop.wait(HEARTBEAT)
            client.close()

        self._thread = threading.Thread(target=beat, name="tessera-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(HEARTBEAT * 2)
            self._thread = None

    def terminate(self, worker: Any) -> None:  # a cold shutdown ends the beat too
        self.stop(worker)
