"""``tessera run`` (what ``make run`` starts) for the tests that kill its processes: a
started one on free ports, its log, and the PID of each of its processes."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.cluster import TesseraCluster, start_tessera
from tessera.local.processes import free_port


@contextmanager
def tessera_run(**env: str) -> Iterator[TesseraCluster]:
    """A running ``tessera run`` with its state in a new folder; ``env`` adds settings."""
    root = Path(tempfile.mkdtemp(prefix="tessera-run-"))
    root.chmod(0o711)  # the postgres user enters it when we are root
    ports = {
        name: str(free_port())
        for name in (
            "TESSERA_DIMSE_PORT",
            "TESSERA_DIMSE_HTTP_PORT",
            "TESSERA_INDEX_WORKER_PORT",
            "TESSERA_TRANSCODE_PORT",
            "TESSERA_SWEEPER_PORT",
        )
    }
    cluster = start_tessera(root, log_level="info", timeout=300, env={**ports, **env})
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def log(cluster: TesseraCluster) -> str:
    return cluster.log_path.read_text(errors="replace")


def pid_of(cluster: TesseraCluster, name: str) -> int:
    """The PID of the running ``name`` (a service, or ``redis`` / ``postgres``), from
    what the supervisor logged last about it."""
    if name == "postgres":
        pattern = r"PostgreSQL postgresql://\S+ \(pid (\d+)|started postgres again \(pid (\d+)\)"
    elif name == "redis":
        pattern = r"Redis redis://\S+ \(pid (\d+)|started redis again \(pid (\d+)\)"
    else:
        pattern = rf"started {re.escape(name)} \(pid (\d+)\)"
    found = re.findall(pattern, log(cluster))
    assert found, f"no pid of {name} in the log"
    last = found[-1]
    return int(next(p for p in last if p) if isinstance(last, tuple) else last)
