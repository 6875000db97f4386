"""``python -m tessera.transcode``: a transcode worker on its shard's queue.

Prefork pool, two processes: decoding is CPU-bound and much of pydicom/numpy holds the
GIL, so threads would not run conversions in parallel; a crash in a C decoder takes down
one child, not the worker (its task is redelivered, ``task_reject_on_worker_lost``).
The supervisor stops us by SIGTERM to this PID: the parent's warm shutdown lets
running tasks finish, then ends the children it owns.

Metrics: the children record in prometheus_client's multiprocess mode, into
``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless set, e.g. to an emptyDir
in Kubernetes); it must be set before prometheus_client is imported, hence the imports
inside :func:`main`. The parent serves ``/metrics`` (see :mod:`tessera.transcode.health`).
"""

import atexit
import os
import shutil
import tempfile


def main() -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="tessera-transcode-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)

    from tessera.shared import malloc
    from tessera.shared.metrics import clear_multiprocess_dir
    from tessera.shared.transcode import queue_name
    from tessera.transcode import health
    from tessera.transcode.celery_app import app
    from tessera.transcode.warm import warm_up

    clear_multiprocess_dir(folder)
    malloc.tune()  # decoded frames and renderings of 0.1-4 MiB (the children inherit it)
    warm_up()  # before any fork or thread: the children inherit what it loaded
    health.install(app)
    app.worker_main(
        [
            "worker",
            f"--loglevel={app.tessera_settings.log_level.upper()}",
            "--concurrency=2",
            "--pool=prefork",
            f"--queues={queue_name(app.tessera_settings.shard)}",
            "--hostname=transcode@%h",
        ]
    )


if __name__ == "__main__":
    main()
