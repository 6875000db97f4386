"""Real local servers for ``make run`` and the tests: PostgreSQL, Redis and an S3 API (moto).

Each server listens on 127.0.0.1 only, on a port of its own, with its own data folder,
and is a child process whose PID we hold; ``stop()`` signals that PID and waits for it.
All three objects are context managers::

    with start_postgres(tmp / "pg", durable=False) as pg, start_redis(tmp / "redis") as r:
        ...  # pg.dsn, r.url

PostgreSQL lives in :mod:`tessera.local._postgres` (re-exported here).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from tessera.local._child import ServerProcess, on_free_port, spawn, started
from tessera.local._net import free_port, pick_port, port_is_free
from tessera.local._postgres import PostgresProcess, find_pg_bin, start_postgres

__all__ = [
    "PostgresProcess",
    "RedisProcess",
    "S3Process",
    "create_bucket",
    "docker_available",
    "find_pg_bin",
    "free_port",
    "pick_port",
    "port_is_free",
    "start_postgres",
    "start_redis",
    "start_s3",
]


# --- Docker ------------------------------------------------------------------------------


@functools.cache
def docker_available() -> bool:
    """True only if a Docker engine answers ``docker info`` (the CLI alone is not enough)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# --- Redis ----------------------------------------------------------------------------------


class RedisProcess(ServerProcess):
    """A running redis-server (append-only file, no RDB snapshots)."""

    name = "redis"

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        data_dir: Path,
        port: int,
        password: str | None = None,
    ) -> None:
        super().__init__(proc, log_path)
        self.data_dir = data_dir
        self.port = port
        self.password = password

    @property
    def url(self) -> str:
        """The clients' URL (with the password, if the server has one)."""
        secret = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{secret}127.0.0.1:{self.port}/0"

    @property
    def shown_url(self) -> str:
        """:attr:`url` fit for a log: the password hidden."""
        return f"redis://{':***@' if self.password else ''}127.0.0.1:{self.port}/0"


def _redis_pong(port: int, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            if password:  # RESP: AUTH <password>, whatever bytes it holds
                secret = password.encode()
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret))
                if not s.recv(64).startswith(b"+OK"):
                    return False
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(
    data_dir: str | os.PathLike[str],
    port: int | None = None,
    *,
    timeout: float = 60.0,
    password: str | None = None,
) -> RedisProcess:
    """Start ``redis-server`` on 127.0.0.1:``port``, persisting to an AOF in ``data_dir``;
    with ``password``, every client must AUTH with it (``requirepass``, read from a
    config file so that it is not on the command line for ``ps`` to show)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run `make deps` (Debian package redis-server)")
    data = Path(data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True)
    log_path = data / "redis.log"

    config = data / "redis.conf"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if password:
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            f.write(f'requirepass "{escaped}"\n')

    def launch(port: int) -> RedisProcess:
        argv = [
            binary, str(config), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        server = RedisProcess(spawn(argv, log_path, cwd=data), log_path, data, port, password)
        return started(server, lambda: _redis_pong(port, password), "redis-server", timeout)

    return on_free_port(launch, port)


# --- S3 (moto) --------------------------------------------------------------------------------


class S3Process(ServerProcess):
    """A running moto S3 server (in memory: objects do not survive a restart)."""

    name = "s3"

    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, port: int, scratch: Path | None
    ) -> None:
        super().__init__(proc, log_path)
        self.port = port
        self._scratch = scratch

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _stopped(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def _http_answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP status means the server is up
    except OSError:
        return False


def start_s3(
    data_dir: str | os.PathLike[str] | None = None,
    port: int | None = None,
    *,
    timeout: float = 60.0,
) -> S3Process:
    """Start moto's S3-compatible server on 127.0.0.1:``port``; its log goes to ``data_dir``
    (a temporary folder, removed on stop, when not given)."""
    if importlib.util.find_spec("moto") is None:
        raise RuntimeError("moto is not installed: run `make venv` (it is in the [dev] extras)")

    def launch(port: int) -> S3Process:
        scratch = Path(tempfile.mkdtemp(prefix="tessera-s3-")) if data_dir is None else None
        data = scratch or Path(data_dir or ".").absolute()
        data.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        log_path = data / "moto.log"
        server = S3Process(spawn(argv, log_path, cwd=data), log_path, port, scratch)
        return started(server, lambda: _http_answers(server.endpoint_url), "moto S3", timeout)

    return on_free_port(launch, port)


def create_bucket(
    endpoint_url: str,
    name: str,
    *,
    access_key_id: str = "test",
    secret_access_key: str = "test",
    region: str = "us-east-1",
) -> None:
    """Create bucket ``name`` (no error if we already own it)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(s3={"addressing_style": "path"}),
    )
    extra = (
        {}
        if region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    try:
        client.create_bucket(Bucket=name, **extra)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    finally:
        client.close()
