"""STOW-RS with 1 and 2 ingest (and router) processes (issue 12, "scale with processes").

For each configuration a fresh ``tessera run`` (as ``make run`` starts it) stores the
benchmark dataset (``bench/dataset.py``, 0.5 MB CT/MR instances) one instance per
request from 4 clients; the table gives instances/s and the server CPU per stored
instance, in all and per service (utime + stime of every process of the run, from
``/proc``, before and after). On a machine of N cores the ceiling is N cores divided by
the CPU per instance: once the processes together use every core, another process only
adds scheduling.

    .venv/bin/python bench/stow_workers.py                 # 8 studies: 400 instances
    .venv/bin/python bench/stow_workers.py --studies 4 --clients 8
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import re
import shutil
import tempfile
from collections import defaultdict

from bench.cluster import TesseraCluster, start_tessera
from bench.dataset import Spec, ensure
from bench.workloads import store, stow_bodies

CONFIGURATIONS = [(1, 1), (2, 1), (2, 2)]  # (ingest processes, router processes)
TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return out
    for child in children:
        out += _tree(int(child))
    return out


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _names(cluster: TesseraCluster) -> dict[int, str]:
    """PID -> service, from the supervisor's log (workers are counted with their parent)."""
    log = cluster.log_path.read_text(errors="replace")
    names = {int(p): n for n, p in re.findall(r"started (\S+) \(pid (\d+)\)", log)}
    for kind, pattern in (
        ("postgres", r"PostgreSQL \S+ \(pid (\d+)"),
        ("redis", r"Redis \S+ \(pid (\d+)"),
    ):
        for p in re.findall(pattern, log):
            names[int(p)] = kind
    return names


def cpu_by_service(cluster: TesseraCluster) -> dict[str, float]:
    names = _names(cluster)
    totals: dict[str, float] = defaultdict(float)
    for top, name in names.items():
        for pid in _tree(top):
            totals[name] += _cpu(pid)
    return totals


def by_cpu(item: tuple[str, float]) -> float:
    return -item[1]


def run(studies: int, clients: int) -> list[dict[str, object]]:
    data = ensure(Spec(studies=studies))
    bodies = stow_bodies(data.instances, 1)
    rows = []
    for ingest, router in CONFIGURATIONS:
        root = Path(tempfile.mkdtemp(prefix="tessera-stow-workers-"))
        root.chmod(0o711)
        env = {"TESSERA_INGEST_WORKERS": str(ingest), "TESSERA_ROUTER_WORKERS": str(router)}
        cluster = start_tessera(root, timeout=300, env=env)
        try:
            before = cpu_by_service(cluster)
            result = asyncio.run(store(cluster.dicomweb_url, bodies, clients))
            after = cpu_by_service(cluster)
            spent = {k: v - before.get(k, 0.0) for k, v in after.items()}
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
        n = max(result.instances, 1)
        rows.append({
            "ingest": ingest,
            "router": router,
            "instances": result.instances,
            "failed": len(bodies) - result.instances,
            "inst_per_s": result.instances / result.seconds,
            "cpu_ms_per_instance": 1000 * sum(spent.values()) / n,
            "per_service_ms": {
                k: round(1000 * v / n, 2) for k, v in sorted(spent.items(), key=by_cpu) if v > 0
            },
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=8, help="studies of 2 x 25 instances")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args(argv)
    rows = run(args.studies, args.clients)
    print(f"\nSTOW-RS, 1 instance per request, {args.clients} clients, {os.cpu_count()} cores")
    print("| ingest | router | inst/s | server CPU ms/instance | by service (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        services = ", ".join(f"{k} {v}" for k, v in r["per_service_ms"].items())  # type: ignore[attr-defined]
        print(f"| {r['ingest']} | {r['router']} | {r['inst_per_s']:.0f} |"
              f" {r['cpu_ms_per_instance']:.1f} | {services} |")  # fmt: skip
        if r["failed"]:
            print(f"  ({r['failed']} not stored)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
