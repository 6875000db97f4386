"""CPU time (utime + stime, from ``/proc``) of a server's processes, by service: what a
throughput figure cost. Tessera's services are named from what its supervisor logged
(``started <service> (pid N)``, PostgreSQL's and Redis's lines); each counts with its
children (pre-forked workers, Celery's pool, PostgreSQL's backends)."""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

CpuProbe = Callable[[], dict[str, float]]  # service -> CPU seconds so far


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += tree(int(child))
    return out


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in tree(pid))


def tessera_services(log_text: str) -> dict[int, str]:
    """PID -> service, from a ``tessera run`` supervisor's log (the last start of each
    counts: a restarted service has a new PID)."""
    names = {int(p): n for n, p in re.findall(r"started (\S+) \(pid (\d+)\)", log_text)}
    for kind, pattern in (
        ("postgres", r"PostgreSQL \S+ \(pid (\d+)"),
        ("redis", r"Redis \S+ \(pid (\d+)"),
    ):
        for p in re.findall(pattern, log_text):
            names[int(p)] = kind
    return names


def by_service(names: dict[int, str]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for top, name in names.items():
        totals[name] += tree_cpu_seconds(top)
    return dict(totals)


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def settle_disks(quiet: float = 1.0, limit: float = 30.0) -> float:
    """Write back the page cache, then wait (at most ``limit`` s) until no block device
    has written or discarded a sector for ``quiet`` s: the seconds waited. So what a
    server stopped and deleted just before wrote and freed (its dirty pages, the trims of
    a ``discard`` mount) is not flushed in the next one's time."""
    started = time.monotonic()
    os.sync()
    last, still_since = _disk_activity(), time.monotonic()
    while time.monotonic() - started < limit:
        time.sleep(0.25)
        now = _disk_activity()
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return time.monotonic() - started


def _disk_activity() -> tuple[int, ...]:
    """Sectors written and discarded and I/Os in flight, over every whole disk."""
    out = []
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if len(f) >= 14 and not f[2].startswith(("loop", "ram")):
            out += [int(f[9]), int(f[11]), int(f[16]) if len(f) > 16 else 0]
    return tuple(out)
