"""QIDO-RS at scale: OHIF's searches against a shard index of 10,000 to 1,000,000 instances.

For each size of ``--scale`` (instances; a study has 10 on average), in a temporary
folder deleted afterwards:

1. start PostgreSQL (``tessera.local``, as ``make run`` does; fsync off for the load,
   which reads do not notice), apply the migrations, and bulk load a
   :class:`~bench.scale_data.ScaleSet` with COPY (:mod:`bench.scale_load`: the rows the
   index writer would write), then VACUUM ANALYZE;
2. start the real index service, ``python -m tessera.index``, on a free loopback port;
3. at the ``--orthanc-instances`` sizes, also start Orthanc (:mod:`bench.orthanc`, as
   packaged) and load the same instances as DICOM files through its REST API;
4. time each search (:data:`QUERIES`) with sequential keep-alive requests, ``--warmup``
   untimed then ``--repetitions`` timed, alternating between the targets
   (:func:`bench.workloads.latency`), p50/p95 in ms;
5. ``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL of each search, as the service builds it.

Results: a table on stdout and ``bench/results/qido-scale-latest.{md,json}``. The exit
status is 1 when a target is missed (p95 over 50 ms at the largest size, or more than
twice the smallest size's p95) or a search failed. Run it as ``make bench
BENCH_ARGS=--qido-scale`` or directly::

    .venv/bin/python bench/qido_scale.py --scale 10000,100000,1000000 \\
        --orthanc-instances 10000,100000
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import datetime as dt
import os
import random
import shutil
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from typing import Any

from bench import report, scale_report, workloads
from bench.orthanc import start_orthanc
from bench.scale_data import ScaleSet
from bench.scale_load import load
from bench.scale_orthanc import upload, write_files
from tessera.local import ServerProcess, free_port, spawn, wait_until
from tessera.local.processes import start_postgres
from tessera.shared.db.migrate import apply_migrations

OHIF = "limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
TESSERA_ONLY = {"PatientName=smi, fuzzy"}  # Orthanc has no fuzzy matching


def log(message: str) -> None:
    print(f"[qido-scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def queries(data: ScaleSet, seed: int = 7) -> dict[str, list[str]]:
    """Search name -> the request paths it cycles through (OHIF's study list and filters,
    then its drill-down into 50 random studies)."""
    rng = random.Random(seed)
    studies = [data.study(i) for i in rng.sample(range(data.studies), min(50, data.studies))]
    lists = [
        ",".join(data.study(j).uid for j in rng.sample(range(data.studies), 20)) for _ in range(5)
    ]
    return {
        "studies (OHIF list)": [f"/studies?{OHIF}"],
        "PatientName=*smi*": [f"/studies?{OHIF}&PatientName=*smi*"],
        "00100020=*123*": [f"/studies?{OHIF}&00100020=*123*"],
        "StudyDate=2019": [f"/studies?{OHIF}&StudyDate=20190101-20191231"],
        "ModalitiesInStudy=MR": [f"/studies?{OHIF}&ModalitiesInStudy=MR"],
        "20 StudyInstanceUIDs": [f"/studies?StudyInstanceUID={uids}" for uids in lists],
        "series of a study": [f"/studies/{s.uid}/series" for s in studies],
        "instances of a series": [
            f"/studies/{s.uid}/series/{s.series[0][0]}/instances" for s in studies
        ],
        "PatientName=smi, fuzzy": [f"/studies?{OHIF.replace('=false', '=true')}&PatientName=smi"],
    }


class IndexService(ServerProcess):
    name = "index"

    def __init__(self, proc: Any, log_path: Path, port: int) -> None:
        super().__init__(proc, log_path)
        self.url = f"http://127.0.0.1:{port}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def start_index(dsn: str, folder: Path) -> IndexService:
    """``python -m tessera.index`` against ``dsn``, logging at warning like the bench."""
    port = free_port()
    env = {
        **os.environ,
        "TESSERA_DATABASE_URL": dsn,
        "TESSERA_INDEX_PORT": str(port),
        "TESSERA_HOST": "127.0.0.1",
        "TESSERA_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = folder / "index.log"
    proc = spawn([sys.executable, "-m", "tessera.index"], log_path, env=env, cwd=folder)
    service = IndexService(proc, log_path, port)
    wait_until(lambda: _answers(service.url + "/readyz"), proc, "index", log_path, 60)
    return service


def _folder(prefix: str, parent: Path | None) -> Path:
    """A new temporary folder PostgreSQL's own user can enter (we may run as root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    folder.chmod(0o711)
    return folder


async def measure_size(instances: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Load one size, start its targets, time every search, explain its SQL."""
    data = ScaleSet(studies=max(1, instances // 10), instances=instances, seed=args.seed)
    node: dict[str, Any] = {"instances_requested": instances, "studies": data.studies}
    folder = _folder(f"scale-{instances}-", scratch)
    with ExitStack() as stack:
        pg = stack.enter_context(start_postgres(folder / "pg", durable=False))
        await apply_migrations(pg.dsn)
        log(f"{instances}: bulk loading {data.studies} studies ...")
        started = time.perf_counter()
        node["load"] = await load(pg.dsn, data, log=log)
        node["load"]["total_seconds"] = round(time.perf_counter() - started, 1)
        node["database_bytes"] = await scale_report.database_size(pg.dsn)
        targets = {"tessera": stack.enter_context(start_index(pg.dsn, folder)).url}
        if instances in args.orthanc_sizes and not args.tessera_only:
            orthanc = stack.enter_context(start_orthanc(folder / "orthanc"))
            count = node["load"]["rows"]["instance"]
            log(f"{instances}: writing and uploading {count} files to Orthanc")
            paths = write_files(data, folder / "files")
            node["orthanc_load"] = await upload(orthanc.url, paths)
            node["orthanc_versions"] = orthanc.versions()
            targets["orthanc"] = orthanc.dicomweb_url
            log(f"  Orthanc: {node['orthanc_load']}")
        node["latency"] = {}
        for name, paths in queries(data).items():
            chosen = {
                t: u for t, u in targets.items() if t == "tessera" or name not in TESSERA_ONLY
            }
            measured = await workloads.latency(chosen, name, paths, args.repetitions, args.warmup)
            node["latency"][name] = {t: m.summary() for t, m in measured.items()}
            log("  " + name + ": " + ", ".join(
                f"{t} p50 {m.p50:.1f} p95 {m.p95:.1f} ms ({m.answers})" for t, m in measured.items()
            ))  # fmt: skip
        node["explain"] = await scale_report.explain_all(pg.dsn, queries(data))
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return node


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scratch = _folder("tessera-qido-scale-", args.workdir)
    results: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "plan": {
            "scales": args.scales,
            "orthanc_instances": sorted(args.orthanc_sizes),
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "machine": report.machine_facts(scratch),
        "sizes": {},
    }
    try:
        for instances in args.scales:
            results["sizes"][str(instances)] = await measure_size(instances, args, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["problems"] = scale_report.problems(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="QIDO-RS latency at 10k..1M instances.")
    parser.add_argument(
        "--scale", default="10000,100000,1000000", help="instances, comma-separated"
    )
    parser.add_argument(
        "--orthanc-instances", default="10000,100000", help="sizes Orthanc gets too (0: none)"
    )
    parser.add_argument("--tessera-only", action="store_true")
    parser.add_argument("--repetitions", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where the temporary data goes (/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep each size's folder")
    parser.add_argument("--results", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.scales = sorted(int(s) for s in args.scale.split(",") if s.strip())
    args.orthanc_sizes = {int(s) for s in args.orthanc_instances.split(",") if s.strip()}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    json_path, md_path = scale_report.write(results, args.results)
    print(scale_report.markdown(results))
    log(f"written {md_path} and {json_path}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
