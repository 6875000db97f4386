"""The two workers without an HTTP API of their own answer probes and ``/metrics``.

Each worker runs as its real command (``python -m tessera.index.worker``, ``python -m
tessera.transcode``: a Celery prefork pool whose children record in prometheus_client's
multiprocess mode) against the session's PostgreSQL and Redis, does real work, and its
``/metrics`` is read over HTTP. The scrape-time queue depths are also checked against
queues filled by hand, with no worker taking from them.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from tessera.index.worker_health import queue_families as index_queue_families
from tessera.local import child_kwargs
from tessera.local.processes import free_port
from tessera.shared.messages import IndexInstance, IndexJob
from tessera.shared.queue import IndexConsumer, IndexQueue, reply_key
from tessera.shared.settings import Settings
from tessera.shared.storage import instance_key, open_store
from tessera.shared.transcode import TRANSCODE_TASK as TASK_NAME
from tessera.shared.transcode import TranscodeRequest, queue_name
from tessera.transcode.celery_app import create_app as create_transcode_app
from tessera.transcode.health import queue_families as transcode_queue_families

CORPUS = Path(__file__).parents[1] / "data" / "corpus" / "TransferSyntaxes"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sample(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, frozenset(labels.items())))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """Start ``python -m module`` with these settings; stopped (SIGTERM) after the test."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(module: str, settings: Settings, port: int) -> str:
        log = tmp_path / f"{module}.log"
        env = {**os.environ, **settings.env()}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                **child_kwargs(signal.SIGTERM),  # type: ignore[arg-type]
            )
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{module} not ready: {log.read_text()[-3000:]}")

    yield run
    for proc, _log in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _job(reply_to: str) -> IndexJob:
    uid = f"2.25.{uuid.uuid4().int}"
    inst = IndexInstance(
        study_instance_uid=uid + ".1",
        series_instance_uid=uid + ".2",
        sop_instance_uid=uid + ".3",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
        transfer_syntax_uid=EXPLICIT_LE,
        storage_key=f"instances/00/00/{uuid.uuid4().hex}.dcm",
        size=10,
        sha256="0" * 64,
        metadata={"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Metrics^Test"}]}},
    )
    return IndexJob(job_id=uuid.uuid4().hex, reply_to=reply_to, instances=(inst,))


async def test_index_worker_serves_probes_and_metrics(start, database: str, redis_db: str) -> None:
    shard = "metrics-" + uuid.uuid4().hex[:8]
    port = free_port()
    settings = Settings(
        shard=shard, database_url=database, redis_url=redis_db, index_worker_port=port
    )
    url = await asyncio.to_thread(start, "tessera.index.worker", settings, port)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).json() == {
            "status": "ready",
            "redis": "ok",
            "database": "ok",
        }
        assert (await http.get("/healthz")).status_code == 200

    client = aioredis.from_url(redis_db)
    try:
        queue = IndexQueue(client, shard)
        reply_to = reply_key(shard, uuid.uuid4().hex)
        for _ in range(3):
            await queue.send(_job(reply_to))
        replies = await queue.wait_replies(reply_to, 3, 30)
        assert [r.outcomes[0].outcome for r in replies] == ["stored"] * 3
    finally:
        await client.aclose()

    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    assert _sample(text, "tessera_index_jobs_total", result="processed") == 3
    assert (_sample(text, "tessera_index_batch_duration_seconds_count") or 0) >= 1
    assert _sample(text, "tessera_index_queue_depth", shard=shard) == 0
    assert _sample(text, "tessera_index_queue_pending", shard=shard) == 0


async def test_index_queue_depth_counts_waiting_and_pending_jobs(redis_db: str) -> None:
    shard = "depth-" + uuid.uuid4().hex[:8]
    client = aioredis.from_url(redis_db)
    try:
        queue = IndexQueue(client, shard)
        consumer = IndexConsumer(client, shard, "w1")
        await consumer.ensure_group()
        for _ in range(3):
            await queue.send(_job("nobody"))
        assert len(await consumer.read(1, block=0.1)) == 1  # delivered, not acknowledged
    finally:
        await client.aclose()
    families = await index_queue_families(Settings(shard=shard, redis_url=redis_db))
    values = {f.name: f.samples[0].value for f in families}
    assert values == {"tessera_index_queue_depth": 3, "tessera_index_queue_pending": 1}


async def test_transcode_worker_counts_tasks_of_its_prefork_children(
    start, redis_db: str, tmp_path: Path
) -> None:
    url_db = redis_db
    port = free_port()
    settings = Settings(
        redis_url=url_db, storage_url=(tmp_path / "objects").as_uri(), transcode_port=port
    )
    data = (CORPUS / f"{EXPLICIT_LE}.dcm").read_bytes()
    key = instance_key(hashlib.sha256(data).hexdigest())
    store = open_store(settings)
    try:
        await store.put_bytes(key, data)
    finally:
        await store.close()

    url = await asyncio.to_thread(start, "tessera.transcode", settings, port)
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/readyz")).json() == {"status": "ready", "redis": "ok"}

    app = create_transcode_app(settings)
    try:
        for _ in range(2):
            result = app.send_task(TASK_NAME, args=(TranscodeRequest(key, IMPLICIT_LE).to_json(),))
            derived = await asyncio.to_thread(result.get, timeout=60)
            result.forget()
            assert isinstance(derived, str) and derived != key
    finally:
        app.close()

    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    assert _sample(text, "tessera_transcode_tasks_total", task=TASK_NAME, state="SUCCESS") == 2
    seconds = _sample(text, "tessera_transcode_task_duration_seconds_count", task=TASK_NAME)
    assert seconds == 2
    assert _sample(text, "tessera_transcode_queue_depth", shard=settings.shard) == 0


async def test_transcode_queue_depth_is_the_length_of_the_broker_queue(redis_db: str) -> None:
    url_db = redis_db
    client = aioredis.from_url(url_db)
    try:
        queue = queue_name("shard-7")
        await client.lpush(queue, "a", "b")
        await client.lpush(f"{queue}\x06\x163", "c")  # kombu's list for priority 3
        await client.lpush(queue_name("shard-8"), "another shard's")
        families = await transcode_queue_families(Settings(redis_url=url_db, shard="shard-7"))
        assert [f.samples[0].value for f in families] == [3]
    finally:
        await client.aclose()


def test_deploy_probe_pings_redis_for_the_rebalance_worker(redis_url: str) -> None:
    """deploy/probe.py's redis:// check (the rebalance worker's health check)."""
    import importlib.util

    path = Path(__file__).parents[2] / "deploy" / "probe.py"
    spec = importlib.util.spec_from_file_location("tessera_probe", path)
    assert spec is not None and spec.loader is not None
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.main([redis_url]) == 0
    assert probe.main([f"redis://127.0.0.1:{free_port()}/0"]) == 1  # nothing listens
