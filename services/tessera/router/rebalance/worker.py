"""``python -m tessera.router.rebalance``: the worker that runs rebalance jobs (Celery).

Broker: the router's Redis (``router_redis_url``), queue ``rebalance``. One task,
``tessera.router.rebalance.run(job_id)``, runs or resumes a job
(:mod:`tessera.router.rebalance.job`) from its rows in the router database: the task
holds no state of its own. It is acknowledged after it ends (``acks_late``) and
re-queued if its worker process is lost (``task_reject_on_worker_lost``); when a worker
starts, it also queues every unfinished job, so a job whose worker was SIGKILLed goes on
as soon as a worker is back, without waiting for the broker's visibility timeout. A job
already running elsewhere answers ``busy`` (an advisory lock), so duplicates are
harmless. An error that is not a study's own (a shard or the registry down) retries the
task every ``RETRY_DELAY`` seconds.

The worker runs one job at a time (``--pool=solo``); a job copies
``rebalance_concurrency`` studies at once with asyncio and locks, releases and deletes
them in batches of up to ``rebalance_switch_studies`` (:mod:`.batch`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from celery import Celery, Task
from celery.signals import worker_ready

from tessera.router.rebalance.job import run_job, unfinished_jobs
from tessera.shared.jobs import REBALANCE_QUEUE, REBALANCE_TASK
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)

QUEUE = REBALANCE_QUEUE
TASK = REBALANCE_TASK
RETRY_DELAY = 10


def create_app(settings: Settings) -> Celery:
    """The Celery app of the rebalance worker (and of those who queue jobs)."""
    app = Celery("tessera-rebalance", broker=settings.router_redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
    )

    # shared=False: not also added to every other Celery app of the process (the
    # transcode app in tests), where a second create_app() would register it twice
    @app.task(name=TASK, bind=True, max_retries=None, shared=False)
    def run(self: Task, job_id: int) -> str:
        try:
            state = asyncio.run(run_job(settings, job_id))
        except Exception as e:
            log.warning("rebalance job %s: %s; retrying in %ss", job_id, e, RETRY_DELAY)
            raise self.retry(countdown=RETRY_DELAY) from e
        log.info("rebalance job %s: %s", job_id, state)
        return state

    return app


def enqueue(settings: Settings, job_id: int) -> None:
    """Queue job ``job_id`` for a rebalance worker."""
    create_app(settings).send_task(TASK, args=[job_id], queue=QUEUE)


def main() -> None:
    settings = Settings.from_env()
    if not settings.router_database_url:
        raise SystemExit("TESSERA_ROUTER_DATABASE_URL is not set: there is no shard registry")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)

    def resume(**_: Any) -> None:
        for job_id in asyncio.run(unfinished_jobs(settings)):
            log.info("resuming rebalance job %s", job_id)
            app.send_task(TASK, args=[job_id], queue=QUEUE)

    worker_ready.connect(resume, weak=False)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level.upper()}",
            "--pool=solo",
            f"--queues={QUEUE}",
            "--hostname=rebalance@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
