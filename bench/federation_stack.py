"""A federation for the benchmark: N shards behind a router, as real processes.

:func:`start_group` starts, in a folder of its own, one PostgreSQL (a database per shard
and one for the router's registry) and one Redis (a database number per shard; the
rebalance worker's broker in the last one), plans every shard's settings with the
project's own :func:`tessera.local.federation.plan` (what ``tessera run --shards N``
runs) and registers the shards ``active`` with :func:`~tessera.local.federation.prepare`.
Then it starts, for each shard, only the services the measurement needs (QIDO needs
the index service alone; STOW-RS needs ingest, index and the index worker; a rebalance
also needs retrieve), plus one router and, when asked, the rebalance worker.

``spare`` shards are planned, their databases created and migrated and their services
started, but they are NOT registered: the rebalance bench adds them with ``shardctl``.
Services log at ``warning`` so that logging is not what gets measured. ``close()`` stops
the processes it started (by PID, in reverse order), then Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tessera.local import ServerProcess, free_port, spawn, wait_until
from tessera.local import federation as local_federation
from tessera.local.cli import SHARD_SERVICES
from tessera.local.processes import start_postgres, start_redis
from tessera.shared.db.migrate import apply_migrations
from tessera.shared.settings import Settings

MODULES = {**SHARD_SERVICES, "router": "tessera.router", "rebalance": "tessera.router.rebalance"}
HTTP_PORT = {"ingest": "ingest_port", "index": "index_port", "retrieve": "retrieve_port",
             "router": "router_port"}  # fmt: skip
QIDO_SERVICES = ("index",)
STOW_SERVICES = ("ingest", "index", "index-worker")
MOVE_SERVICES = ("ingest", "index", "index-worker", "retrieve")


class Service(ServerProcess):
    """One started service process."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, name: str, url: str) -> None:
        super().__init__(proc, log_path)
        self.name = name
        self.url = url

    def wait(self, path: str, timeout: float) -> None:
        """Until ``GET url + path`` answers 200; raises with the log tail if it exits."""
        wait_until(lambda: _answers(self.url + path), self._proc, self.name, self.log_path,
                   timeout)  # fmt: skip


def _answers(url: str) -> bool:
    """200, or 204 (a search of an empty archive, PS3.18 8.3.4.4.1)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return answer.status in (200, 204)
    except OSError:
        return False


@dataclass
class Group:
    """A running federation: the router's settings and URL, each shard's settings."""

    folder: Path
    router: Settings
    shards: list[Settings]  # registered ones
    spares: list[Settings]  # started, not registered
    services: list[Service] = field(default_factory=list)
    stack: ExitStack = field(default_factory=ExitStack)

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router.router_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.router_url + self.router.dicomweb_prefix

    def start(self, name: str, settings: Settings, label: str) -> Service:
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}
        log_path = self.folder / f"{label}.log"
        proc = spawn([sys.executable, "-m", MODULES[name]], log_path, env=env, cwd=self.folder)
        port = HTTP_PORT.get(name)
        url = f"http://127.0.0.1:{getattr(settings, port)}" if port else ""
        service = Service(proc, log_path, label, url)
        self.services.append(service)
        return service

    def admin_api(self, timeout: float = 60.0) -> tuple[str, str]:
        """(base URL of the admin API, who serves it): the router's ``/admin``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.router_url + "/admin/shards", timeout=5) as r:
                    if r.status == 200:
                        return self.router_url, "router"
            except OSError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        self.stack.close()


def _base_settings(registry_poll: float) -> Settings:
    """Defaults with random free preferred ports (so two groups never prefer the same
    ones) and warning-level logs."""
    ports: dict[str, Any] = {name: free_port() for name in local_federation.port_fields()}
    return dataclasses.replace(
        Settings(), log_level="warning", registry_poll=registry_poll, **ports
    )


async def _prepare(pg_dsn: str, fed: local_federation.Federation, spares: list[Settings]) -> None:
    await local_federation.prepare(pg_dsn, fed)
    for spare in spares:
        await local_federation.create_database(pg_dsn, urlsplit(spare.database_url).path[1:])
        await apply_migrations(spare.database_url)


def start_group(
    folder: Path,
    shards: int,
    services: tuple[str, ...],
    *,
    spare: int = 0,
    router: bool = True,
    rebalance_worker: bool = False,
    registry_poll: float = 1.0,
    timeout: float = 180.0,
) -> Group:
    """Start ``shards`` registered shards (+ ``spare`` unregistered ones) running
    ``services`` each, and the router; close the returned group when done."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o711)  # PostgreSQL's own user must enter it when we run as root
    stack = ExitStack()
    try:
        pg = stack.enter_context(start_postgres(folder / "pg", durable=False))
        redis = stack.enter_context(start_redis(folder / "redis"))
        base = _base_settings(registry_poll)
        plan = local_federation.plan(base, folder, pg.dsn, redis.url, shards + spare, free_port())
        router_settings = plan.router  # one Redis database for all (queues named by shard)
        registered, spares = plan.shards[:shards], plan.shards[shards:]
        fed = local_federation.Federation(router_settings, registered)
        asyncio.run(_prepare(pg.dsn, fed, spares))
        group = Group(folder, router_settings, registered, spares, stack=stack)
    except BaseException:
        stack.close()
        raise
    try:
        for settings in [*registered, *spares]:
            for name in services:
                group.start(name, settings, f"{settings.shard}.{name}")
        front = group.start("router", router_settings, "router") if router else None
        if rebalance_worker:
            group.start("rebalance", router_settings, "rebalance")
        for service in group.services:
            if service.url:
                service.wait("/healthz", timeout)
        if front is not None:  # the registry is read and a search goes through
            front.wait(router_settings.dicomweb_prefix + "/studies?limit=1", timeout)
    except BaseException:
        group.close()
        raise
    return group
