"""The measurements, async functions against DICOMweb base URLs (``http://host:port/root``).

- :func:`store`: STOW-RS throughput; request bodies are built beforehand
  (:func:`stow_bodies`), so only sending them and the server's work are timed.
- :func:`latency`: sequential requests (one keep-alive client per target, requests
  alternating between targets), p50/p95 in ms; used for QIDO-RS searches and series
  ``/metadata``.
- :func:`retrieve`: WADO-RS whole-study retrieval, N studies in parallel, counting the
  bytes and the parts of each multipart answer as they stream in.

Every loop is bounded by its input. Only loopback URLs are accepted. Requests ask for
``Accept-Encoding: identity``: compressing answers on a loopback link would only measure
zlib, and the two servers do not compress the same things.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from bench.dataset import Instance

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
DICOM_JSON = "application/dicom+json"
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
BOUNDARY = "tessera-bench-3f9c1d2e8a7b4c6d9e0f1a2b3c4d5e6f"
MB = 1_000_000  # throughput is reported in MB/s with MB = 10^6 bytes
MAX_ERRORS_KEPT = 5


def check_loopback(url: str) -> None:
    """Refuse any target that is not on this machine's loopback interface."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise ValueError(f"benchmark targets must be on 127.0.0.1, not {host!r} ({url})")


def client(base_url: str, concurrency: int = 1) -> httpx.AsyncClient:
    """A keep-alive client holding at most ``concurrency`` connections to ``base_url``."""
    check_loopback(base_url)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        trust_env=False,  # never a proxy, even if the environment names one
        timeout=httpx.Timeout(600.0, connect=10.0),
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        headers={"Accept-Encoding": "identity"},
    )


async def _bounded(
    items: Iterable[Any], concurrency: int, work: Callable[[Any], Awaitable[None]]
) -> None:
    """Run ``work`` over ``items`` with at most ``concurrency`` calls in flight."""
    todo = iter(items)

    async def worker() -> None:
        for item in todo:  # shared iterator: each item is taken by exactly one worker
            await work(item)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def percentile(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(samples, q)) if samples else float("nan")


@dataclass
class Throughput:
    """A timed run over a whole workload."""

    label: str
    concurrency: int
    requests: int = 0
    instances: int = 0
    bytes: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0  # this process's CPU time over the run
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)

    @property
    def instances_per_s(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds else 0.0

    def add(self, other: Throughput) -> None:
        """Fold another run of the same workload into this one (totals and samples)."""
        self.requests += other.requests
        self.instances += other.instances
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.client_cpu_seconds += other.client_cpu_seconds
        self.failures += other.failures
        self.errors += other.errors[: MAX_ERRORS_KEPT - len(self.errors)]
        self.request_ms += other.request_ms

    def fail(self, count: int, message: str) -> None:
        self.failures += count
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message[:300])

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "instances": self.instances,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "instances_per_s": round(self.instances_per_s, 2),
            "mb_per_s": round(self.mb_per_s, 2),
            "client_cpu_share": round(self.client_cpu_seconds / self.seconds, 3)
            if self.seconds
            else None,
            "request_ms_p50": round(percentile(self.request_ms, 50), 2),
            "request_ms_p95": round(percentile(self.request_ms, 95), 2),
            "failures": self.failures,
            "errors": self.errors,
        }


# --- STOW-RS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StowBody:
    """One prepared STOW-RS request: a multipart/related body of whole DICOM files."""

    content: bytes
    instances: int
    payload_bytes: int  # the DICOM files alone, without multipart framing


def _chunks(instances: Sequence[Instance], per_request: int) -> list[list[Instance]]:
    """Groups of at most ``per_request`` instances, in dataset order, never spanning studies."""
    groups: list[list[Instance]] = []
    for inst in instances:
        last = groups[-1] if groups else None
        if last is None or len(last) == per_request or last[0].study != inst.study:
            groups.append([inst])
        else:
            last.append(inst)
    return groups


def stow_bodies(instances: Sequence[Instance], per_request: int) -> list[StowBody]:
    """Read the files and frame them as STOW-RS bodies of ``per_request`` instances each."""
    delimiter = f"--{BOUNDARY}".encode()
    head = delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n"
    bodies = []
    for group in _chunks(instances, per_request):
        files = [inst.path.read_bytes() for inst in group]
        if any(delimiter in f for f in files):
            raise RuntimeError("the multipart boundary occurs in a DICOM file; change BOUNDARY")
        content = b"".join(head + f + b"\r\n" for f in files) + delimiter + b"--\r\n"
        bodies.append(StowBody(content, len(files), sum(len(f) for f in files)))
    return bodies


def _sequence_length(answer: dict[str, Any], tag: str) -> int:
    return len((answer.get(tag) or {}).get("Value") or [])


async def store(base_url: str, bodies: Sequence[StowBody], concurrency: int) -> Throughput:
    """POST every body to ``/studies`` with ``concurrency`` clients; count stored instances
    from each answer's ReferencedSOPSequence (0008,1199)."""
    label = f"{bodies[0].instances if bodies else 0} per request"
    result = Throughput(label, concurrency)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": DICOM_JSON,
    }

    async with client(base_url, concurrency) as http:

        async def post(body: StowBody) -> None:
            started = time.perf_counter()
            answer = await http.post("/studies", content=body.content, headers=headers)
            result.request_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            stored = 0
            if answer.status_code in (200, 202):
                stored = _sequence_length(answer.json(), "00081199")
            result.instances += stored
            result.bytes += body.payload_bytes if stored == body.instances else 0
            if stored != body.instances:
                result.fail(
                    body.instances - stored,
                    f"HTTP {answer.status_code}: {stored}/{body.instances} stored: {answer.text}",
                )

        started, cpu = time.perf_counter(), time.process_time()
        await _bounded(bodies, concurrency, post)
        result.seconds = time.perf_counter() - started
        result.client_cpu_seconds = time.process_time() - cpu
    return result


# --- QIDO-RS and metadata latency ------------------------------------------------------------


@dataclass
class Latency:
    """Sequential response times of one kind of request."""

    name: str
    example: str
    samples_ms: list[float] = field(default_factory=list)
    answers: int = 0  # results (JSON array items) over one pass of the distinct paths
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p95(self) -> float:
        return percentile(self.samples_ms, 95)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "example": self.example,
            "n": len(self.samples_ms),
            "p50_ms": round(self.p50, 3),
            "p95_ms": round(self.p95, 3),
            "mean_ms": round(float(np.mean(self.samples_ms)), 3) if self.samples_ms else None,
            "answers": self.answers,
            "failures": self.failures,
            "errors": self.errors,
        }


async def latency(
    targets: Mapping[str, str],
    name: str,
    paths: Sequence[str],
    repetitions: int,
    warmup: int = 3,
) -> dict[str, Latency]:
    """GET ``paths`` in turn (``warmup`` untimed first), ``repetitions`` timed requests per
    target. With several targets (name -> base URL) the requests alternate between them,
    each round in the opposite order to the last, so a busy moment of the machine falls
    on every target alike."""
    results = {t: Latency(name, paths[0]) for t in targets}
    counted: dict[str, set[str]] = {t: set() for t in targets}
    async with AsyncExitStack() as stack:
        clients = {t: await stack.enter_async_context(client(u, 1)) for t, u in targets.items()}
        order = list(targets)
        for i in range(warmup + repetitions):
            path = paths[i % len(paths)]
            for t in order if i % 2 == 0 else reversed(order):
                result = results[t]
                started = time.perf_counter()
                answer = await clients[t].get(path, headers={"Accept": DICOM_JSON})
                elapsed_ms = (time.perf_counter() - started) * 1000
                if answer.status_code not in (200, 204):
                    result.failures += 1
                    if len(result.errors) < MAX_ERRORS_KEPT:
                        result.errors.append(f"{path}: HTTP {answer.status_code}: {answer.text}")
                    continue
                if i >= warmup:
                    result.samples_ms.append(elapsed_ms)
                if path not in counted[t]:
                    counted[t].add(path)
                    result.answers += len(answer.json()) if answer.content else 0
    return results


# --- WADO-RS retrieve -----------------------------------------------------------------------


@dataclass(frozen=True)
class StudyToRetrieve:
    uid: str
    instances: int
    payload_bytes: int


class _PartCounter:
    """Counts multipart delimiters in a stream of chunks (across chunk borders)."""

    def __init__(self, boundary: str) -> None:
        self.delimiter = b"--" + boundary.encode()
        self.tail = b""
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        self.count += data.count(self.delimiter)
        # the tail is one byte shorter than a delimiter, so nothing in it was counted yet
        self.tail = data[1 - len(self.delimiter) :]

    @property
    def parts(self) -> int:
        return max(self.count - 1, 0)  # the closing delimiter ends with "--"


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"')
    raise ValueError(f"no boundary in {content_type!r}")


async def retrieve(
    base_url: str, studies: Sequence[StudyToRetrieve], concurrency: int, passes: int = 1
) -> Throughput:
    """GET each whole study (``passes`` times) as multipart DICOM, ``concurrency`` at once."""
    result = Throughput("whole study", concurrency)
    async with client(base_url, concurrency) as http:

        async def get(study: StudyToRetrieve) -> None:
            started = time.perf_counter()
            received = 0
            async with http.stream(
                "GET", f"/studies/{study.uid}", headers={"Accept": RETRIEVE_ACCEPT}
            ) as answer:
                if answer.status_code != 200:
                    await answer.aread()
                    result.fail(study.instances, f"HTTP {answer.status_code}: {answer.text}")
                    return
                counter = _PartCounter(_boundary(answer.headers["content-type"]))
                async for chunk in answer.aiter_raw():
                    received += len(chunk)
                    counter.feed(chunk)
            result.request_ms.append((time.perf_counter() - started) * 1000)
            result.requests += 1
            result.bytes += received
            result.instances += counter.parts
            if counter.parts != study.instances or received < study.payload_bytes:
                result.fail(
                    study.instances - counter.parts,
                    f"{study.uid}: {counter.parts}/{study.instances} parts, {received} bytes "
                    f"for {study.payload_bytes} bytes of files",
                )

        started, cpu = time.perf_counter(), time.process_time()
        await _bounded([s for _ in range(passes) for s in studies], concurrency, get)
        result.seconds = time.perf_counter() - started
        result.client_cpu_seconds = time.process_time() - cpu
    return result


async def stored_counts(base_url: str) -> tuple[int, int]:
    """(studies, instances) the target reports, from one ``/studies`` search."""
    async with client(base_url, 1) as http:
        answer = await http.get(
            "/studies",
            params={"limit": "10000", "includefield": "00201208"},
            headers={"Accept": DICOM_JSON},
        )
        answer.raise_for_status()
        found = answer.json() if answer.content else []
    instances = sum(int((s.get("00201208") or {}).get("Value", [0])[0]) for s in found)
    return len(found), instances
