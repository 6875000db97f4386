"""``make bench BENCH_ARGS=--dimse``: the DIMSE gateway next to Orthanc's DICOM port (issue 11).

Same data, same run, one server at a time (the other stopped), on this machine:

* C-STORE with DCMTK's ``storescu``: 1,000 synthetic 512×512 16-bit CT/MR instances
  (about 0.5 MB each, :mod:`bench.dataset`) on one association, and another 1,000 in
  four ``storescu`` processes at once (instances per second, wall clock);
* C-FIND at study level (pynetdicom on one association: a Study Instance UID plus the
  return keys a study list asks for), p50 and p95 in ms;
* C-MOVE of a 500-instance study to DCMTK's ``storescp`` (receiving, not writing:
  ``--ignore``), instances per second.

Tessera is ``tessera run`` (the gateway in front of the router, as ``make run`` starts
it); Orthanc is Debian's, with its SQLite index and file storage as packaged.

    .venv/bin/python bench/run.py --dimse [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pynetdicom import AE

from bench.cluster import start_tessera
from bench.dataset import GeneratedSet, Spec, ensure
from bench.orthanc import start_orthanc
from tessera.dimse import tcp
from tessera.local.processes import free_port

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
SCU, SCP = "BENCHSCU", "BENCHSCP"
# DCMTK leaves Nagle's algorithm on unless TCP_NODELAY is set in its environment: then
# every exchange waits for delayed ACKs (storescu to storescp: 47 ms an instance instead
# of 2). Orthanc's TcpNoDelay is on, and so is Tessera's gateway's (tessera.dimse.tcp).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def storescu(port: int, called: str, files: list[Path], processes: int) -> float:
    """Seconds for ``processes`` storescu runs (one association each) to send ``files``."""
    groups = [files[i::processes] for i in range(processes)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            ["storescu", "-aet", SCU, "-aec", called, "127.0.0.1", str(port), *map(str, group)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=DCMTK_ENV,
        )
        for group in groups
    ]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - started


def find_latencies(port: int, called: str, studies: list[str], n: int) -> list[float]:
    ae = AE(ae_title=SCU)
    ae.add_requested_context(STUDY_ROOT_FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[tcp.HANDLER])
    if not assoc.is_established:
        raise RuntimeError(f"C-FIND: {called} did not accept the association")
    times = []
    try:
        for i in range(n + 5):
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = studies[i % len(studies)]
            for keyword in ("PatientName", "PatientID", "StudyDate", "StudyDescription",
                            "ModalitiesInStudy", "AccessionNumber",
                            "NumberOfStudyRelatedInstances"):  # fmt: skip
                setattr(query, keyword, "")
            started = time.perf_counter()
            results = [s for s, _ in assoc.send_c_find(query, STUDY_ROOT_FIND)]
            elapsed = (time.perf_counter() - started) * 1000
            if results[-1].Status != 0 or len(results) != 2:
                raise RuntimeError(f"C-FIND answered {[hex(s.Status) for s in results]}")
            if i >= 5:
                times.append(elapsed)
    finally:
        assoc.release()
    return times


def move(port: int, called: str, study: str) -> tuple[float, int]:
    ae = AE(ae_title=SCU)
    ae.add_requested_context(STUDY_ROOT_MOVE)
    ae.dimse_timeout = 600
    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[tcp.HANDLER])
    if not assoc.is_established:
        raise RuntimeError(f"C-MOVE: {called} did not accept the association")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    started = time.perf_counter()
    try:
        final = [s for s, _ in assoc.send_c_move(query, SCP, STUDY_ROOT_MOVE)][-1]
    finally:
        assoc.release()
    seconds = time.perf_counter() - started
    if final.Status != 0:
        raise RuntimeError(f"C-MOVE ended with 0x{final.Status:04X}")
    return seconds, int(final.NumberOfCompletedSuboperations)


def measure(
    name: str, port: int, called: str, one: GeneratedSet, four: GeneratedSet, args: Any
) -> dict[str, Any]:
    files1 = [i.path for i in one.instances]
    files4 = [i.path for i in four.instances]
    out: dict[str, Any] = {}
    seconds = storescu(port, called, files1, 1)
    out["store_1"] = round(len(files1) / seconds, 1)
    seconds = storescu(port, called, files4, 4)
    out["store_4"] = round(len(files4) / seconds, 1)
    studies = [s.uid for s in one.studies]
    times = sorted(find_latencies(port, called, studies, args.repetitions))
    out["find_p50"] = round(statistics.median(times), 2)
    out["find_p95"] = round(times[int(len(times) * 0.95) - 1], 2)
    seconds, moved = move(port, called, studies[0])
    out["move"] = round(moved / seconds, 1)
    out["moved"] = moved
    print(f"{name}: {out}", flush=True)
    return out


def with_storescp(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        ["storescp", "--ignore", "-aet", SCP, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=folder,
        env=DCMTK_ENV,
    )
    time.sleep(0.5)
    return proc, port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py --dimse", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100 instances a set")
    parser.add_argument("--repetitions", type=int, default=100, help="timed C-FINDs (100)")
    args = parser.parse_args(argv)
    per_series = 25 if args.quick else 250
    one = ensure(Spec(studies=2, series_per_study=2, instances_per_series=per_series, seed=11))
    four = ensure(Spec(studies=2, series_per_study=2, instances_per_series=per_series, seed=12))
    root = Path(tempfile.mkdtemp(prefix="tessera-bench-dimse-"))
    root.chmod(0o711)
    scp, scp_port = with_storescp(root)
    results: dict[str, dict[str, Any]] = {}
    try:
        dimse_port = free_port()
        tessera = start_tessera(root / "tessera", timeout=300, env={
            "TESSERA_DIMSE_PORT": str(dimse_port),
            "TESSERA_DIMSE_HTTP_PORT": str(free_port()),
        })  # fmt: skip
        try:
            for aet, port in ((SCU, None), (SCP, scp_port)):
                r = httpx.put(f"{tessera.url}/admin/dicom-nodes/{aet}", json={
                    "host": "127.0.0.1", "port": port,
                    "operations": ["echo", "store", "find", "move", "get"]})  # fmt: skip
                r.raise_for_status()
            results["tessera"] = measure("tessera", dimse_port, "TESSERA", one, four, args)
        finally:
            tessera.stop()
        orthanc = start_orthanc(root / "orthanc", overrides={
            "DicomServerEnabled": True,
            "DicomAet": "ORTHANC",
            "DicomModalities": {"scu": [SCU, "127.0.0.1", scp_port],
                                "scp": [SCP, "127.0.0.1", scp_port]},
        })  # fmt: skip
        try:
            results["orthanc"] = measure("orthanc", orthanc.dicom_port, "ORTHANC", one, four, args)
        finally:
            orthanc.stop()
    finally:
        scp.terminate()
        scp.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    report(results, one.spec.instance_count)
    return 0


def report(results: dict[str, dict[str, Any]], count: int) -> None:
    t, o = results["tessera"], results["orthanc"]
    ratio: Callable[[float, float], str] = lambda a, b: f"{a / b:.2f}"  # noqa: E731
    print(f"\n## DIMSE: Tessera's gateway and Orthanc's DICOM port ({count} instances a set)\n")
    print("| figure | Orthanc | Tessera | ratio (> 1 = Tessera better) |")
    print("| --- | --- | --- | --- |")
    print(f"| C-STORE, storescu, 1 association (inst/s) | {o['store_1']} | {t['store_1']} |"
          f" {ratio(t['store_1'], o['store_1'])} |")  # fmt: skip
    print(f"| C-STORE, 4 storescu at once (inst/s) | {o['store_4']} | {t['store_4']} |"
          f" {ratio(t['store_4'], o['store_4'])} |")  # fmt: skip
    faster = ratio(o["find_p50"], t["find_p50"])
    print(f"| C-FIND study level, p50 ms (p95) | {o['find_p50']} ({o['find_p95']}) |"
          f" {t['find_p50']} ({t['find_p95']}) | {faster} |")  # fmt: skip
    print(f"| C-MOVE of a {t['moved']}-instance study (inst/s) | {o['move']} | {t['move']} |"
          f" {ratio(t['move'], o['move'])} |")  # fmt: skip
    print(json.dumps(results))
