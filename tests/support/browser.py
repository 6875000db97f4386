"""What the browser tests need besides a browser: the OHIF build, Chromium, and a cluster.

* :func:`viewer_dist`: the OHIF ``dist/`` that ``make viewer`` fetches (the Makefile pins
  the version; the same target ``make run`` uses), fetched here if missing.
* :func:`chromium`: Debian's Chromium (``make deps-browser`` installs it as root).
* :func:`start_cluster`: every Tessera service as its own process (as ``make run``
  starts them), objects in a folder, the router serving the viewer.
* :func:`start_viewer_origin`: a second router on another port (another origin) that
  serves only the viewer, whose ``app-config.js`` points at the first one's API.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from tessera.local import spawn
from tessera.local.processes import free_port
from tests.support import cluster as e2e_cluster
from tests.support.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"


class Unavailable(Exception):
    """A prerequisite cannot exist on this machine (the test is skipped, loudly)."""


def _make(*targets: str, timeout: float = 900) -> str:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", *targets],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"make {' '.join(targets)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def viewer_dist() -> Path:
    """The fetched OHIF build (``make viewer``); raises if it cannot be fetched."""
    _make("viewer")
    dist = Path(_make("viewer-dir").strip().splitlines()[-1])
    if not (dist / "index.html").is_file():
        raise RuntimeError(f"make viewer left no index.html in {dist}")
    return dist


def chromium() -> str:
    """Debian's Chromium, installed with ``make deps-browser`` when we are root."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable(
            f"{CHROMIUM} is missing and cannot be installed here (not root, or no apt-get):"
            " run `sudo make deps-browser` to run the OHIF browser tests"
        )
    _make("deps-browser")
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"make deps-browser ran but {CHROMIUM} is still missing")
    return CHROMIUM


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not healthy in {timeout}s:\n{log.read_text()[-4000:]}")


def start_cluster(
    database_url: str, redis_url: str, viewer_dir: Path, workdir: Path, **overrides: object
) -> Cluster:
    """A single-shard cluster whose router serves the viewer; objects in ``workdir``."""
    return e2e_cluster.start_cluster(
        lambda: e2e_cluster.shard_settings(
            shard=f"ohif-{uuid.uuid4().hex[:8]}",
            database_url=database_url,
            redis_url=redis_url,
            storage_url=(workdir / "objects").as_uri(),
            spool_dir=str(workdir),
            viewer_dir=str(viewer_dir),
            log_level="warning",
            **overrides,
        ),
        workdir,
    )


@dataclass
class ViewerOrigin:
    """A router process that serves the viewer on its own port."""

    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_viewer_origin(
    cluster: Cluster, host: str = "localhost", thumbnails: str = "thumbnailDirect"
) -> ViewerOrigin:
    """The viewer on ``http://{host}:<port>/viewer/``, its data on the cluster's router.

    ``localhost`` against the API's ``127.0.0.1``: another origin *and* another site,
    so the browser applies CORS and Cross-Origin-Resource-Policy in full.
    """
    port = free_port()
    env = {
        **os.environ,
        **cluster.settings.env(),
        "TESSERA_ROUTER_PORT": str(port),
        "TESSERA_VIEWER_DICOMWEB_URL": cluster.base_url,
        "TESSERA_VIEWER_THUMBNAIL_RENDERING": thumbnails,
    }
    log = cluster.workdir / "viewer-origin.log"
    proc = spawn([sys.executable, "-m", "tessera.router"], log, env=env)  # dies with pytest
    origin = ViewerOrigin(f"http://{host}:{port}", proc)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc, log, 60)
    except RuntimeError:
        origin.stop()
        raise
    return origin
