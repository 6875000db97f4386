"""A DICOMweb peer as a client sees it (PS3.18): QIDO-RS, WADO-RS, STOW-RS, DELETE, and
for a Tessera peer its change feed; with the peer's authentication and TLS settings.

Every request is retried with exponential back-off (0.5 s doubling, at most
``BACKOFF_MAX``) while the peer is unreachable or answers 408, 429, 502, 503 or 504,
``Retry-After`` honoured, for up to ``RETRY_FOR`` seconds: a peer that restarts in the
middle of a job is waited for. Then :class:`PeerUnavailable`; a 4xx is
:class:`PeerRefused` at once.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import httpx

from tessera.dimse.archive import multipart_boundary, write_part
from tessera.dimse.peers.registry import Peer

PAGE = 500
RETRY_FOR = 60.0  # seconds a request keeps being retried
BACKOFF_MAX = 8.0
_RETRIED = {408, 429, 502, 503, 504}
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class PeerUnavailable(Exception):
    """The peer did not answer, or answered that it cannot now, for ``RETRY_FOR`` s."""


class PeerRefused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status


class _ClientCredentials(httpx.Auth):
    """OAuth 2.0 client credentials (RFC 6749 4.4): a token fetched with the client's id
    and secret (HTTP Basic, 2.3.1), kept until shortly before it expires, fetched again
    after a 401."""

    def __init__(self, auth: dict[str, str], verify: Any) -> None:
        self.auth = auth
        self.verify = verify
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def _fetch(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            data = {"grant_type": "client_credentials"}
            if self.auth.get("scope"):
                data["scope"] = self.auth["scope"]
            r = httpx.post(
                self.auth["tokenUrl"],
                data=data,
                auth=(self.auth["clientId"], self.auth["clientSecret"]),
                timeout=15,
                verify=self.verify,
            )
            if r.status_code != 200:
                raise PeerRefused(r.status_code, "the token endpoint refused the client")
            doc = r.json()
            self._token = str(doc["access_token"])
            self._expires = time.monotonic() + max(10, int(doc.get("expires_in", 300)) - 30)
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._fetch()}"
        response = yield request
        if response.status_code == 401:
            with self._lock:
                self._token = ""
            request.headers["Authorization"] = f"Bearer {self._fetch()}"
            yield request


class _Bearer(httpx.Auth):
    """A fixed bearer token (RFC 6750 2.1)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def _verify(peer: Peer) -> ssl.SSLContext | bool:
    if not peer.verify_tls:
        return False
    if peer.ca_cert:
        return ssl.create_default_context(cadata=peer.ca_cert)
    return True


def _auth(peer: Peer, verify: Any) -> httpx.Auth | None:
    kind = peer.auth["type"]
    if kind == "bearer":
        return _Bearer(peer.auth["token"])
    if kind == "basic":
        return httpx.BasicAuth(peer.auth["username"], peer.auth["password"])
    if kind == "client_credentials":
        return _ClientCredentials(peer.auth, verify)
    return None


class Remote:
    """One peer's DICOMweb API; ``stop`` ends the retries of a cancelled job."""

    def __init__(self, peer: Peer, stop: Callable[[], bool] = lambda: False) -> None:
        self.peer = peer
        self.base = peer.url
        self.stop = stop
        verify = _verify(peer)
        self.client = httpx.Client(
            timeout=httpx.Timeout(60.0, connect=10.0),
            verify=verify,
            auth=_auth(peer, verify),
            follow_redirects=False,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """``method`` ``path`` with retries (see the module docstring)."""
        deadline = time.monotonic() + RETRY_FOR
        delay = 0.5
        while True:
            why = ""
            try:
                r = self.client.request(method, self.base + path, **kw)
                if r.status_code not in _RETRIED:
                    return r
                why = f"HTTP {r.status_code}"
                after = r.headers.get("retry-after", "")
                if after.isdigit():
                    delay = max(delay, min(float(after), BACKOFF_MAX))
            except httpx.TransportError as e:
                why = type(e).__name__
            if self.stop():
                raise PeerUnavailable("the job was cancelled")
            if time.monotonic() + delay > deadline:
                raise PeerUnavailable(f"{self.peer.name} did not answer in time ({why})")
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    def _ok(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            reason = r.text.strip()[:200] if r.content else r.reason_phrase
            raise PeerRefused(r.status_code, reason)
        return r

    # -- QIDO-RS -----------------------------------------------------------------------
    def search(self, resource: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every result of a search of ``resource`` (``studies``, ``studies/{s}/instances``),
        page after page (PS3.18 8.3.4.4)."""
        offset = 0
        while True:
            page = {**params, "limit": str(PAGE), "offset": str(offset)}
            r = self._ok(
                self.request(
                    "GET", f"/{resource}", params=page, headers={"Accept": "application/dicom+json"}
                )
            )
            results = r.json() if r.status_code != 204 and r.content else []
            yield from results
            if len(results) < PAGE:
                return
            offset += len(results)

    def instances(self, study: str) -> list[tuple[str, str, str]]:
        """(SeriesInstanceUID, SOPInstanceUID, SOPClassUID) of each instance of ``study``."""
        found = []
        for row in self.search(
            f"studies/{study}/instances", {"includefield": "0020000E,00080018,00080016"}
        ):
            found.append(
                (_value(row, "0020000E"), _value(row, "00080018"), _value(row, "00080016"))
            )
        return [f for f in found if f[0] and f[1]]

    # -- WADO-RS -----------------------------------------------------------------------
    def fetch(self, study: str, series: str, sop: str) -> Path:
        """The instance as stored there, as a Part 10 file (a temporary file the caller
        removes)."""
        path = f"/studies/{study}/series/{series}/instances/{sop}"
        deadline = time.monotonic() + RETRY_FOR
        while True:
            fd, name = tempfile.mkstemp(prefix="tessera-peer-", suffix=".dcm")
            out_path = Path(name)
            try:
                with os.fdopen(fd, "wb") as out:
                    with self.client.stream(
                        "GET", self.base + path, headers={"Accept": AS_STORED}
                    ) as r:
                        if r.status_code >= 400:
                            r.read()
                            if r.status_code in _RETRIED:
                                raise httpx.TransportError(f"HTTP {r.status_code}")
                            self._ok(r)
                        write_part(
                            r.iter_bytes(1 << 20),
                            multipart_boundary(r.headers.get("content-type", "")),
                            out,
                        )
                return out_path
            except (httpx.TransportError, OSError) as e:
                out_path.unlink(missing_ok=True)
                if self.stop() or time.monotonic() > deadline:
                    raise PeerUnavailable(f"{self.peer.name}: {e}") from None
                time.sleep(1.0)
            except BaseException:
                out_path.unlink(missing_ok=True)
                raise

    # -- STOW-RS -----------------------------------------------------------------------
    def store(self, files: list[Path]) -> dict[str, Any]:
        """STOW-RS of the Part 10 files in one request; the PS3.18 10.5.3 answer."""
        boundary = secrets.token_hex(16)
        body = bytearray()
        for f in files:
            body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            body += f.read_bytes() + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        }
        r = self.request("POST", "/studies", content=bytes(body), headers=headers)
        if r.status_code not in (200, 202, 409):
            self._ok(r)
            raise PeerRefused(r.status_code, "unexpected STOW-RS status")
        doc = r.json() if r.content else {}
        return doc if isinstance(doc, dict) else {}

    # -- a Tessera peer's change feed --------------------------------------------------
    def changes(self, cursor: str, limit: int = 200, wait: int = 20) -> dict[str, Any]:
        params = {"limit": str(limit), "timeout": str(int(wait))}
        if cursor:
            params["cursor"] = cursor
        r = self._ok(self.request("GET", "/changefeed", params=params))
        doc: dict[str, Any] = r.json()
        return doc


def _value(row: dict[str, Any], tag: str) -> str:
    value = (row.get(tag) or {}).get("Value") or [""]
    return str(value[0])
