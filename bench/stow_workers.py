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
    .venv/bin/python bench/stow_workers.py --only 1x1 --profile bench/results
                                                # + py-spy of router, ingest, index worker
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import os
import shutil
import tempfile

from bench import proccpu
from bench.cluster import TesseraCluster, start_tessera
from bench.dataset import Spec, ensure
from bench.wado_run import Profiler
from bench.workloads import store, stow_bodies

CONFIGURATIONS = [(1, 1), (2, 1), (2, 2)]  # (ingest processes, router processes)


def _names(cluster: TesseraCluster) -> dict[int, str]:
    return proccpu.tessera_services(cluster.log_path.read_text(errors="replace"))


def cpu_by_service(cluster: TesseraCluster) -> dict[str, float]:
    return proccpu.by_service(_names(cluster))


def by_cpu(item: tuple[str, float]) -> float:
    return -item[1]


PROFILED = ("router", "ingest", "index-worker")


def run(
    studies: int,
    clients: int,
    configurations: list[tuple[int, int]] = CONFIGURATIONS,
    profile: Path | None = None,
    gil: bool = False,
    per_request: int = 1,
) -> list[dict[str, object]]:
    data = ensure(Spec(studies=studies))
    bodies = stow_bodies(data.instances, per_request)
    rows = []
    for ingest, router in configurations:
        root = Path(tempfile.mkdtemp(prefix="tessera-stow-workers-"))
        root.chmod(0o711)
        env = {"TESSERA_INGEST_WORKERS": str(ingest), "TESSERA_ROUTER_WORKERS": str(router)}
        cluster = start_tessera(root, timeout=300, env=env)
        try:
            proccpu.settle_disks()  # the previous run's writes are not flushed in this one's time
            before = cpu_by_service(cluster)
            profiler = None
            if profile is not None:
                pids = {name: pid for pid, name in _names(cluster).items()}
                profile.mkdir(parents=True, exist_ok=True)
                prefix = f"stow-profile-{ingest}x{router}"
                profiler = Profiler(pids, profile, PROFILED, prefix, gil)
            result = asyncio.run(store(cluster.dicomweb_url, bodies, clients))
            after = cpu_by_service(cluster)
            hot = profiler.stop() if profiler else {}
            spent = proccpu.spent(before, after)
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
        n = max(result.instances, 1)
        rows.append({
            "ingest": ingest,
            "router": router,
            "instances": result.instances,
            "failed": sum(b.instances for b in bodies) - result.instances,
            "inst_per_s": result.instances / result.seconds,
            "cpu_ms_per_instance": 1000 * sum(spent.values()) / n,
            "per_service_ms": {
                k: round(1000 * v / n, 2) for k, v in sorted(spent.items(), key=by_cpu) if v > 0
            },
            "profiles": hot,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=8, help="studies of 2 x 25 instances")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=1, help="instances per request")
    parser.add_argument("--only", action="append", metavar="INGESTxROUTER",
                        help="only these configurations, e.g. 1x1 (repeatable)")  # fmt: skip
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the router, ingest and index worker into DIR")  # fmt: skip
    parser.add_argument("--gil", action="store_true",
                        help="sample only threads holding the GIL (Python's CPU)")  # fmt: skip
    args = parser.parse_args(argv)
    configurations = CONFIGURATIONS
    if args.only:
        configurations = [(int(a), int(b)) for a, b in (o.split("x") for o in args.only)]
    rows = run(args.studies, args.clients, configurations, args.profile, args.gil, args.per_request)
    print(
        f"\nSTOW-RS, {args.per_request} instance(s) per request, {args.clients} clients,"
        f" {os.cpu_count()} cores"
    )
    print("| ingest | router | inst/s | server CPU ms/instance | by service (ms) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        services = ", ".join(f"{k} {v}" for k, v in r["per_service_ms"].items())  # type: ignore[attr-defined]
        print(f"| {r['ingest']} | {r['router']} | {r['inst_per_s']:.0f} |"
              f" {r['cpu_ms_per_instance']:.1f} | {services} |")  # fmt: skip
        if r["failed"]:
            print(f"  ({r['failed']} not stored)")
    for r in rows:
        for name, found in r["profiles"].items():  # type: ignore[attr-defined]
            print(f"\npy-spy, {name} ({r['ingest']}x{r['router']}): {found['file']}")
            print("| function | % self | % inclusive |\n| --- | --- | --- |")
            for function, own, inclusive in found["hot"]:
                print(f"| `{function}` | {own} | {inclusive} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
