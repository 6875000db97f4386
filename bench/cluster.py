"""The Tessera side: a whole single-machine cluster started with the project's own supervisor.

:func:`start_tessera` runs ``python -m tessera.local run --data <dir> --port <free>`` (what
``make run`` does: PostgreSQL, Redis, objects in a local folder, every service as its
own process), waits until the router's ``/readyz`` and a QIDO search answer, and returns
a handle whose ``stop()`` sends SIGTERM to the supervisor's PID only; the supervisor stops
its services and servers in order. Services get free ports and log at ``warning`` (as
Orthanc does by default) so that logging is not what gets measured.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from tessera.local import ServerProcess, free_port, spawn, wait_until

DICOMWEB_PREFIX = "/dicom-web"


class TesseraCluster(ServerProcess):
    """A running ``tessera run`` supervisor started by :func:`start_tessera`."""

    name = "tessera"

    def __init__(
        self, proc: subprocess.Popen[bytes], log_path: Path, data_dir: Path, port: int
    ) -> None:
        super().__init__(proc, log_path)
        self.data_dir = data_dir
        self.port = port
        self.service_ports: dict[str, int] = {}  # shard services, reachable without the router

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_PREFIX

    def versions(self) -> dict[str, str]:
        return versions()

    def internal_authorization(self) -> str:
        """An ``Authorization`` value the shard services accept (the router's credential,
        signed with the run's secret): for diagnostics that bypass the router."""
        from tessera.shared.auth.internal import SERVICE_PRINCIPAL, InternalCredential

        secret = (self.data_dir / "state" / "secrets" / "internal-secret").read_text().strip()
        return InternalCredential(secret).header(SERVICE_PRINCIPAL)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _ready(cluster: TesseraCluster) -> bool:
    """The router's ``/readyz`` (every service of the shard answers) and a QIDO search
    (401 counts: the router answered, it wants a token)."""
    if not _answers_200(cluster.url + "/readyz"):
        return False
    try:
        with urllib.request.urlopen(cluster.dicomweb_url + "/studies?limit=1", timeout=5) as r:
            return r.status in (200, 204)  # 204: an empty archive (PS3.18 8.3.4.4.1)
    except urllib.error.HTTPError as e:
        return e.code == 401
    except OSError:
        return False


def start_tessera(
    data_dir: str | os.PathLike[str],
    *,
    log_level: str = "warning",
    timeout: float = 180.0,
    env: Mapping[str, str] | None = None,
    run_args: Sequence[str] = (),
) -> TesseraCluster:
    """Start the whole cluster with its state in ``data_dir`` (must be enterable by the
    ``postgres`` user when we are root: give its parents mode 0711); ``env`` adds
    ``TESSERA_*`` settings (e.g. the viewer's, for ``bench/ohif.py``)."""
    data = Path(data_dir).absolute()
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TESSERA_LOG_LEVEL": log_level,
        "TESSERA_INGEST_PORT": str(free_port()),
        "TESSERA_INDEX_PORT": str(free_port()),
        "TESSERA_RETRIEVE_PORT": str(free_port()),
        **(env or {}),
    }
    argv = [sys.executable, "-m", "tessera.local", "run", "--data", str(data / "state"),
            "--port", str(port), *run_args]  # fmt: skip
    log_path = data / "tessera.log"
    proc = spawn(argv, log_path, env=env, cwd=data)
    cluster = TesseraCluster(proc, log_path, data, port)
    cluster.service_ports = {
        name: int(env[f"TESSERA_{name.upper()}_PORT"]) for name in ("ingest", "index", "retrieve")
    }
    try:
        wait_until(lambda: _ready(cluster), proc, "tessera run", log_path, timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _command_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    match = re.search(r"\d+(\.\d+)+", out.stdout + out.stderr)
    return match.group(0) if match else "unknown"


def versions() -> dict[str, str]:
    """Versions of what a local Tessera cluster is made of."""
    try:
        tessera = importlib.metadata.version("tessera-pacs")
    except importlib.metadata.PackageNotFoundError:
        tessera = "unknown"
    try:
        from tessera.local.processes import find_pg_bin

        postgres = _command_version([str(find_pg_bin() / "postgres"), "--version"])
    except RuntimeError:
        postgres = "unknown"
    redis = shutil.which("redis-server")
    return {
        "tessera": tessera,
        "postgresql": postgres,
        "redis": _command_version([redis, "--version"]) if redis else "unknown",
    }
