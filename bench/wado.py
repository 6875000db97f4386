"""The WADO measurements of issue 4, async functions against DICOMweb roots.

- :func:`series_metadata`: series ``/metadata`` of a big series, the first request (no
  earlier metadata request since the load) timed apart, then sequential keep-alive
  requests, p50/p95; every instance must be in each answer.
- :func:`frames`: ``/frames/1`` of distinct instances with N requests in flight (one
  connection each), frames/s over the wall time and p50/p95 per request; each answer
  must hold exactly one part of the expected size (native) or a JPEG 2000 code stream.
- :func:`rendered`: ``/rendered`` (``image/jpeg``) of instances never rendered before
  (cold: nothing cached), then the same instances again (cached on Tessera; Orthanc
  keeps no renderings), sequential.
- :func:`raw_read` and :func:`drop_caches`: the storage folder's read speed, the ceiling
  of any whole-study retrieval (see ``bench/wado_run.py``).

Requests alternate between targets (each round in the opposite order) so a busy moment
of the shared machine falls on both; every request says ``Accept-Encoding: identity``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import workloads
from bench.workloads import MAX_ERRORS_KEPT, MB, client, percentile

FRAMES_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
JPEG_SOI = b"\xff\xd8\xff"
J2K_SIGNATURES = (b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")  # code stream, JP2 file
READ_CHUNK = 1024 * 1024


def summarize(samples_ms: Sequence[float]) -> dict[str, Any]:
    """n, p50, p95, mean, min and max of response times in ms (None when empty)."""
    if not samples_ms:
        return {
            "n": 0,
            "p50_ms": None,
            "p95_ms": None,
            "mean_ms": None,
            "min_ms": None,
            "max_ms": None,
        }
    return {
        "n": len(samples_ms),
        "p50_ms": round(percentile(samples_ms, 50), 3),
        "p95_ms": round(percentile(samples_ms, 95), 3),
        "mean_ms": round(sum(samples_ms) / len(samples_ms), 3),
        "min_ms": round(min(samples_ms), 3),
        "max_ms": round(max(samples_ms), 3),
    }


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart media type (quotes removed)."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"')
    raise ValueError(f"no boundary in {content_type!r}")


def multipart_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a ``multipart/related`` body (RFC 2046 5.1.1): headers (lower-case
    names) and payload of each, without the CRLF that belongs to the next delimiter."""
    delimiter = b"--" + boundary_of(content_type).encode()
    start = body.find(delimiter)
    if start < 0:
        raise ValueError("no multipart delimiter in the body")
    parts = []
    position = start + len(delimiter)
    while not body.startswith(b"--", position):  # "--" after a delimiter closes the body
        line_end = body.index(b"\r\n", position)
        head_end = body.index(b"\r\n\r\n", line_end)
        headers = {}
        for line in body[line_end + 2 : head_end].split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        following = body.find(b"\r\n" + delimiter, head_end + 4)
        if following < 0:
            raise ValueError("a part is not closed by a delimiter")
        parts.append((headers, body[head_end + 4 : following]))
        position = following + 2 + len(delimiter)
    return parts


def frame_problem(body: bytes, content_type: str, native_size: int | None) -> str | None:
    """Why an answer to ``/frames/1`` is wrong (None if right): one part, holding
    ``native_size`` bytes for native pixel data, else a JPEG 2000 code stream."""
    try:
        parts = multipart_parts(body, content_type)
    except ValueError as error:
        return f"not multipart: {error}"
    if len(parts) != 1:
        return f"{len(parts)} parts, expected 1"
    payload = parts[0][1]
    if native_size is not None:
        return None if len(payload) == native_size else f"{len(payload)} bytes, not {native_size}"
    return None if payload.startswith(J2K_SIGNATURES) else f"not JPEG 2000: {payload[:8]!r}"


@dataclass
class Timed:
    """Response times and failures of one kind of request on one target."""

    samples_ms: list[float] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.failures += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message[:300])

    def summary(self) -> dict[str, Any]:
        return {**summarize(self.samples_ms), "failures": self.failures, "errors": self.errors}


def _orders(targets: Mapping[str, str], rounds: int) -> list[list[str]]:
    names = list(targets)
    return [names if i % 2 == 0 else names[::-1] for i in range(rounds)]


async def series_metadata(
    targets: Mapping[str, str], path: str, instances: int, repetitions: int
) -> dict[str, dict[str, Any]]:
    """The first ``/metadata`` request of ``path`` apart ("cold"), then ``repetitions``
    timed ones; an answer without exactly ``instances`` items is a failure."""
    first = {t: Timed() for t in targets}
    warm = {t: Timed() for t in targets}
    async with AsyncExitStack() as stack:
        http = {t: await stack.enter_async_context(client(u, 1)) for t, u in targets.items()}
        for i, order in enumerate(_orders(targets, repetitions + 1)):
            for t in order:
                timed = first[t] if i == 0 else warm[t]
                started = time.perf_counter()
                answer = await http[t].get(path, headers={"Accept": workloads.DICOM_JSON})
                elapsed = (time.perf_counter() - started) * 1000
                found = len(answer.json()) if answer.status_code == 200 else -1
                if found != instances:
                    timed.fail(f"HTTP {answer.status_code}, {found} of {instances} instances")
                    continue
                timed.samples_ms.append(elapsed)
    return {t: {"first": first[t].summary(), "warm": warm[t].summary()} for t in targets}


@dataclass
class FrameRun:
    """One pass of ``/frames/1`` requests over distinct instances, N in flight."""

    concurrency: int
    timed: Timed = field(default_factory=Timed)
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    server_cpu_seconds: dict[str, float] = field(default_factory=dict)  # by process

    def add(self, other: FrameRun) -> None:
        for name, seconds in other.server_cpu_seconds.items():
            self.server_cpu_seconds[name] = self.server_cpu_seconds.get(name, 0.0) + seconds
        self.timed.samples_ms += other.timed.samples_ms
        self.timed.failures += other.timed.failures
        self.timed.errors += other.timed.errors[: MAX_ERRORS_KEPT - len(self.timed.errors)]
        self.frames += other.frames
        self.bytes += other.bytes
        self.seconds += other.seconds
        self.client_cpu_seconds += other.client_cpu_seconds

    def summary(self) -> dict[str, Any]:
        seconds = self.seconds or float("nan")
        return {
            **self.timed.summary(),
            "concurrency": self.concurrency,
            "frames": self.frames,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 4),
            "frames_per_s": round(self.frames / seconds, 2) if self.seconds else None,
            "mb_per_s": round(self.bytes / MB / seconds, 2) if self.seconds else None,
            "client_cpu_share": round(self.client_cpu_seconds / seconds, 3)
            if self.seconds
            else None,
            "server_cpu_ms_per_frame": {
                name: round(used * 1000 / self.frames, 3)
                for name, used in self.server_cpu_seconds.items()
                if self.frames
            },
        }


async def frames(
    base_url: str,
    paths: Sequence[str],
    concurrency: int,
    native_size: int | None,
    server_pids: Mapping[str, int] | None = None,
    authorization: str | None = None,
) -> FrameRun:
    """GET ``{path}/frames/1`` for every instance path, ``concurrency`` in flight on as
    many keep-alive connections (opened before the clock starts by a small search).

    aiohttp, not httpx: with 100 connections httpx's pool took most of a core for
    ~40 frames/s here, so the client, not the server, was measured. The CPU time of
    each process in ``server_pids`` is taken over the timed part."""
    workloads.check_loopback(base_url)
    run = FrameRun(concurrency)
    root = base_url.rstrip("/")
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=600, connect=10),
        headers={"Accept-Encoding": "identity"}
        | ({"Authorization": authorization} if authorization else {}),
    )
    async with session:
        warm = [session.get(root + "/studies?limit=1") for _ in range(concurrency)]
        for answer in await asyncio.gather(*warm):
            await answer.read()
            answer.release()
        headers = {"Accept": FRAMES_ACCEPT}

        async def get(path: str) -> None:
            started = time.perf_counter()
            try:
                async with session.get(root + path + "/frames/1", headers=headers) as answer:
                    body = await answer.read()
                    status, kind = answer.status, answer.headers.get("Content-Type", "")
            except aiohttp.ClientError as error:
                run.timed.fail(f"{path}: {error!r}")
                return
            elapsed = (time.perf_counter() - started) * 1000
            problem = (
                f"HTTP {status}: {body[:200]!r}"
                if status != 200
                else frame_problem(body, kind, native_size)
            )
            if problem:
                run.timed.fail(f"{path}: {problem}")
                return
            run.timed.samples_ms.append(elapsed)
            run.frames += 1
            run.bytes += len(body)

        servers = process_cpu_seconds(server_pids or {})
        started, cpu = time.perf_counter(), time.process_time()
        await workloads._bounded(paths, concurrency, get)
        run.seconds = time.perf_counter() - started
        run.client_cpu_seconds = time.process_time() - cpu
        after = process_cpu_seconds(server_pids or {})
        run.server_cpu_seconds = {n: after[n] - servers[n] for n in after if n in servers}
    return run


async def rendered(
    targets: Mapping[str, str],
    paths: Sequence[str],
    cached_repetitions: int,
    server_pids: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{path}/rendered`` as ``image/jpeg``: once per path never rendered before (cold),
    then ``cached_repetitions`` requests cycling over the same paths (cached). With
    ``server_pids`` (target -> process name -> PID), each phase also reports the CPU time
    of each of the target's processes per request."""
    phases = {"cold": {t: Timed() for t in targets}, "cached": {t: Timed() for t in targets}}
    cpu: dict[str, dict[str, dict[str, float]]] = {p: {} for p in phases}
    pids = server_pids or {}
    async with AsyncExitStack() as stack:
        http = {t: await stack.enter_async_context(client(u, 1)) for t, u in targets.items()}
        for phase, rounds in (("cold", len(paths)), ("cached", cached_repetitions)):
            before = {t: process_cpu_seconds(pids.get(t, {})) for t in targets}
            for i, order in enumerate(_orders(targets, rounds)):
                path = paths[i % len(paths)] + "/rendered"
                for t in order:
                    timed = phases[phase][t]
                    started = time.perf_counter()
                    answer = await http[t].get(path, headers={"Accept": "image/jpeg"})
                    elapsed = (time.perf_counter() - started) * 1000
                    kind = answer.headers.get("content-type", "")
                    if answer.status_code != 200 or not answer.content.startswith(JPEG_SOI):
                        timed.fail(f"{path}: HTTP {answer.status_code} {kind}: {answer.text[:200]}")
                        continue
                    timed.samples_ms.append(elapsed)
            for t in targets:
                after = process_cpu_seconds(pids.get(t, {}))
                cpu[phase][t] = {
                    n: round((after[n] - before[t][n]) * 1000 / max(rounds, 1), 3)
                    for n in after
                    if n in before[t]
                }
    return {
        t: {
            p: {**phases[p][t].summary(), "server_cpu_ms_per_request": cpu[p].get(t, {})}
            for p in phases
        }
        for t in targets
    }


# --- the storage folder ----------------------------------------------------------------------


def object_path(objects: Path, dicom_file: Path) -> Path:
    """Where Tessera's local store keeps a file stored unchanged: the SHA-256 of its bytes
    (:func:`tessera.shared.storage.instance_key`)."""
    from tessera.shared.storage import instance_key

    digest = hashlib.sha256(dicom_file.read_bytes()).hexdigest()
    return objects / instance_key(digest)


def raw_read(files: Sequence[Path]) -> dict[str, Any]:
    """Read every file whole, in 1 MiB reads, one after the other (plain Python, one
    thread): bytes, seconds and MB/s."""
    total = 0
    started = time.perf_counter()
    for path in files:
        with path.open("rb", buffering=0) as fp:
            while chunk := fp.read(READ_CHUNK):
                total += len(chunk)
    seconds = time.perf_counter() - started
    return {
        "bytes": total,
        "seconds": round(seconds, 4),
        "mb_per_s": round(total / MB / seconds, 2),
    }


def drop_caches() -> bool:
    """Write dirty pages and drop the page cache (root only); False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


# --- where the servers' time goes -------------------------------------------------------------


def cpu_seconds_of_stat(stat: str, ticks_per_second: int) -> float:
    """User + system CPU seconds of a process from the text of ``/proc/<pid>/stat``
    (fields 14 and 15, counted after the parenthesised command name, which may hold
    spaces)."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def process_cpu_seconds(pids: Mapping[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each named process (missing processes are left out)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds_of_stat(Path(f"/proc/{pid}/stat").read_text(), ticks)
        except (OSError, ValueError, IndexError):
            continue
    return out


def hot_functions(collapsed: str, top: int = 15) -> list[tuple[str, float, float]]:
    """The functions with the most samples in py-spy's ``--format raw`` output (collapsed
    stacks: ``frame;frame;... count`` per line): (function, % self, % inclusive),
    by inclusive share then self share; recursion is counted once per stack."""
    total = 0
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return []
    ranked = sorted(inclusive, key=lambda f: (-inclusive[f], -own.get(f, 0), f))
    return [
        (f, round(100 * own.get(f, 0) / total, 2), round(100 * inclusive[f] / total, 2))
        for f in ranked[:top]
    ]
