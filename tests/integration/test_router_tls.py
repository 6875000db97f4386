"""The router speaks HTTPS with a certificate and key (README "Security"), and refuses
to listen beyond loopback without authentication."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tessera.local import free_port
from tessera.local.tls import self_signed
from tessera.shared.settings import Settings
from tests.support.cluster import child_env


def test_https_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert self_signed(tmp_path / "tls") == (cert, key)  # made once
    trusting = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    settings = Settings(router_port=port, tls_cert=str(cert), tls_key=str(key))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.router"],
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusting, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.2)
        assert r.status_code == 200 and r.url.scheme == "https"
        try:
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=2)  # not trusted
            raise AssertionError("an unknown certificate was trusted")
        except httpx.ConnectError:
            pass
    finally:
        proc.terminate()
        proc.wait(10)


def test_no_authentication_beyond_loopback_refuses_to_start() -> None:
    settings = Settings(host="0.0.0.0", router_port=free_port())
    done = subprocess.run(
        [sys.executable, "-m", "tessera.router"],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0 without authentication" in done.stderr
