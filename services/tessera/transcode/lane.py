"""The worker's side of the render lane (:mod:`tessera.shared.transcode.lane`).

A Celery bootstep of the worker blueprint, as the heartbeat is: :data:`THREADS` threads
of the worker's main process pop :class:`~tessera.shared.transcode.lane.LaneJob`\\ s from
the shard's lane, render each with :func:`~tessera.transcode.render_tasks.render_object`
(the Celery task's own code: the same storage cache and lock) on the thread's loop
(:func:`tessera.transcode.cache.run`), and push the answer: a rendering made for the job
goes back in it at once, and is written to storage after. While they run they renew the
lane's alive key; a worker stopped, killed or cut from Redis lets it expire, and retrieve
sends through Celery again. Only uncompressed images come this way (retrieve's choice),
so no decoder that could crash on hostile data runs in this process.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import bootsteps

from tessera.shared.errors import BadRequest, NotAcceptable, NotFound, ObjectNotFound
from tessera.shared.settings import Settings
from tessera.shared.transcode.contract import ALIVE_TTL, HEARTBEAT
from tessera.shared.transcode.lane import (
    BAD_REQUEST,
    FAILED,
    MISSING,
    NOT_ACCEPTABLE,
    REPLY_TTL,
    UNAVAILABLE,
    LaneAnswer,
    LaneJob,
    lane_alive_key,
    lane_key,
)

log = logging.getLogger(__name__)

THREADS = 2
POP_TIMEOUT = 1  # seconds a thread waits for a job before it renews the alive key


def answer(settings: Settings, job: LaneJob, reply: Callable[[LaneAnswer], None]) -> None:
    """Render ``job`` (or find it rendered) and ``reply`` once: with the rendering itself
    as soon as it is made (it is written to storage after), else with its key, or with the
    error retrieve maps."""
    from tessera.transcode.cache import run
    from tessera.transcode.render_tasks import render_object

    req = job.request
    replied = False

    def early(key: str, rendering: bytes) -> None:
        nonlocal replied
        reply(LaneAnswer(key=key, body=rendering))
        replied = True

    try:
        key = run(
            settings,
            render_object(settings, req.storage_key, req.frame_number, req.params, early),
        )
        done = LaneAnswer(key=key)
    except NotAcceptable as e:
        done = LaneAnswer(error=NOT_ACCEPTABLE, reason=e.reason)
    except BadRequest as e:
        done = LaneAnswer(error=BAD_REQUEST, reason=e.reason)
    except (ObjectNotFound, NotFound) as e:
        done = LaneAnswer(error=MISSING, reason=str(e))
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:  # Redis, storage away
        log.warning("%s of %s: %s", req.describe(), req.storage_key, e)
        done = LaneAnswer(error=UNAVAILABLE, reason=f"{type(e).__name__}: {e}")
    except Exception as e:
        log.exception("%s of %s failed", req.describe(), req.storage_key)
        done = LaneAnswer(error=FAILED, reason=f"{type(e).__name__}: {e}")
    if not replied:
        reply(done)
    elif done.error:  # answered with the rendering, then not stored: made again next time
        log.warning("%s of %s answered but not stored: %s", req.describe(), req.storage_key,
                    done.reason)  # fmt: skip


def _replier(client: redis.Redis, reply_to: str) -> Callable[[LaneAnswer], None]:
    def reply(done: LaneAnswer) -> None:
        with client.pipeline(transaction=True) as p:
            p.rpush(reply_to, done.dumps())
            p.expire(reply_to, REPLY_TTL)
            p.execute()

    return reply


class Lane(bootsteps.StartStopStep):
    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, worker: Any) -> None:
        settings: Settings = worker.app.tessera_settings
        if not settings.transcode_lane:
            return
        self._stop.clear()
        for n in range(THREADS):
            thread = threading.Thread(
                target=self._serve, args=(settings,), name=f"tessera-lane-{n}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self, settings: Settings) -> None:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=POP_TIMEOUT + HEARTBEAT,
            socket_connect_timeout=HEARTBEAT,
        )
        lane, alive = lane_key(settings.shard), lane_alive_key(settings.shard)
        me = socket.gethostname()
        renewed = 0.0
        try:
            while not self._stop.is_set():
                try:
                    if time.monotonic() - renewed >= HEARTBEAT:
                        client.set(alive, me, ex=ALIVE_TTL)
                        renewed = time.monotonic()
                    popped = client.brpop([lane], timeout=POP_TIMEOUT)
                    if popped is None:
                        continue
                    try:
                        job = LaneJob.loads(popped[1])
                    except Exception as e:  # a message of another version: nobody waits
                        log.error("dropping an unreadable lane job: %s", e)
                        continue
                    answer(settings, job, _replier(client, job.reply_to))
                except redis.RedisError as e:  # Redis away: the alive key expires meanwhile
                    log.warning("render lane: %s", e)
                    self._stop.wait(HEARTBEAT)
        finally:
            from tessera.transcode.cache import close_own_loop

            close_own_loop()
            client.close()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(POP_TIMEOUT + HEARTBEAT * 2)
        self._threads = []

    def terminate(self, worker: Any) -> None:
        self.stop(worker)
