"""Run a service's ASGI app with uvicorn, configured from the environment once.

A service with a ``*_workers`` setting above 1 runs that many processes on one listening
socket (pre-fork, as gunicorn does): the parent binds the port, forks the workers, each
builds its app and serves the shared socket (the kernel spreads the connections), and
the parent starts a worker again when one dies (after a second) and passes SIGTERM and
SIGINT on. Each worker has its own connection pools and caches; ``/metrics`` is the
worker's that answered.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import uvicorn

from tessera.shared import malloc
from tessera.shared.auth.exposure import check_exposure
from tessera.shared.http_limits import guarded_protocol
from tessera.shared.settings import Settings

log = logging.getLogger(__name__)


def serve(
    factory: str, port_setting: str, *, public: bool = False, workers_setting: str = ""
) -> None:
    """``factory`` is "module:function" taking Settings and returning the app; ``public``
    for the router (its clients authenticate; a shard service needs the internal
    credential): see :func:`~tessera.shared.auth.exposure.check_exposure`. With
    ``tls_cert`` and ``tls_key`` the service speaks HTTPS. ``workers_setting`` names the
    setting of how many processes serve the port (see the module docstring)."""
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    check_exposure(settings, public=public)
    malloc.tune()  # before any thread, and before the workers fork (they inherit it)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SystemExit("HTTPS needs both TESSERA_TLS_CERT and TESSERA_TLS_KEY")
    workers = int(getattr(settings, workers_setting)) if workers_setting else 1
    port = int(getattr(settings, port_setting))
    if workers <= 1:
        uvicorn.run(_app(factory, settings), **_options(settings, port))
        return
    if not 1 <= workers <= 64:
        raise SystemExit(f"TESSERA_{workers_setting.upper()}: 1 to 64")
    _prefork(factory, settings, port, workers)


def _app(factory: str, settings: Settings) -> Any:
    module, _, name = factory.partition(":")
    return getattr(importlib.import_module(module), name)(settings)


def _options(settings: Settings, port: int) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": port,
        "log_level": settings.log_level,
        "access_log": settings.log_level == "debug",
        "http": guarded_protocol(settings),
        "timeout_keep_alive": int(settings.http_keep_alive),
        "limit_concurrency": 2048,
        "ssl_certfile": settings.tls_cert or None,
        "ssl_keyfile": settings.tls_key or None,
    }


def _prefork(factory: str, settings: Settings, port: int, workers: int) -> None:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def fork(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                config = uvicorn.Config(_app(factory, settings), **_options(settings, port))
                uvicorn.Server(config).run(sockets=[sock])
            except BaseException:
                log.exception("worker %d failed", number)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = number

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM if signum != signal.SIGINT else signal.SIGINT)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%d workers on %s:%d", workers, settings.host, port)
    for number in range(workers):
        fork(number)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        number = children.pop(pid)
        if stopping:
            continue
        log.error("worker %d (pid %d) ended (status %d): starting it again", number, pid, status)
        time.sleep(1.0)
        fork(number)
    sock.close()
