"""Several processes on one port (issue 12: ``TESSERA_ROUTER_WORKERS``, ``_INGEST_``,
``_RETRIEVE_``): the router started with two workers serves from both, a worker killed
is started again while the other one keeps answering, and SIGTERM ends them all."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tessera.local import free_port, spawn, wait_until


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_router_workers_share_a_port_and_are_restarted() -> None:
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="tessera-workers-")) / "router.log"
    env = {
        **os.environ,
        "TESSERA_ROUTER_PORT": str(port),
        "TESSERA_ROUTER_WORKERS": "2",
        "TESSERA_LOG_LEVEL": "warning",
    }
    proc = spawn([sys.executable, "-m", "tessera.router"], log, env=env)
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_until(lambda: healthy(url) and len(children(proc.pid)) == 2, proc, "router", log)
        first = children(proc.pid)
        # connections are spread over both (each keeps its own; several clients)
        for _ in range(20):
            with httpx.Client() as client:
                assert client.get(url).status_code == 200
        os.kill(first[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while True:
            assert healthy(url), "the other worker stopped answering"
            now = children(proc.pid)
            if len(now) == 2 and first[0] not in now:
                break
            assert time.monotonic() < deadline, f"not started again: {now}"
            time.sleep(0.2)
        assert first[1] in now
        wait_until(lambda: healthy(url), proc, "router", log)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]
    assert not healthy(url)
