"""Probes and metrics of the transcode worker (a Celery prefork worker, no HTTP of its own).

The Celery parent process serves ``/healthz``, ``/readyz`` (the broker, Redis, answers)
and ``/metrics`` on ``transcode_port`` from :data:`worker_init` on, so a liveness probe
sees the worker while it still waits for Redis. Tasks run in forked children: their
counts and run times are recorded through Celery's task signals in the child, in
prometheus_client's multiprocess mode (``python -m tessera.transcode`` sets
``PROMETHEUS_MULTIPROC_DIR`` before anything imports prometheus_client), and the parent's
``/metrics`` adds them up. Each child closes its inherited copy of the listening socket.
The queue depth (messages waiting in the ``transcode`` list of the broker) is read from
Redis when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from celery import Celery, signals
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tessera.shared import metrics
from tessera.shared.health_server import HealthServer, probe_redis
from tessera.shared.settings import Settings
from tessera.shared.transcode import queue_name
from tessera.transcode.celery_app import settings_of

# kombu's Redis transport keeps a queue as one list per priority step: the queue's own
# name for priority 0, then name + "\x06\x16" + step (kombu.transport.redis).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


async def ready(settings: Settings) -> dict[str, str]:
    async with probe_redis(settings.redis_url) as client:
        await client.ping()
    return {"redis": "ok"}


async def queue_families(settings: Settings) -> Iterable[Metric]:
    """``tessera_transcode_queue_depth``: tasks waiting in the broker, not yet taken."""
    async with probe_redis(settings.redis_url) as client, client.pipeline(transaction=False) as p:
        for key in queue_keys(queue_name(settings.shard)):
            p.llen(key)
        depth = sum(int(n) for n in await p.execute())
    family = GaugeMetricFamily(
        "tessera_transcode_queue_depth", "Transcode tasks waiting in the broker", labels=["shard"]
    )
    family.add_metric([settings.shard], depth)
    return [family]


class _State:
    server: HealthServer | None = None
    started: dict[str, float] = {}  # noqa: RUF012  # task id -> perf_counter, per process


def _task_prerun(task_id: str = "", **_: Any) -> None:
    _State.started[task_id] = time.perf_counter()


def _task_postrun(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    start = _State.started.pop(task_id, None)
    name = getattr(task, "name", None) or "unknown"
    metrics.TRANSCODE_TASKS.labels(name, state or "UNKNOWN").inc()
    if start is not None:
        metrics.TRANSCODE_TASK_LATENCY.labels(name).observe(time.perf_counter() - start)


def install(app: Celery) -> None:
    """Record task metrics, and serve the probes from the worker's start to its end."""
    settings = settings_of(app)

    def start_server(**_: Any) -> None:
        server = HealthServer(
            settings.host,
            settings.transcode_port,
            partial(ready, settings),
            partial(queue_families, settings),
            settings,
        )
        _State.server = server.start()

    def in_child(**_: Any) -> None:
        if _State.server is not None:
            _State.server.forget_in_child()
            _State.server = None

    def stop_server(**_: Any) -> None:
        if _State.server is not None:
            _State.server.stop()
            _State.server = None

    signals.task_prerun.connect(_task_prerun, weak=False, dispatch_uid="tessera-metrics-pre")
    signals.task_postrun.connect(_task_postrun, weak=False, dispatch_uid="tessera-metrics-post")
    signals.worker_init.connect(start_server, weak=False, dispatch_uid="tessera-health-start")
    signals.worker_process_init.connect(in_child, weak=False, dispatch_uid="tessera-health-child")
    signals.worker_shutdown.connect(stop_server, weak=False, dispatch_uid="tessera-health-stop")
