"""The ``tessera`` command. ``tessera run`` is the single-machine cluster behind ``make run``:

PostgreSQL and Redis with their data under ``--data`` (default ``./.var``, kept across
runs), objects in ``<data>/objects``, the schema migrated, then every service as its
own process, configured through ``TESSERA_*`` variables. Other ``TESSERA_*`` variables
in the environment (log level, duplicate policy...) are passed on; the supervisor
chooses the database, Redis, storage and ports.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from tessera.local.processes import free_port, pick_port, start_postgres, start_redis
from tessera.local.supervisor import Service, say, supervise
from tessera.shared.settings import Settings

PG_PORT = 55432
REDIS_PORT = 56379

SERVICES = [
    Service.module("ingest", "tessera.ingest"),
    Service.module("index", "tessera.index"),
    Service.module("index-worker", "tessera.index.worker"),
    Service.module("retrieve", "tessera.retrieve"),
    Service.module("transcode", "tessera.transcode"),
    Service.module("router", "tessera.router"),
]


def _ports(*preferred: int) -> list[int]:
    """Each preferred port unless busy (or already taken by an earlier one)."""
    chosen: list[int] = []
    for port in preferred:
        pick = pick_port(port)
        while pick in chosen:
            pick = free_port()
        if pick != port:
            say(f"port {port} is busy: using {pick}")
        chosen.append(pick)
    return chosen


def cluster_settings(data: Path, database_url: str, redis_url: str, router_port: int) -> Settings:
    """Settings for every service of a one-machine cluster with its state in ``data``."""
    base = Settings.from_env()
    router, ingest, index, retrieve = _ports(
        router_port, base.ingest_port, base.index_port, base.retrieve_port
    )
    return dataclasses.replace(
        base,
        database_url=database_url,
        redis_url=redis_url,
        storage_url=(data / "objects").as_uri(),
        spool_dir=str(data / "spool"),
        host="127.0.0.1",
        router_port=router,
        ingest_port=ingest,
        index_port=index,
        retrieve_port=retrieve,
        ingest_url=f"http://127.0.0.1:{ingest}",
        index_url=f"http://127.0.0.1:{index}",
        retrieve_url=f"http://127.0.0.1:{retrieve}",
        viewer_dir=str(Path(base.viewer_dir).absolute()) if base.viewer_dir else "",
    )


async def _migrate(dsn: str) -> list[str]:
    from tessera.shared.db.migrate import apply_migrations

    return await apply_migrations(dsn)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(data: Path, port: int) -> int:
    """Start the servers and the services; returns the exit status."""
    data = data.absolute()
    for folder in (data, data / "objects", data / "spool"):
        folder.mkdir(parents=True, exist_ok=True)
    shards = os.environ.get("TESSERA_SHARDS", "1").strip() or "1"
    if shards != "1":
        say(f"TESSERA_SHARDS={shards}: several shards are not supported yet; running one")
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # until supervise() takes over
    with ExitStack() as servers:
        say(f"data in {data}")
        pg = servers.enter_context(start_postgres(data / "postgres", _ports(PG_PORT)[0]))
        say(f"PostgreSQL {pg.dsn} (pid {pg.pid}, log {pg.log_path})")
        redis = servers.enter_context(start_redis(data / "redis", _ports(REDIS_PORT)[0]))
        say(f"Redis {redis.url} (pid {redis.pid}, log {redis.log_path})")
        applied = asyncio.run(_migrate(pg.dsn))
        say(f"migrations applied: {', '.join(applied) if applied else 'none needed'}")
        settings = cluster_settings(data, pg.dsn, redis.url, port)
        base = f"http://127.0.0.1:{settings.router_port}"
        banner = [f"Tessera DICOMweb: {base}{settings.dicomweb_prefix}"]
        if settings.viewer_dir:
            banner.append(f"OHIF viewer: {base}/viewer/")
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}

        def announce() -> None:
            for line in banner:
                say(line)

        code = asyncio.run(supervise(SERVICES, env, ready_url=f"{base}/healthz", on_ready=announce))
        say("stopping Redis and PostgreSQL")
    say("stopped" if code == 0 else f"stopped after a failure (exit {code})")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera DICOMweb archive")
    commands = parser.add_subparsers(dest="command", required=True)
    run_cmd = commands.add_parser(
        "run", help="run the whole archive on this machine (what `make run` does)"
    )
    run_cmd.add_argument(
        "--data", type=Path, default=Path(".var"), help="state folder, kept (default: ./.var)"
    )
    run_cmd.add_argument(
        "--port", type=int, default=8042, help="public DICOMweb port (default: 8042)"
    )
    args = parser.parse_args(argv)
    try:
        return run(args.data, args.port)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    except (RuntimeError, OSError, ImportError) as exc:
        say(f"error: {exc}")
        return 1
