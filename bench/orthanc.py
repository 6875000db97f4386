"""The baseline: Debian's ``orthanc`` with the ``orthanc-dicomweb`` plugin, as packaged.

:func:`start_orthanc` writes a JSON configuration into a data folder of its own, starts
``/usr/sbin/Orthanc`` on free ports (HTTP and DICOM), waits until ``/system`` answers and
returns a handle whose ``stop()`` signals that PID only. The index is Orthanc's default
SQLite database and the storage area a plain folder (no compression); every other
setting is the packaged default except those in :func:`orthanc_config`, which only turn
off what a benchmark must not measure or expose (remote access, authentication, gzip of
answers, the web UI, WebDAV, job persistence, the DICOM listener) and load just the
DICOMweb plugin. Packaged defaults worth knowing when reading the figures:
``SyncStorageArea`` true (fsync after each file), ``StorageAccessOnFind`` "Always" (QIDO
may read DICOM files), the plugin's ``SeriesMetadata``/``StudiesMetadata`` "Full" (series
``/metadata`` parses every file), ``HttpThreadsCount`` 50.

Run on its own to poke at a baseline by hand (Ctrl-C stops it)::

    .venv/bin/python bench/orthanc.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any

from tessera.local import ServerProcess, free_port, spawn, wait_until

ORTHANC_BIN = "/usr/sbin/Orthanc"
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
DICOMWEB_ROOT = "/dicom-web/"


def find_plugin() -> Path:
    """The DICOMweb plugin shared object of the ``orthanc-dicomweb`` package."""
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    if found:
        return found[-1]
    raise RuntimeError("Orthanc DICOMweb plugin not found: apt-get install orthanc-dicomweb")


def orthanc_config(
    storage: Path, http_port: int, dicom_port: int, plugin: Path, *, http_threads: int = 50
) -> dict[str, Any]:
    """The configuration the baseline runs with (everything else: packaged defaults)."""
    return {
        "Name": "tessera-bench-baseline",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),  # SQLite index, the packaged default back end
        "StorageCompression": False,
        "Plugins": [str(plugin)],
        "HttpPort": http_port,
        # Orthanc 1.10 listens on every interface: its HTTP server refuses non-loopback
        # clients (RemoteAccessAllowed), but its DICOM server would accept C-STORE from
        # anyone, so it is off (the port is still a free one if it is turned back on).
        "DicomServerEnabled": False,
        "DicomPort": dicom_port,
        "DicomAet": "BENCHORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "SaveJobs": False,
        "HttpThreadsCount": http_threads,  # packaged default: 50
        "ConcurrentJobs": 2,  # packaged default
        "KeepAlive": True,
        "TcpNoDelay": True,
        "DicomWeb": {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": True,
            "Ssl": False,
        },
    }


class OrthancProcess(ServerProcess):
    """A running Orthanc started by :func:`start_orthanc`."""

    name = "orthanc"

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        log_path: Path,
        data_dir: Path,
        http_port: int,
        dicom_port: int,
        config: dict[str, Any],
    ) -> None:
        super().__init__(proc, log_path)
        self.data_dir = data_dir
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.config = config

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_ROOT.rstrip("/")

    def versions(self) -> dict[str, str]:
        """Orthanc's version, its database back end and the DICOMweb plugin's version."""
        system = _get_json(self.url + "/system")
        plugin = _get_json(self.url + "/plugins/dicom-web")
        return {
            "orthanc": str(system.get("Version")),
            "orthanc_database": f"SQLite (schema v{system.get('DatabaseVersion')})",
            "orthanc_dicomweb": str(plugin.get("Version")),
        }


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5.0) as answer:
        data: dict[str, Any] = json.load(answer)
        return data


def _system_answers(url: str) -> bool:
    """``/system`` answers: 200, or 401 when the configuration turns authentication on
    (the server is up; it wants its registered users)."""
    try:
        _get_json(url + "/system")
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ValueError):
        return False
    return True


def apply_overrides(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``config`` with ``overrides`` applied; a key ``"DicomWeb.X"`` sets ``X`` in the
    plugin's section (e.g. ``{"StorageAccessOnFind": "Never"}`` for a tuned baseline)."""
    out = json.loads(json.dumps(config))
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        (out.setdefault(section, {}) if section else out)[name] = value
    return out


def start_orthanc(
    data_dir: str | os.PathLike[str],
    *,
    http_threads: int = 50,
    overrides: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> OrthancProcess:
    """Start Orthanc on 127.0.0.1 free ports with its storage and index in ``data_dir``;
    ``overrides`` change the configuration (see :func:`apply_overrides`)."""
    if not Path(ORTHANC_BIN).is_file():
        raise RuntimeError(f"{ORTHANC_BIN} not found: apt-get install orthanc orthanc-dicomweb")
    data = Path(data_dir).absolute()
    storage = data / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    while dicom_port == http_port:
        dicom_port = free_port()
    config = orthanc_config(
        storage, http_port, dicom_port, find_plugin(), http_threads=http_threads
    )
    config = apply_overrides(config, overrides or {})
    config_path = data / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = data / "orthanc.log"
    proc = spawn([ORTHANC_BIN, str(config_path)], log_path, cwd=data)
    server = OrthancProcess(proc, log_path, data, http_port, dicom_port, config)
    try:
        wait_until(lambda: _system_answers(server.url), proc, "Orthanc", log_path, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # stop (and clean up) on SIGTERM as on Ctrl-C
    data = Path(tempfile.mkdtemp(prefix="tessera-bench-orthanc-"))
    server = start_orthanc(data)
    try:
        print(f"Orthanc {server.versions()} pid {server.pid}", file=sys.stderr)
        print(f"DICOMweb root: {server.dicomweb_url}  (data {data}; Ctrl-C stops)", file=sys.stderr)
        while server.running:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
