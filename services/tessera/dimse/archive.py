"""The archive as the gateway sees it: the router's DICOMweb API (PS3.18), called from
the association threads with the calling AE's credential.

* :meth:`Archive.store`: one instance, a Part 10 file on disk, by STOW-RS, streamed from
  the file; the STOW answer's Failure / Warning Reason and Error Comment become the
  C-STORE status (PS3.4 B.2.3: the same codes).
* :meth:`Archive.search`: QIDO-RS, every page.
* :meth:`Archive.fetch`: one instance by WADO-RS into a file, as stored or in the
  Transfer Syntax asked for.

A dependency that is away (the router, a shard, a timeout) is ``Unavailable``: the
DIMSE answer is then "out of resources" (A700 / A701...), never a dropped association.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from tessera.shared.auth import Principal
from tessera.shared.auth.internal import InternalCredential
from tessera.shared.settings import Settings
from tessera.shared.status import FailureReason

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PAGE = 1000  # QIDO-RS page (the router's qido_max_limit default)


class Unavailable(Exception):
    """The archive did not answer (in time): try again later."""


class Refused(Exception):
    """The archive answered with a client error: ``status`` and its reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StoreResult:
    status: int  # the C-STORE status (PS3.4 B.2.3)
    comment: str = ""  # Error Comment (0000,0902): why, for a failure or warning


def router_url(settings: Settings) -> str:
    base = settings.dimse_router_url or f"http://{settings.host}:{settings.router_port}"
    return base.rstrip("/") + settings.dicomweb_prefix


class Archive:
    def __init__(self, settings: Settings) -> None:
        self.base = router_url(settings)
        self.credential = InternalCredential.gateway(settings)
        verify: ssl.SSLContext | bool = True
        if settings.dimse_router_ca:
            verify = ssl.create_default_context(cafile=settings.dimse_router_ca)
        # a STOW waits for the index commit (index_timeout) behind the router's hop
        self.client = httpx.Client(
            timeout=httpx.Timeout(settings.index_timeout + 15, connect=5.0),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            verify=verify,
        )

    def close(self) -> None:
        self.client.close()

    def _headers(self, principal: Principal, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if self.credential is not None:
            headers["Authorization"] = self.credential.header(principal)
        return headers

    # -- STOW-RS ---------------------------------------------------------------------------
    def store(self, path: Path, principal: Principal) -> StoreResult:
        """STOW-RS of the Part 10 file at ``path`` (PS3.18 10.5), streamed from disk."""
        boundary = secrets.token_hex(16)
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = len(head) + os.path.getsize(path) + len(tail)

        def body() -> Iterator[bytes]:
            yield head
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield tail

        headers = self._headers(principal, "application/dicom+json")
        headers["Content-Type"] = (
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        )
        headers["Content-Length"] = str(size)
        try:
            r = self.client.post(self.base + "/studies", content=body(), headers=headers)
        except httpx.HTTPError as e:
            raise Unavailable(f"the archive did not answer: {type(e).__name__}") from None
        return _store_result(r)

    # -- QIDO-RS ---------------------------------------------------------------------------
    def search(
        self, resource: str, params: list[tuple[str, str]], principal: Principal
    ) -> Iterator[dict[str, Any]]:
        """Every result of a QIDO-RS search of ``resource`` (``studies``, ``series``,
        ``instances``), page after page."""
        offset = 0
        headers = self._headers(principal, "application/dicom+json")
        while True:
            page: list[tuple[str, str | int | float | bool | None]] = [
                *params,
                ("limit", str(PAGE)),
                ("offset", str(offset)),
            ]
            try:
                r = self.client.get(f"{self.base}/{resource}", params=page, headers=headers)
            except httpx.HTTPError as e:
                raise Unavailable(f"the archive did not answer: {type(e).__name__}") from None
            _raise_for(r)
            results = r.json() if r.content and r.status_code != 204 else []
            yield from results
            if len(results) < PAGE:
                return
            offset += len(results)

    # -- WADO-RS ---------------------------------------------------------------------------
    def fetch(
        self,
        study: str,
        series: str,
        instance: str,
        principal: Principal,
        transfer_syntax: str = "*",
    ) -> Path:
        """The instance as a Part 10 file (a temporary file the caller removes), as
        stored (``*``) or in ``transfer_syntax`` (PS3.18 8.7.3.5.2)."""
        url = f"{self.base}/studies/{study}/series/{series}/instances/{instance}"
        accept = f'multipart/related; type="application/dicom"; transfer-syntax={transfer_syntax}'
        fd, name = tempfile.mkstemp(prefix="tessera-dimse-", suffix=".dcm")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                with self.client.stream("GET", url, headers=self._headers(principal, accept)) as r:
                    if r.status_code >= 400:
                        r.read()
                        _raise_for(r)
                    boundary = multipart_boundary(r.headers.get("content-type", ""))
                    write_part(r.iter_bytes(CHUNK), boundary, out)
            return path
        except httpx.HTTPError as e:
            path.unlink(missing_ok=True)
            raise Unavailable(f"the archive did not answer: {type(e).__name__}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    # -- DELETE ----------------------------------------------------------------------------
    def delete(self, ref: tuple[str, str, str], principal: Principal) -> None:
        """Delete one instance (the router's DELETE); one already gone is no error."""
        url = "{}/studies/{}/series/{}/instances/{}".format(self.base, *ref)
        try:
            r = self.client.delete(url, headers=self._headers(principal, "application/json"))
        except httpx.HTTPError as e:
            raise Unavailable(f"the archive did not answer: {type(e).__name__}") from None
        if r.status_code not in (204, 404):
            _raise_for(r)


def _raise_for(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    reason = r.text.strip()[:200] if r.content else r.reason_phrase
    if r.status_code in (408, 429) or r.status_code >= 500:
        raise Unavailable(f"the archive answered {r.status_code}: {reason}")
    raise Refused(r.status_code, reason)


def _store_result(r: httpx.Response) -> StoreResult:
    if r.status_code in (401, 403):
        return StoreResult(FailureReason.NOT_AUTHORIZED, "not authorized to store")
    if r.status_code in (408, 429) or r.status_code >= 500:
        raise Unavailable(f"the archive answered {r.status_code}")
    try:
        doc = r.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        if r.status_code == 413:
            return StoreResult(FailureReason.REFUSED_OUT_OF_RESOURCES, "the instance is too large")
        return StoreResult(FailureReason.CANNOT_UNDERSTAND, f"refused ({r.status_code})")
    failed = (doc.get("00081198") or {}).get("Value") or []
    if failed:
        return _item_status(failed[0], "00081197", FailureReason.PROCESSING_FAILURE)
    stored = (doc.get("00081199") or {}).get("Value") or []
    if stored:
        return _item_status(stored[0], "00081196", 0)
    return StoreResult(FailureReason.PROCESSING_FAILURE, "the archive gave no result")


def _item_status(item: dict[str, Any], reason_tag: str, default: int) -> StoreResult:
    reason = (item.get(reason_tag) or {}).get("Value") or [default]
    comment = (item.get("00000902") or {}).get("Value") or [""]
    return StoreResult(int(reason[0]), str(comment[0])[:64])


def multipart_boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode()
    raise Unavailable("the archive's answer is not multipart")


def write_part(chunks: Iterator[bytes], boundary: bytes, out: BinaryIO) -> None:
    """Write the body of the one part of a multipart answer to ``out`` as it streams in:
    its headers skipped at the start, the closing delimiter cut off at the end."""
    head = b""
    chunk_iter = iter(chunks)
    for chunk in chunk_iter:
        head += chunk
        start = head.find(b"\r\n\r\n", max(0, head.find(b"--" + boundary)))
        if start >= 0:
            out.write(head[start + 4 :])
            break
        if len(head) > 64 * 1024:
            raise Unavailable("the archive's multipart answer has no part")
    else:
        raise Unavailable("the archive's multipart answer has no part")
    for chunk in chunk_iter:
        out.write(chunk)
    out.flush()
    size = out.tell()
    tail_size = min(size, 512)
    tail = os.pread(out.fileno(), tail_size, size - tail_size)
    end = tail.rfind(b"\r\n--" + boundary)
    if end < 0:
        raise Unavailable("the archive's multipart answer is cut short")
    out.truncate(size - tail_size + end)
