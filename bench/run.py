"""``make bench``: Tessera against Debian's Orthanc + DICOMweb plugin, same dataset, same run.

Plan:

1. Generate (or reuse from ``bench/.data``) a seeded synthetic dataset.
2. STOW-RS, once per mode (instances per request × parallel clients, e.g. ``1x4``): each
   mode stores the whole dataset into a *fresh, empty* target (new data folder, new
   processes), one server running at a time, so every mode is measured under the same
   conditions and no mode sees duplicates or a bigger index than another. Modes alternate
   between the targets (Orthanc, Tessera, next mode...) so slow drift of the machine hits
   both alike.
3. The targets of the last mode, which now hold the dataset exactly once, stay up
   together for the reads, whose requests alternate between them: QIDO-RS latency
   (sequential, p50/p95), series ``/metadata`` latency and WADO-RS whole-study retrieval
   with 4 studies in parallel.
4. With ``--ohif``: the OHIF viewer opening studies on both, in headless Chromium
   (:mod:`bench.ohif`: time to the first image and to a whole series loaded).
5. Tables to stdout and ``bench/results/latest.{md,json}``.
6. Then (unless ``--no-wado``, an external server or one target only) the WADO targets of
   issue 4 on servers of their own: :mod:`bench.wado_run` (also alone: ``--wado``).

With ``--tessera-url``/``--orthanc-url`` an already running server is used instead; it
cannot be emptied between modes, so only the first STOW mode is measured there (and
none if the dataset is already stored), then the reads.

    .venv/bin/python bench/run.py --quick --orthanc-only
    .venv/bin/python bench/run.py                       # 20 studies, both targets
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
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from bench import cluster, fsprobe, ohif, proccpu, report, summary, workloads
from bench.dataset import GeneratedSet, Spec, ensure
from bench.orthanc import OrthancProcess, start_orthanc

OHIF_LIST = "limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060"
DATE_RANGE = ("20190101", "20211231")
WILDCARD = "smi"
NOT_EMPTY = "a running server was given; it cannot be emptied first"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class StowMode:
    per_request: int
    concurrency: int

    @property
    def label(self) -> str:
        return f"{self.per_request}x{self.concurrency}"

    @classmethod
    def parse(cls, text: str) -> StowMode:
        per_request, _, concurrency = text.lower().partition("x")
        return cls(int(per_request), int(concurrency))


# --- targets --------------------------------------------------------------------------------


def _scratch(workdir: Path | None) -> Path:
    """A temporary folder every user can enter (PostgreSQL runs as ``postgres`` under root)."""
    folder = Path(tempfile.mkdtemp(prefix="tessera-bench-", dir=workdir))
    folder.chmod(0o711)
    return folder


@contextmanager
def target(
    name: str, args: argparse.Namespace, scratch: Path, facts: dict[str, Any]
) -> Iterator[tuple[str, proccpu.CpuProbe]]:
    """The DICOMweb base URL of ``name``: the running server given on the command line, or
    a fresh one of our own (started in a new folder under ``scratch``, stopped afterwards;
    its folder goes with ``scratch`` at the end of the run, not now: deleting its thousands
    of files would make creating files dearer for the next target, :mod:`bench.fsprobe`),
    and what its processes have used of the CPU so far, by service (nothing for a server
    of someone else's). Versions and configuration go into ``facts``."""
    external_url = args.orthanc_url if name == "orthanc" else args.tessera_url
    if external_url:
        workloads.check_loopback(external_url)
        yield external_url.rstrip("/"), dict
        return
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=scratch))
    folder.chmod(0o711)
    started = time.perf_counter()
    server: OrthancProcess | cluster.TesseraCluster
    if name == "orthanc":
        server = start_orthanc(folder, overrides=args.orthanc_set)
        facts["orthanc_config"] = server.config
    else:
        env = ohif.viewer_env(args.viewer_dist) if args.ohif else None
        server = cluster.start_tessera(folder, env=env)
    log(f"{name} up in {time.perf_counter() - started:.1f}s (pid {server.pid}, {folder})")

    def probe() -> dict[str, float]:
        if isinstance(server, cluster.TesseraCluster):
            log_text = server.log_path.read_text(errors="replace")
            return proccpu.by_service(proccpu.tessera_services(log_text))
        return {"Orthanc": proccpu.tree_cpu_seconds(server.pid)}

    try:
        facts["versions"].update(server.versions())
        yield server.dicomweb_url, probe
    finally:
        server.stop()
        log(f"{name} stopped")


# --- reads ----------------------------------------------------------------------------------


def read_queries(data: GeneratedSet) -> dict[str, list[str]]:
    """QIDO-RS searches, by name: OHIF's study list and its filters, then the drill-down."""
    pairs = [(s.uid, se) for s in data.studies for se in s.series]
    return {
        "studies (OHIF list)": [f"/studies?{OHIF_LIST}"],
        f"PatientName=*{WILDCARD}*": [f"/studies?{OHIF_LIST}&PatientName=*{WILDCARD}*"],
        "StudyDate=2019-2021": [f"/studies?{OHIF_LIST}&StudyDate={'-'.join(DATE_RANGE)}"],
        "series of a study": [f"/studies/{s.uid}/series" for s in data.studies],
        "instances of a series": [f"/studies/{st}/series/{se}/instances" for st, se in pairs],
    }


def metadata_paths(data: GeneratedSet) -> list[str]:
    return [f"/studies/{s.uid}/series/{se}/metadata" for s in data.studies for se in s.series]


def expected_answers(data: GeneratedSet) -> dict[str, int]:
    """What each search must return on a target holding the dataset exactly once
    (patient names matched case-insensitively, as OHIF users type them)."""
    studies = data.studies
    return {
        "studies (OHIF list)": min(101, len(studies)),
        f"PatientName=*{WILDCARD}*": min(
            101, sum(WILDCARD.upper() in s.patient_name.upper() for s in studies)
        ),
        "StudyDate=2019-2021": min(
            101, sum(DATE_RANGE[0] <= s.study_date <= DATE_RANGE[1] for s in studies)
        ),
        "series of a study": sum(len(s.series) for s in studies),
        "instances of a series": len(data.instances),
        "series metadata": len(data.instances),
    }


async def measure_reads(
    urls: dict[str, str], data: GeneratedSet, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """QIDO and metadata latency, then whole-study retrieval throughput, on every target in
    ``urls`` (name -> DICOMweb root); requests and retrieval passes alternate between them."""
    out: dict[str, dict[str, Any]] = {n: {"qido": {}, "metadata": {}} for n in urls}
    searches = [("qido", q, paths) for q, paths in read_queries(data).items()]
    searches.append(("metadata", "series metadata", metadata_paths(data)))
    for section, query, paths in searches:
        timed = await workloads.latency(urls, query, paths, args.repetitions, args.warmup)
        for name, result in timed.items():
            out[name][section][query] = result.summary()
            log(f"  {name} {query}: p50 {result.p50:.2f} ms, p95 {result.p95:.2f} ms")
    studies = [
        workloads.StudyToRetrieve(s.uid, data.study_instances(s.uid), data.study_bytes(s.uid))
        for s in data.studies
    ]
    totals = {n: workloads.Throughput("whole study", args.retrieve_concurrency) for n in urls}
    for url in urls.values():
        await workloads.retrieve(url, studies[:1], 1)  # warm-up, not timed
    for n in range(args.retrieve_passes):
        for name in list(urls) if n % 2 == 0 else reversed(urls):
            pass_ = await workloads.retrieve(urls[name], studies, args.retrieve_concurrency)
            totals[name].add(pass_)
    for name, total in totals.items():
        out[name]["retrieve"] = total.summary()
        log(f"  {name} WADO whole study ×{args.retrieve_concurrency}: {total.mb_per_s:.1f} MB/s")
    return out


# --- the run --------------------------------------------------------------------------------


async def measure_stow(
    url: str,
    mode: StowMode,
    bodies: list[workloads.StowBody],
    node: dict[str, Any],
    cpu: proccpu.CpuProbe = dict,
    scratch: Path | None = None,
) -> None:
    """Store the dataset once with ``mode`` and check the target now holds all of it; the
    server CPU per stored instance, by service (issue 12). The disks settle first
    (:func:`bench.proccpu.settle_disks`): what the previous target wrote and freed would
    otherwise be flushed and trimmed in this one's time and CPU. What creating a file costs
    in ``scratch`` just before is kept beside the figures (:mod:`bench.fsprobe`)."""
    waited = await asyncio.to_thread(proccpu.settle_disks)
    log(f"  disks settled in {waited:.1f}s")
    create_us = fsprobe.file_create_us(scratch) if scratch is not None else None
    before = cpu()
    result = await workloads.store(url, bodies, mode.concurrency)
    used = proccpu.spent(before, cpu())
    summary = result.summary()
    if used and result.instances:
        per = {k: round(1000 * v / result.instances, 2) for k, v in used.items() if v > 0}
        summary["server_cpu_ms_per_instance"] = round(sum(per.values()), 2)
        summary["server_cpu_ms_per_instance_by_service"] = dict(
            sorted(per.items(), key=lambda kv: -kv[1])
        )
    if create_us is not None:
        summary["file_create_us_before"] = create_us
    node["stow"][mode.label] = summary
    log(
        f"  STOW {mode.label}: {result.instances_per_s:.1f} inst/s, {result.mb_per_s:.1f} MB/s"
        f" ({result.failures} failures), server CPU"
        f" {summary.get('server_cpu_ms_per_instance', '?')} ms/instance"
    )
    node["stored_after_stow"][mode.label] = await workloads.stored_counts(url)


def _skeleton(
    args: argparse.Namespace, spec: Spec, data: GeneratedSet, modes: list[StowMode], scratch: Path
) -> dict[str, Any]:
    """The results document before any measurement: plan, dataset, machine."""
    names = [n for n in ("orthanc", "tessera") if n not in args.skip]
    external = {"orthanc": args.orthanc_url, "tessera": args.tessera_url}
    return {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "plan": {
            "stow_modes": [{"label": m.label, **asdict(m)} for m in modes],
            "repetitions": args.repetitions,
            "warmup": args.warmup,
            "retrieve_concurrency": args.retrieve_concurrency,
            "retrieve_passes": args.retrieve_passes,
            "targets": names,
            "external": {n: u for n, u in external.items() if u},
            "orthanc_overrides": args.orthanc_set,
        },
        "dataset": {
            **asdict(spec),
            "key": spec.key,
            "instances": len(data.instances),
            "megabytes": data.total_bytes / workloads.MB,
        },
        "expected_answers": expected_answers(data),
        "machine": report.machine_facts(scratch),
        "versions": {},
        "targets": {
            n: {"url": None, "stow": {}, "stored_after_stow": {}, "notes": [], "problems": []}
            for n in names
        },
    }


def _check_stored(results: dict[str, Any], data: GeneratedSet) -> None:
    """A problem for each STOW after which the archive does not hold the dataset once."""
    want = (len(data.studies), len(data.instances))
    for node in results["targets"].values():
        for label, found in node["stored_after_stow"].items():
            if tuple(found) != want:
                node["problems"].append(
                    f"after STOW {label} the archive reports {found[0]} studies and {found[1]} "
                    f"instances, expected {want[0]} and {want[1]}"
                )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement of the plan (see the module docstring); the results document."""
    spec = Spec(studies=args.studies, seed=args.seed)
    log(f"dataset {spec.key} ...")
    data = ensure(spec)
    modes: list[StowMode] = args.modes
    scratch = _scratch(args.workdir)
    results = _skeleton(args, spec, data, modes, scratch)
    try:
        for index, mode in enumerate(modes):
            last = index == len(modes) - 1
            bodies = workloads.stow_bodies(data.instances, mode.per_request)
            with ExitStack() as kept:  # the last mode's targets stay up for the reads
                urls: dict[str, str] = {}
                for name, node in results["targets"].items():
                    external = name in results["plan"]["external"]
                    if external and 0 < index and not last:
                        node["notes"].append(f"STOW {mode.label} not measured: {NOT_EMPTY}")
                        continue
                    with ExitStack() as this:
                        url, cpu = (kept if last else this).enter_context(
                            target(name, args, scratch, results)
                        )
                        node["url"] = urls[name] = url
                        if external and (index > 0 or await _holds(url, data)):
                            node["notes"].append(f"STOW {mode.label} not measured: {NOT_EMPTY}")
                        else:
                            log(f"{name}: STOW {mode.label} ({len(bodies)} requests)")
                            await measure_stow(url, mode, bodies, node, cpu, scratch)
                del bodies
                if last:
                    for name, measured in (await measure_reads(urls, data, args)).items():
                        results["targets"][name].update(measured)
                    if args.ohif:
                        results["ohif"] = await measure_ohif(urls, data, args, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["ratios"] = report.ratios(results)
    _check_stored(results, data)
    return results


async def measure_ohif(
    urls: dict[str, str], data: GeneratedSet, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    """OHIF on each target: Tessera's router serves it; Orthanc gets a front router."""
    viewers: dict[str, str] = {}
    front = None
    if "tessera" in urls:
        viewers["tessera"] = ohif.viewer_url(urls["tessera"])
    if "orthanc" in urls:
        front = await asyncio.to_thread(
            ohif.start_front, urls["orthanc"], args.viewer_dist, scratch
        )
        viewers["orthanc"] = front.url + "/viewer/"
    try:
        log(f"OHIF: {args.ohif_studies} studies × {args.ohif_rounds} rounds on {list(viewers)}")
        studies = min(args.ohif_studies, len(data.studies))
        return await ohif.measure(viewers, data, args.ohif_rounds, studies)
    finally:
        if front is not None:
            front.stop()


async def _holds(url: str, data: GeneratedSet) -> bool:
    """True if the target already has the dataset's first study."""
    first = data.studies[0].uid
    async with workloads.client(url) as http:
        answer = await http.get(
            "/studies", params={"StudyInstanceUID": first}, headers={"Accept": workloads.DICOM_JSON}
        )
    return answer.status_code == 200 and bool(answer.content) and bool(answer.json())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark Tessera against Orthanc + DICOMweb on the same dataset."
    )
    parser.add_argument("--quick", action="store_true", help="4 studies, 20 repetitions")
    parser.add_argument("--studies", type=int, help="studies of 2 × 25 instances (default 20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--stow-modes",
        default="1x4,10x4,1x16,25x4",
        help="comma-separated <instances per request>x<clients>; reads run after the last",
    )
    parser.add_argument("--repetitions", type=int, help="timed requests per search (50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per search")
    parser.add_argument("--retrieve-concurrency", type=int, default=4)
    parser.add_argument("--retrieve-passes", type=int, default=2, help="over every study")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--orthanc-only", action="store_true")
    only.add_argument("--tessera-only", action="store_true")
    parser.add_argument("--tessera-url", help="use this running Tessera DICOMweb root")
    parser.add_argument("--orthanc-url", help="use this running Orthanc DICOMweb root")
    parser.add_argument(
        "--orthanc-set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="change Orthanc's configuration, e.g. StorageAccessOnFind='\"Never\"' or "
        "DicomWeb.SeriesMetadata='\"MainDicomTags\"' (repeatable; default: as packaged)",
    )
    parser.add_argument(
        "--ohif",
        action="store_true",
        help="also time the OHIF viewer opening studies on both (headless Chromium)",
    )
    parser.add_argument("--ohif-studies", type=int, default=4, help="studies OHIF opens (4)")
    parser.add_argument("--ohif-rounds", type=int, default=3, help="times each is opened (3)")
    parser.add_argument("--workdir", type=Path, help="where servers keep their data (/tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the servers' data folders")
    parser.add_argument("--results", type=Path, default=report.RESULTS_DIR)
    parser.add_argument(
        "--qido-scale",
        action="store_true",
        help="run bench/qido_scale.py instead: QIDO-RS at 10k..1M instances (bulk loaded), "
        "Orthanc beside it; its options follow (--scale 10000,1000000 --orthanc-instances N)",
    )
    parser.add_argument(
        "--wado",
        action="store_true",
        help="run only bench/wado_run.py: series metadata of 500 instances, frames with "
        "100 in flight, rendered, whole study against the raw disk (--quick, --profile...)",
    )
    parser.add_argument(
        "--federation",
        action="store_true",
        help="run only bench/federation.py: QIDO with 1/2/4 shards, STOW through the "
        "router, rebalance speed (--parts qido,stow,rebalance, --quick...)",
    )
    parser.add_argument(
        "--no-wado",
        action="store_true",
        help="skip the WADO targets (bench/wado_run.py) that follow the plan by default",
    )
    args = parser.parse_args(argv)
    args.studies = args.studies or (4 if args.quick else 20)
    args.repetitions = args.repetitions or (20 if args.quick else 50)
    args.skip = {"tessera"} if args.orthanc_only else {"orthanc"} if args.tessera_only else set()
    args.orthanc_set = dict(_key_json(item, parser) for item in args.orthanc_set)
    try:
        args.modes = [StowMode.parse(m) for m in args.stow_modes.split(",")]
    except ValueError:
        parser.error(f"--stow-modes {args.stow_modes!r}: expected e.g. 1x4,10x4,25x4")
    if any(m.per_request < 1 or m.concurrency < 1 for m in args.modes):
        parser.error("--stow-modes: both numbers must be at least 1")
    return args


def _key_json(item: str, parser: argparse.ArgumentParser) -> tuple[str, Any]:
    key, _, value = item.partition("=")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        parser.error(f"--orthanc-set {item!r}: the value must be JSON (quote strings)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--qido-scale" in argv:  # the QIDO scale benchmark, with its own options
        from bench import qido_scale

        return qido_scale.main([a for a in argv if a != "--qido-scale"])
    if "--wado" in argv:  # the WADO speed targets of issue 4, with their own options
        from bench import wado_run

        return wado_run.main([a for a in argv if a != "--wado"])
    if "--federation" in argv:  # the federation benchmarks of issue 6, with their own options
        from bench import federation

        return federation.main([a for a in argv if a != "--federation"])
    if "--dimse" in argv:  # the DIMSE gateway next to Orthanc's DICOM port (issue 11)
        from bench import dimse

        return dimse.main([a for a in argv if a != "--dimse"])
    if "--auth" in argv:  # what checking a bearer token costs (issue 10)
        from bench import auth

        return auth.main([a for a in argv if a != "--auth"])
    args = parse_args(argv)
    if args.ohif:
        ohif.check_chromium()
        args.viewer_dist = ohif.viewer_dist()
    results = asyncio.run(run(args))
    json_path, md_path = report.write(results, args.results)
    print(report.markdown(results))
    log(f"written {md_path} and {json_path}")
    status = 1 if report.problems(results) else 0
    if not (args.no_wado or args.skip or args.tessera_url or args.orthanc_url):
        from bench import wado_run  # then issue 4's WADO targets, on servers of their own

        log("WADO targets (bench/wado_run.py; --no-wado skips them)")
        wado_args = ["--quick"] if args.quick else []
        status |= wado_run.main([*wado_args, "--results", str(args.results)])
        wado_json = args.results / "wado-latest.json"
        if wado_json.is_file():  # issue 12's side-by-side, from both parts of this run
            text = summary.markdown(results, json.loads(wado_json.read_text()))
            print(text)
            log(f"written {summary.write(text, args.results)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
