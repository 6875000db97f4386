"""The ``tessera`` command. ``tessera run`` is the single-machine cluster behind ``make run``:

PostgreSQL and Redis with their data under ``--data`` (default ``./.var``, kept across
runs), objects in ``<data>/objects``, the schema migrated, then every service as its
own process, configured through ``TESSERA_*`` variables. Other ``TESSERA_*`` variables
in the environment (log level, duplicate policy...) are passed on; the supervisor
chooses the database, Redis, storage and ports.

``--shards N`` (or ``TESSERA_SHARDS``, ``make run SHARDS=N``) with N > 1 runs N shard
stacks (ingest, index, index worker, retrieve, transcode each) behind one router with
its shard registry, all on the same PostgreSQL and Redis servers
(:mod:`tessera.local.federation`). With one shard nothing changes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from tessera.local import ServerProcess, federation, oidc_demo
from tessera.local.processes import (
    PostgresProcess,
    free_port,
    pick_port,
    start_postgres,
    start_redis,
)
from tessera.local.supervisor import Service, Watched, say, supervise
from tessera.local.tls import self_signed
from tessera.shared import dimse_api
from tessera.shared.settings import Settings

PG_PORT = 55432
REDIS_PORT = 56379
OIDC_PORT = 8044  # the demo OpenID provider of `make run AUTH=1`
# shards of `make run SHARDS=N`: five services each on two cores; more is no test of anything
MAX_SHARDS = 16

SHARD_SERVICES = {
    "ingest": "tessera.ingest",
    "index": "tessera.index",
    "index-worker": "tessera.index.worker",
    "retrieve": "tessera.retrieve",
    "transcode": "tessera.transcode",
    "sweeper": "tessera.index.sweeper",
}
SERVICES = [
    *(Service.module(name, module) for name, module in SHARD_SERVICES.items()),
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


# environment variables a one-machine cluster picks by the cores it has when unset
WORKER_SETTINGS = ("router_workers", "ingest_workers", "retrieve_workers")


def default_workers(cores: int | None) -> int:
    """Processes per HTTP service for a machine of ``cores`` cores: one per two cores, at
    most four (the router, ingest, retrieve, their workers and PostgreSQL share them)."""
    return max(1, min(4, (cores or 1) // 2))


def cluster_settings(data: Path, database_url: str, redis_url: str, router_port: int) -> Settings:
    """Settings for every service of a one-machine cluster with its state in ``data``."""
    base = Settings.from_env()
    workers: dict[str, Any] = {
        name: default_workers(os.cpu_count())
        for name in WORKER_SETTINGS
        if f"TESSERA_{name.upper()}" not in os.environ
    }
    base = dataclasses.replace(base, **workers)
    names = federation.port_fields()  # every service port, metrics ones included
    router, *chosen = _ports(router_port, *(getattr(base, name) for name in names))
    ports: dict[str, Any] = dict(zip(names, chosen, strict=True))
    return dataclasses.replace(
        base,
        database_url=database_url,
        redis_url=redis_url,
        storage_url=(data / "objects").as_uri(),
        spool_dir=str(data / "spool"),
        host="127.0.0.1",
        router_port=router,
        ingest_url=f"http://127.0.0.1:{ports['ingest_port']}",
        index_url=f"http://127.0.0.1:{ports['index_port']}",
        retrieve_url=f"http://127.0.0.1:{ports['retrieve_port']}",
        viewer_dir=str(Path(base.viewer_dir).absolute()) if base.viewer_dir else "",
        **ports,
    )


def federation_services(
    data: Path, pg_dsn: str, redis_url: str, count: int, router_port: int
) -> tuple[federation.Federation, list[Service]]:
    """The settings of ``count`` shards and their router, and every child to start."""
    base = cluster_settings(data, pg_dsn, redis_url, router_port)
    fed = federation.plan(base, data, pg_dsn, redis_url, count, base.router_port)
    services = [
        Service.module(f"{shard.shard}.{name}", module, shard.env())
        for shard in fed.shards
        for name, module in SHARD_SERVICES.items()
    ]
    services.append(Service.module("router", "tessera.router", fed.router.env()))
    services.append(Service.module("rebalance", "tessera.router.rebalance", fed.router.env()))
    return fed, services


async def _migrate(dsn: str) -> list[str]:
    from tessera.shared.db.migrate import apply_migrations

    return await apply_migrations(dsn)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _secret_file(path: Path, nbytes: int) -> str:
    """A random secret kept in ``path`` (owner-only), made on the first run."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    value = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def run(data: Path, port: int, shards: int = 1, *, auth: bool = False, tls: bool = False) -> int:
    """Start the servers and the services; returns the exit status. ``auth``: with the
    demo OpenID provider (:mod:`tessera.local.oidc_demo`); ``tls``: the router on HTTPS
    with a self-signed certificate (:mod:`tessera.local.tls`)."""
    data = data.absolute()
    for folder in (data, data / "objects", data / "spool"):
        folder.mkdir(parents=True, exist_ok=True)
    # the shard services answer only the router (README "Security"), here too
    os.environ.setdefault(
        "TESSERA_INTERNAL_SECRET", _secret_file(data / "secrets" / "internal-secret", 48)
    )
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # until supervise() takes over
    # PostgreSQL and Redis on loopback, and with passwords all the same (README "Security")
    keys = data / "secrets"
    pg_password = _secret_file(keys / "postgres-tessera-password", 24)
    pg_admin_password = _secret_file(keys / "postgres-admin-password", 24)

    def postgres(port: int) -> PostgresProcess:
        return start_postgres(
            data / "postgres", port, password=pg_password, admin_password=pg_admin_password
        )

    redis_password = _secret_file(keys / "redis-password", 24)
    with ExitStack() as servers:
        say(f"data in {data}")
        pg = servers.enter_context(postgres(_ports(PG_PORT)[0]))
        say(f"PostgreSQL {pg.shown_dsn} (pid {pg.pid}, log {pg.log_path})")
        redis = servers.enter_context(
            start_redis(data / "redis", _ports(REDIS_PORT)[0], password=redis_password)
        )
        say(f"Redis {redis.shown_url} (pid {redis.pid}, log {redis.log_path})")
        services = SERVICES
        if shards == 1:
            applied = asyncio.run(_migrate(pg.dsn))
            say(f"migrations applied: {', '.join(applied) if applied else 'none needed'}")
            # the router's database: the audit trail and API keys
            router_db = federation.with_path(pg.dsn, federation.ROUTER_DATABASE)
            asyncio.run(federation.create_database(pg.dsn, federation.ROUTER_DATABASE))
            os.environ.setdefault("TESSERA_AUTH_DATABASE_URL", router_db)
            settings = cluster_settings(data, pg.dsn, redis.url, port)
        else:
            fed, services = federation_services(data, pg.dsn, redis.url, shards, port)
            for line in asyncio.run(federation.prepare(pg.dsn, fed)):
                say(line)
            settings = fed.router
            for shard in fed.shards:
                say(f"{shard.shard}: ingest {shard.ingest_url}, index {shard.index_url}, "
                    f"retrieve {shard.retrieve_url}, objects {shard.storage_url}")  # fmt: skip
        scheme = "https" if tls else "http"
        base = f"{scheme}://127.0.0.1:{settings.router_port}"
        dimse_port, dimse_http_port = _ports(settings.dimse_port, settings.dimse_http_port)
        settings = dataclasses.replace(
            settings,
            dimse_port=dimse_port,
            dimse_http_port=dimse_http_port,
            dimse_url=f"http://127.0.0.1:{dimse_http_port}",
            dimse_router_url=base,
        )
        banner = [f"Tessera DICOMweb: {base}{settings.dicomweb_prefix}"]
        if shards > 1:
            banner[0] += f" ({shards} shards)"
        banner.append(
            f"Tessera DIMSE: {settings.dimse_ae_title}@127.0.0.1:{dimse_port}"
            f' (register AEs: {base}{dimse_api.NODES}, README "DIMSE")'
        )
        if settings.viewer_dir:
            banner.append(f"OHIF viewer: {base}/viewer/")
        router_env: dict[str, str] = {}
        verify: ssl.SSLContext | bool = True
        if tls:
            cert, key = self_signed(data / "tls")
            router_env |= {"TESSERA_TLS_CERT": str(cert), "TESSERA_TLS_KEY": str(key)}
            verify = ssl.create_default_context(cafile=str(cert))
            settings = dataclasses.replace(settings, dimse_router_ca=str(cert))
            banner.append(f"HTTPS with a self-signed certificate: curl --cacert {cert} ...")
        if auth:
            demo = oidc_demo.demo_provider(data, _ports(OIDC_PORT)[0], base)
            router_env |= {
                "TESSERA_AUTH": "on",
                "TESSERA_AUTH_ISSUER": demo.issuer,
                "TESSERA_VIEWER_OIDC_AUTHORITY": demo.issuer,
                "TESSERA_VIEWER_OIDC_CLIENT_ID": "ohif",
            }
            services = [demo.service, *services]
            banner += demo.banner()
        else:
            banner.append("no authentication: loopback only (make run AUTH=1 to try a login)")
        # the DIMSE gateway, and the router's way to it (README "DIMSE")
        dimse_env = {
            f"TESSERA_{name.upper()}": str(getattr(settings, name))
            for name in (
                "dimse_port",
                "dimse_http_port",
                "dimse_url",
                "dimse_router_url",
                "dimse_router_ca",
            )
        }
        router_env |= dimse_env
        services = [*services, Service.module("dimse", "tessera.dimse", {**settings.env()})]
        services = [
            dataclasses.replace(s, env={**s.env, **router_env}) if s.name == "router" else s
            for s in services
        ]
        env = {**os.environ, **settings.env(), "PYTHONUNBUFFERED": "1"}

        def announce() -> None:
            for line in banner:
                say(line)

        # PostgreSQL and Redis, watched by their PIDs and started again on the same data
        # and ports when they die (each new one stopped with the others at the end)
        current = {"postgres": pg, "redis": redis}

        def restarter(name: str) -> Callable[[], int]:
            def restart() -> int:
                if name == "postgres":
                    fresh: ServerProcess = postgres(pg.port)
                else:
                    fresh = start_redis(data / "redis", redis.port, password=redis_password)
                current[name] = servers.enter_context(fresh)
                return fresh.pid

            return restart

        watched = [
            Watched(name, lambda name=name: current[name].running, restarter(name))  # type: ignore[misc]
            for name in current
        ]
        code = asyncio.run(
            supervise(
                services,
                env,
                ready_url=f"{base}/healthz",
                on_ready=announce,
                ready_verify=verify,
                watched=watched,
            )
        )
        say("stopping Redis and PostgreSQL")
    say("stopped" if code == 0 else f"stopped after a failure (exit {code})")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["store"]:  # the bulk import, a client of any archive (its own --help)
        from tessera.importer.cli import main as store

        return store(argv[1:])
    if argv[:1] == ["peers"]:  # DICOMweb peers and their jobs, a client of the admin API
        from tessera.importer.peers_cli import main as peers

        return peers(argv[1:])
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera DICOMweb archive")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("store", help="store DICOM files from disk in an archive (--help)")
    commands.add_parser("peers", help="DICOMweb peers: pull, push, mirror (--help)")
    run_cmd = commands.add_parser(
        "run", help="run the whole archive on this machine (what `make run` does)"
    )
    run_cmd.add_argument(
        "--data", type=Path, default=Path(".var"), help="state folder, kept (default: ./.var)"
    )
    run_cmd.add_argument(
        "--port", type=int, default=8042, help="public DICOMweb port (default: 8042)"
    )
    run_cmd.add_argument(
        "--shards",
        type=int,
        default=None,
        help="number of shards behind the router (default: $TESSERA_SHARDS or 1)",
    )
    run_cmd.add_argument(
        "--auth",
        action="store_true",
        help="start a demo OpenID provider and require its tokens (make run AUTH=1)",
    )
    run_cmd.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a self-signed certificate (make run TLS=1)",
    )
    args = parser.parse_args(argv)
    shards = args.shards
    if shards is None:
        raw = os.environ.get("TESSERA_SHARDS", "1").strip() or "1"
        if not raw.isdigit():
            parser.error(f"TESSERA_SHARDS must be a number, not {raw!r}")
        shards = int(raw)
    if not 1 <= shards <= MAX_SHARDS:
        parser.error(f"--shards must be between 1 and {MAX_SHARDS}")
    try:
        return run(args.data, args.port, shards, auth=args.auth, tls=args.tls)
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    except (RuntimeError, OSError, ImportError) as exc:
        say(f"error: {exc}")
        return 1
