"""``tessera run`` (what ``make run`` starts) as a supervisor (issue 15): SIGKILL of
PostgreSQL, of Redis or of a service is reported, the process is started again, and the
archive answers again without anyone restarting it by hand."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from bench.cluster import TesseraCluster
from tests.support.dicomgen import make_instance, multipart
from tests.support.make_run import log, pid_of, tessera_run


@pytest.fixture(scope="module")
def run() -> Iterator[TesseraCluster]:
    with tessera_run() as cluster:
        yield cluster


def wait_for(cluster: TesseraCluster, text: str, count: int = 1, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while log(cluster).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{log(cluster)[-3000:]}"
        time.sleep(0.2)


def answers(cluster: TesseraCluster, timeout: float = 90) -> None:
    """A STOW-RS of a new instance, then a QIDO-RS that finds it, succeed (retried while
    the archive reconnects)."""
    sop = None
    deadline = time.monotonic() + timeout
    while True:
        body, ctype = multipart([make_instance()])
        try:
            r = httpx.post(cluster.dicomweb_url + "/studies", content=body,
                           headers={"Content-Type": ctype}, timeout=30)  # fmt: skip
            if r.status_code == 200:
                sop = r.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
                found = httpx.get(cluster.dicomweb_url + "/instances",
                                  params={"SOPInstanceUID": sop}, timeout=30)  # fmt: skip
                if found.status_code == 200 and found.json():
                    return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"the archive does not answer:\n{log(cluster)[-3000:]}"
        time.sleep(1.0)


def test_a_killed_service_is_started_again(run: TesseraCluster) -> None:
    answers(run)
    before = log(run).count("started index (pid")
    os.kill(pid_of(run, "index"), signal.SIGKILL)
    wait_for(run, "index (pid", 1)
    wait_for(run, "started index (pid", before + 1)
    assert "EXITED with code" in log(run)
    answers(run)


def test_a_killed_postgresql_is_started_again(run: TesseraCluster) -> None:
    os.kill(pid_of(run, "postgres"), signal.SIGKILL)
    wait_for(run, "postgres is not running: starting it again")
    wait_for(run, "started postgres again")
    answers(run)


def test_a_killed_redis_is_started_again(run: TesseraCluster) -> None:
    os.kill(pid_of(run, "redis"), signal.SIGKILL)
    wait_for(run, "redis is not running: starting it again")
    wait_for(run, "started redis again")
    answers(run, timeout=120)


def test_a_stalled_redis_takes_no_service_down(run: TesseraCluster) -> None:
    """Redis stopped for 8 s (SIGSTOP, then SIGCONT): every service keeps running (the
    index worker used to exit), and the archive answers once Redis is back."""
    answers(run)
    started = {name: log(run).count(f"started {name} (pid")
               for name in ("ingest", "index", "index-worker", "retrieve", "router")}  # fmt: skip
    pid = pid_of(run, "redis")  # the Redis running now
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(8)
    finally:
        os.kill(pid, signal.SIGCONT)
    answers(run)
    for name, count in started.items():
        assert log(run).count(f"started {name} (pid") == count, f"{name} was restarted"
