"""The whole single-shard cluster as separate OS processes, for end-to-end tests.

Each service runs as ``python -m tessera.<service>`` with its settings in TESSERA_*
variables, exactly as ``make run`` starts it, so a test can SIGKILL one of them and
start it again. Logs go to one file per service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tessera.local import child_kwargs
from tessera.local.cli import SHARD_SERVICES
from tessera.local.processes import free_port
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.settings import Settings

# every service's module, as `tessera run` starts them
COMMANDS: dict[str, str] = {**SHARD_SERVICES, "router": "tessera.router", "dimse": "tessera.dimse"}
# what start_all starts unless told: a single-shard DICOMweb archive (no DIMSE gateway,
# no sweeper: the tests that need them start them)
CORE = [name for name in COMMANDS if name not in ("dimse", "sweeper")]
PORTS = {
    "dimse": "dimse_http_port",
    "ingest": "ingest_port",
    "index": "index_port",
    "retrieve": "retrieve_port",
    "router": "router_port",
    # the workers' /healthz, /readyz and /metrics
    "index-worker": "index_worker_port",
    "transcode": "transcode_port",
    "sweeper": "sweeper_port",
}


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a service process started with ``settings``."""
    return {**os.environ, **settings.env()}


@dataclass
class Cluster:
    settings: Settings
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.router_port}{self.settings.dicomweb_prefix}"

    def service_url(self, name: str) -> str:
        return f"http://127.0.0.1:{getattr(self.settings, PORTS[name])}"

    def start(self, name: str, **overrides: object) -> None:
        env = child_env(self.settings)
        env.update({f"TESSERA_{k.upper()}": str(v) for k, v in overrides.items()})
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", COMMANDS[name]],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **child_kwargs(signal.SIGTERM),  # type: ignore[arg-type]  # dies with pytest
        )
        log.close()

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            if name not in PORTS:
                time.sleep(1.0)  # no HTTP endpoint: alive for a moment is ready enough
                if proc.poll() is None:
                    return
                continue
            try:
                if httpx.get(self.service_url(name) + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} not ready in {timeout}s:\n{self.log(name)}")

    def start_all(self, names: list[str] | None = None) -> None:
        names = CORE if names is None else names
        for name in names:
            self.start(name)
        for name in names:
            self.wait_ready(name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name, signal.SIGTERM)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else "(no log)"


def quick_shard_settings(
    s3_settings: dict[str, str], bucket: str, workdir: Path, **values: Any
) -> Settings:
    """:func:`shard_settings` for a shard under test: objects in ``bucket`` on the S3 API
    server, spooling early, short index timeouts (a killed worker's jobs come back in 2 s)."""
    return shard_settings(
        storage_url=f"s3://{bucket}",
        **s3_settings,
        spool_threshold=256 * 1024,
        spool_dir=str(workdir),
        index_timeout=8.0,
        index_claim_idle=2.0,
        **values,
    )


def shard_settings(**values: Any) -> Settings:
    """Settings of one shard whose services listen on free ports (every ``*_port`` field,
    health ports included), with the router pointing at them; ``values`` for the rest."""
    ports = {f.name: free_port() for f in fields(Settings) if f.name.endswith("_port")}
    ports.update({k: v for k, v in values.items() if k.endswith("_port")})
    return Settings(
        **{
            "ingest_url": f"http://127.0.0.1:{ports['ingest_port']}",
            "index_url": f"http://127.0.0.1:{ports['index_port']}",
            "retrieve_url": f"http://127.0.0.1:{ports['retrieve_port']}",
            **ports,
            **values,
        }
    )


def start_cluster(
    make_settings: Callable[[], Settings], workdir: Path, names: list[str] | None = None
) -> Cluster:
    """Every service (of ``names``, default :data:`CORE`) started and ready; retried with
    new ports, because a free port can be taken by another process before it is bound."""
    for attempt in range(3):
        cluster = Cluster(make_settings(), workdir)
        try:
            cluster.start_all(names)
            return cluster
        except RuntimeError:
            cluster.stop_all()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def migrated_database(postgres_dsn: str, prefix: str) -> AsyncIterator[str]:
    """A new database on the test PostgreSQL with the shard schema; dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres_dsn)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    dsn = postgres_dsn.rsplit("/", 1)[0] + "/" + name
    try:
        await apply_migrations(dsn)
        yield dsn
    finally:
        conn = await asyncpg.connect(postgres_dsn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
