"""What the index worker's health server answers: readiness (its Redis and its
PostgreSQL answer) and the queue depth, read from the shard's stream when scraped.

Both run in the health server's own event loop (a thread beside the worker's), so they
open short-lived connections of their own instead of borrowing the worker's pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tessera.shared.health_server import HealthServer, probe_redis, redis_and_database
from tessera.shared.queue import GROUP, jobs_stream
from tessera.shared.settings import Settings


async def queue_families(settings: Settings) -> Iterable[Metric]:
    """``tessera_index_queue_depth``: jobs in the stream (waiting or being indexed: the
    worker deletes a job once acknowledged); ``tessera_index_queue_pending``: jobs
    delivered to a worker and not acknowledged yet."""
    stream = jobs_stream(settings.shard)
    async with probe_redis(settings.redis_url) as client:
        depth = int(await client.xlen(stream))
        pending = 0
        if depth:
            summary = await client.xpending(stream, GROUP)
            pending = int(summary["pending"])
    families = []
    for name, help_, value in (
        ("tessera_index_queue_depth", "Index jobs in the shard's stream", depth),
        ("tessera_index_queue_pending", "Index jobs delivered, not acknowledged", pending),
    ):
        family = GaugeMetricFamily(name, help_, labels=["shard"])
        family.add_metric([settings.shard], value)
        families.append(family)
    return families


def health_server(settings: Settings) -> HealthServer:
    """Bound now (a busy port fails the start); call ``start()`` to serve."""
    return HealthServer(
        settings.host,
        settings.index_worker_port,
        partial(redis_and_database, settings),
        partial(queue_families, settings),
        settings,
    )
