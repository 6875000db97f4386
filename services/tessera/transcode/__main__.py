"""``python -m tessera.transcode``: a transcode worker on the ``transcode`` queue.

Prefork pool, two processes: decoding is CPU-bound and much of pydicom/numpy holds the
GIL, so threads would not run conversions in parallel; a crash in a C decoder takes down
one child, not the worker (its task is redelivered, ``task_reject_on_worker_lost``).
The supervisor stops us by SIGTERM to this PID: the parent's warm shutdown lets
running tasks finish, then ends the children it owns.
"""

from tessera.transcode.celery_app import QUEUE, app


def main() -> None:
    app.worker_main(
        [
            "worker",
            f"--loglevel={app.tessera_settings.log_level.upper()}",
            "--concurrency=2",
            "--pool=prefork",
            f"--queues={QUEUE}",
            "--hostname=transcode@%h",
        ]
    )


if __name__ == "__main__":
    main()
