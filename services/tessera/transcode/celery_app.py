"""The Celery app of the transcode workers (and the contract retrieve sends to).

Broker and result backend are the shard's Redis (``settings.redis_url``). Tasks are
acknowledged after they finish (``task_acks_late``) and one at a time per worker process
(``worker_prefetch_multiplier=1``): a conversion can take seconds. A task whose worker
process dies mid-way (a decoder crashing on a hostile file) is NOT redelivered: it fails
with WorkerLostError and the retrieve that asked answers with an error, instead of the
same file killing worker after worker forever. A time limit bounds a decoder that hangs.
Results live an hour; the caller reads its result once and forgets it.

Callers send by name, without importing this package: the task names, the shard's
queue and the request types are the contract in :mod:`tessera.shared.transcode`.
"""

from __future__ import annotations

import sys

from celery import Celery, signals

from tessera.shared.settings import Settings
from tessera.shared.transcode import queue_name

# pydicom reads sequences recursively. Ingest accepts what it can parse within Python's
# default limit (1000 frames) at the shallow stack of its event loop; a task runs under
# Celery's deeper stack, so the same data set could exceed the limit here and fail a
# read of stored data (issue 15). Three times the default keeps every accepted data set
# decodable, well inside the 8 MiB C stack; past it, tessera.transcode.bad_data.refused_as
# answers 406 with the reason.
RECURSION_LIMIT = 3000
sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))


class TranscodeCelery(Celery):
    """A Celery app that carries the Tessera settings its tasks run with."""

    tessera_settings: Settings


def create_app(settings: Settings) -> TranscodeCelery:
    app = TranscodeCelery(
        "tessera",
        broker=settings.redis_url,
        backend=settings.redis_url,
        include=[
            "tessera.transcode.tasks",
            "tessera.transcode.render_tasks",
            "tessera.transcode.frames",
        ],
    )
    app.tessera_settings = settings
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_time_limit=max(int(settings.transcode_timeout * 2), 30),
        worker_prefetch_multiplier=1,
        result_expires=3600,
        task_default_queue=queue_name(settings.shard),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # the future default: a task running when the broker connection drops is
        # cancelled (its message is redelivered, as it was never acknowledged)
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    from tessera.transcode.heartbeat import Heartbeat
    from tessera.transcode.lane import Lane

    app.steps["worker"].add(Heartbeat)
    app.steps["worker"].add(Lane)  # first renderings of uncompressed images, no Celery
    return app


def _close_task_loops(**_: object) -> None:
    from tessera.transcode.cache import close_loops

    close_loops()


# the tasks' event loops and clients (tessera.transcode.cache.run) end with the worker
signals.worker_process_shutdown.connect(_close_task_loops, weak=False)
signals.worker_shutdown.connect(_close_task_loops, weak=False)


def settings_of(app: Celery) -> Settings:
    """The settings a task's app was created with (by :func:`create_app`)."""
    settings = getattr(app, "tessera_settings", None)
    if not isinstance(settings, Settings):
        raise RuntimeError("transcode tasks run only in an app made by create_app(settings)")
    return settings


app = create_app(Settings.from_env())
