"""``bench/run.py --wado``: the WADO speed targets of issue 4, Tessera next to Orthanc.

Plan (one run, both servers up together, requests alternating between them):

1. The dataset of :mod:`bench.wado_data` (one CT study: a 500-instance native series and
   a 200-instance JPEG 2000 series) is stored into a fresh Tessera cluster and a fresh
   Orthanc (STOW-RS, 25 instances per request, 4 clients; not a figure of this mode).
2. Series ``/metadata`` of the 500-instance series: the first request (cold: none since
   the load), then ``--metadata-repetitions`` sequential ones, p50/p95. Target ≥ 10×.
3. ``/rendered`` (JPEG) of ``--rendered-instances`` instances never rendered before
   (cold), then ``--rendered-repetitions`` requests over the same ones (cached).
4. ``/frames/1`` of every instance of a series, ``--concurrency`` (100) in flight:
   native then JPEG 2000 (as stored: ``transfer-syntax=*``), ``--frame-passes`` passes
   alternating targets; frames/s and p95. Target ≥ 2×.
5. The whole study (WADO-RS multipart, files as stored), one request at a time,
   ``--retrieve-passes`` warm passes, against the storage folder's raw read speed (every
   object file of the study in Tessera's object folder, read whole by plain Python) and
   Orthanc; then cold: page cache dropped (``/proc/sys/vm/drop_caches``) before each of
   the raw read, Tessera and Orthanc.

With ``--profile`` py-spy records Tessera's router and retrieve processes during the
native frames pass (collapsed stacks next to the results, hottest functions in the
report); CPU time per process is always recorded. Results: Markdown on stdout and
``bench/results/wado-latest.{md,json}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from bench import cluster, report, wado, wado_report, workloads
from bench.dataset import GeneratedSet
from bench.orthanc import start_orthanc
from bench.wado_data import WadoSpec, ensure


def log(message: str) -> None:
    print(f"[wado {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# native frames are also fetched this many at a time: 6, as a browser opens to one host
# (OHIF's pool), and 1, a single frame's latency (issue 12)
VIEWER_CONCURRENCY = (6, 1)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def service_pids(supervisor: int) -> dict[str, int]:
    """PIDs of the processes started as ``python -m tessera.<name>`` under ``supervisor``,
    by name; a service's further processes (forked workers, e.g. transcode's pool) are
    ``<name>[2]``, ``<name>[3]``..."""
    out: dict[str, int] = {}
    todo = [supervisor]
    while todo:
        pid = todo.pop()
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-m" in argv[:-1]:
            module = argv[argv.index(b"-m") + 1].decode()
            if module.startswith("tessera."):
                name = module.removeprefix("tessera.")
                copies = sum(1 for n in out if n == name or n.startswith(name + "["))
                out[f"{name}[{copies + 1}]" if copies else name] = pid
    return out


def _paths(data: GeneratedSet, series: str) -> list[str]:
    return [
        f"/studies/{i.study}/series/{i.series}/instances/{i.sop}"
        for i in data.instances
        if i.series == series
    ]


async def _store(urls: dict[str, str], data: GeneratedSet, results: dict[str, Any]) -> None:
    bodies = workloads.stow_bodies(data.instances, 25)
    for name, url in urls.items():
        result = await workloads.store(url, bodies, 4)
        results["load"][name] = result.summary()
        log(f"{name}: stored {result.instances} instances at {result.mb_per_s:.1f} MB/s")
        if result.failures:
            results["problems"].append(f"{name}: STOW failed: {result.errors[:1]}")


async def _frames(
    urls: dict[str, str],
    paths: list[str],
    native_size: int | None,
    pids: dict[str, dict[str, int]],
    args: argparse.Namespace,
    concurrency: int | None = None,
    authorization: str | None = None,
) -> dict[str, Any]:
    """Frame passes alternating targets, with each server process's CPU per frame."""
    label = "native" if native_size else "JPEG 2000"
    concurrency = concurrency or args.concurrency
    totals = {n: wado.FrameRun(concurrency) for n in urls}
    for n in range(args.frame_passes):
        for name in list(urls) if n % 2 == 0 else list(urls)[::-1]:
            run = await wado.frames(
                urls[name], paths, concurrency, native_size, pids[name], authorization
            )
            totals[name].add(run)
            log(f"  {name} pass {n + 1}: {run.frames / run.seconds:.1f} frames/s ({label})")
    return {n: t.summary() for n, t in totals.items()}


def _retrieve_pass(url: str, study: workloads.StudyToRetrieve) -> dict[str, Any]:
    result = asyncio.run(workloads.retrieve(url, [study], 1))
    return result.summary()


def _retrieve(
    urls: dict[str, str], data: GeneratedSet, objects: Path | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm passes (raw, then the targets alternating), then a cold one of each."""
    uid = data.studies[0].uid
    study = workloads.StudyToRetrieve(uid, data.study_instances(uid), data.study_bytes(uid))
    files = [wado.object_path(objects, i.path) for i in data.instances] if objects else []
    missing = [str(f) for f in files if not f.is_file()]
    out: dict[str, Any] = {
        "study_bytes": study.payload_bytes,
        "instances": study.instances,
        "warm": {},
        "cold": {},
        "missing_objects": missing[:3],
    }
    raw = files and not missing
    if raw:
        wado.raw_read(files)  # into the page cache
        out["warm"]["raw"] = [wado.raw_read(files) for _ in range(args.retrieve_passes)]
    for name in urls:
        _retrieve_pass(urls[name], study)  # warm-up, not counted
    for n in range(args.retrieve_passes):
        for name in list(urls) if n % 2 == 0 else list(urls)[::-1]:
            out["warm"].setdefault(name, []).append(_retrieve_pass(urls[name], study))
    if args.no_drop_caches:
        return out
    for name in (["raw"] if raw else []) + list(urls):
        if not wado.drop_caches():
            out["cold_note"] = "could not write /proc/sys/vm/drop_caches"
            break
        time.sleep(0.5)
        out["cold"][name] = [
            wado.raw_read(files) if name == "raw" else _retrieve_pass(urls[name], study)
        ]
    return out


class Profiler:
    """py-spy recording Tessera's router and retrieve while a phase runs: collapsed
    stacks (``wado-profile-<service>.txt``, for flamegraph.pl, inferno or speedscope)
    and the hottest functions, into the results."""

    def __init__(
        self,
        pids: dict[str, int],
        folder: Path,
        names: tuple[str, ...] = ("router", "retrieve"),
        prefix: str = "wado-profile",
        gil: bool = False,
    ) -> None:
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        for name in names:
            if name in pids:
                out = folder / f"{prefix}-{name}.txt"
                argv = [py_spy, "record", "--pid", str(pids[name]), "--rate", "200",
                        "--subprocesses", "--nonblocking", "--format", "raw",
                        "-o", str(out), *(["--gil"] if gil else [])]  # fmt: skip
                self.procs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL), out)

    def stop(self) -> dict[str, Any]:
        for proc, _ in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        out: dict[str, Any] = {}
        for name, (proc, path) in self.procs.items():
            proc.wait(timeout=60)
            text = path.read_text() if path.is_file() else ""
            out[name] = {"file": str(path), "hot": wado.hot_functions(text, 25)}
        return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    spec = WadoSpec(args.instances, args.encapsulated, args.size, args.seed)
    log(f"dataset {spec.key} ...")
    data = ensure(spec)
    native, j2k = data.studies[0].series[0], data.studies[0].series[-1]
    scratch = Path(tempfile.mkdtemp(prefix="tessera-wado-", dir=args.workdir))
    scratch.chmod(0o711)
    results: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "plan": {k: v for k, v in vars(args).items() if k not in ("workdir", "results")},
        "dataset": {
            **asdict(spec),
            "key": spec.key,
            "total_instances": len(data.instances),
            "megabytes": data.total_bytes / workloads.MB,
        },
        "machine": report.machine_facts(scratch),
        "load_average": {},
        "versions": {},
        "load": {},
        "problems": [],
    }
    with ExitStack() as stack:
        folders = {n: scratch / n for n in ("orthanc", "tessera")}
        for folder in folders.values():
            folder.mkdir(mode=0o711)
        orthanc = stack.enter_context(start_orthanc(folders["orthanc"], overrides=args.orthanc_set))
        tessera = stack.enter_context(cluster.start_tessera(folders["tessera"]))
        results["orthanc_config"] = orthanc.config
        results["versions"] = {**tessera.versions(), **orthanc.versions()}
        urls = {"tessera": tessera.dicomweb_url, "orthanc": orthanc.dicomweb_url}
        log(f"up: {urls}")
        asyncio.run(_store(urls, data, results))
        # after the load: transcode's pool forks its children after the cluster is ready
        pids = service_pids(tessera.pid)
        results["tessera_pids"] = pids
        server_pids = {"tessera": pids, "orthanc": {"Orthanc": orthanc.pid}}
        log(f"Tessera processes {pids}")
        results["load_average"]["after load"] = _load()

        log(f"series metadata ({args.instances} instances)")
        path = f"/studies/{data.studies[0].uid}/series/{native}/metadata"
        results["metadata"] = asyncio.run(
            wado.series_metadata(urls, path, args.instances, args.metadata_repetitions)
        )
        results["load_average"]["after metadata"] = _load()

        log(f"rendered ({args.rendered_instances} cold, {args.rendered_repetitions} cached)")
        native_paths = _paths(data, native)
        picked = native_paths[:: max(1, len(native_paths) // args.rendered_instances)]
        results["rendered"] = asyncio.run(
            wado.rendered(
                urls, picked[: args.rendered_instances], args.rendered_repetitions, server_pids
            )
        )
        results["load_average"]["after rendered"] = _load()

        log(f"frames, {args.concurrency} in flight")
        profiler = Profiler(pids, args.results) if args.profile else None
        try:
            results["frames"] = {
                "native": asyncio.run(
                    _frames(urls, native_paths, args.size**2 * 2, server_pids, args)
                )
            }
        finally:
            if profiler:
                results["profile"] = profiler.stop()
        for few in VIEWER_CONCURRENCY:  # a viewer's few connections; one at a time
            log(f"native frames, {few} in flight")
            results["frames"][f"native_{few}"] = asyncio.run(
                _frames(urls, native_paths, args.size**2 * 2, server_pids, args, few)
            )
        if j2k != native:
            results["frames"]["jpeg2000"] = asyncio.run(
                _frames(urls, _paths(data, j2k), None, server_pids, args)
            )
        if not args.no_direct:  # diagnostic: the retrieve service without the router hop
            direct = {"tessera": f"http://127.0.0.1:{tessera.service_ports['retrieve']}"}
            log("frames again, straight to Tessera's retrieve service (no router)")
            results["frames_direct"] = {
                "native": asyncio.run(
                    _frames(
                        direct,
                        native_paths,
                        args.size**2 * 2,
                        server_pids,
                        args,
                        authorization=tessera.internal_authorization(),
                    )
                )["tessera"]
            }
        results["load_average"]["after frames"] = _load()

        log("whole-study retrieval")
        objects = tessera.data_dir / "state" / "objects"
        results["retrieve"] = _retrieve(urls, data, objects, args)
        results["load_average"]["at end"] = _load()
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    results["problems"] += wado_report.problems(results)
    results["ratios"] = wado_report.ratios(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 + 20 instances, fewer requests")
    parser.add_argument("--instances", type=int, help="native series (500)")
    parser.add_argument("--encapsulated", type=int, help="JPEG 2000 series (200)")
    parser.add_argument("--size", type=int, default=WadoSpec.size, help="rows = columns")
    parser.add_argument("--seed", type=int, default=WadoSpec.seed)
    parser.add_argument("--metadata-repetitions", type=int, help="timed (40)")
    parser.add_argument("--concurrency", type=int, default=100, help="frames in flight")
    parser.add_argument("--frame-passes", type=int, default=2)
    parser.add_argument("--rendered-instances", type=int, default=10, help="cold renderings")
    parser.add_argument("--rendered-repetitions", type=int, default=30, help="cached ones")
    parser.add_argument("--retrieve-passes", type=int, default=3)
    parser.add_argument("--no-drop-caches", action="store_true", help="no cold retrieval")
    parser.add_argument(
        "--no-direct", action="store_true", help="skip the frames straight to retrieve"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the native frames pass")
    parser.add_argument(
        "--orthanc-set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="e.g. DicomWeb.SeriesMetadata='\"MainDicomTags\"'",
    )
    parser.add_argument("--workdir", type=Path, help="where servers keep their data (/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folders")
    parser.add_argument("--results", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.instances = args.instances or (100 if args.quick else WadoSpec.instances)
    if args.encapsulated is None:
        args.encapsulated = 20 if args.quick else WadoSpec.encapsulated
    args.metadata_repetitions = args.metadata_repetitions or (10 if args.quick else 40)
    if args.quick:
        args.rendered_instances, args.rendered_repetitions = 3, 10
        args.frame_passes, args.retrieve_passes = 1, 1
    overrides = {}
    for item in args.orthanc_set:
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parser.error(f"--orthanc-set {item!r}: the value must be JSON (quote strings)")
    args.orthanc_set = overrides
    if args.instances < 1 or args.concurrency < 1 or args.rendered_instances < 1:
        parser.error("--instances, --concurrency and --rendered-instances must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    results = run(args)
    json_path, md_path = wado_report.write(results, args.results)
    print(wado_report.markdown(results))
    log(f"written {md_path} and {json_path}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
