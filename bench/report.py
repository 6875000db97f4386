"""Result tables (Markdown) and files: ``bench/results/latest.json`` and ``latest.md``.

Every table has a Tessera column, an Orthanc column and a ratio oriented so that a
ratio above 1 always means Tessera is faster: Tessera/Orthanc for throughput,
Orthanc/Tessera for latency.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = ("tessera", "orthanc")

STOW_HEADER = ["request", "clients", "Tessera inst/s", "Orthanc inst/s", "Tessera MB/s",
               "Orthanc MB/s", "ratio", "client CPU T / O"]  # fmt: skip
_LATENCY = ["Tessera p50", "Orthanc p50", "ratio p50", "Tessera p95", "Orthanc p95", "ratio p95"]
QIDO_HEADER = ["search", *_LATENCY, "answers T / O / expected"]
METADATA_HEADER = ["metadata (ms)", *_LATENCY, "instances T / O / expected"]
RETRIEVE_HEADER = ["retrieve", "Tessera MB/s", "Orthanc MB/s", "ratio", "Tessera inst/s",
                   "Orthanc inst/s", "client CPU T / O"]  # fmt: skip


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1]
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, f"{fields[2]} ({fields[0]} on {mount})"
    except (OSError, IndexError):
        pass
    return kind


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _commit(repo: Path) -> str:
    """The checked-out commit, read from ``.git`` files (no git command is run)."""
    try:
        head = (repo / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head[:12]
        ref = head[5:]
        ref_file = repo / ".git" / ref
        if ref_file.is_file():
            return ref_file.read_text().strip()[:12]
        for line in (repo / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0][:12]
    except OSError:
        pass
    return "unknown"


def machine_facts(workdir: Path) -> dict[str, Any]:
    """CPU, memory, OS and the client-side software versions."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
        if hasattr(platform, "freedesktop_os_release")
        else "unknown",
        "workdir_filesystem": _filesystem(workdir),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "httpx": _package("httpx"),
        "pydicom": _package("pydicom"),
        "commit": _commit(Path(__file__).resolve().parents[1]),
    }


# --- tables -----------------------------------------------------------------------------------


def _ratio(tessera: float | None, orthanc: float | None, higher_is_better: bool) -> str:
    if not tessera or not orthanc or math.isnan(tessera) or math.isnan(orthanc):
        return "–"
    value = tessera / orthanc if higher_is_better else orthanc / tessera
    return f"{value:.2f}×"


def ratio_value(
    tessera: dict[str, Any], orthanc: dict[str, Any], key: str, higher_is_better: bool
) -> float | None:
    """The ratio of ``key`` (> 1: Tessera faster), or None when not comparable."""
    if _valid(tessera, orthanc) or not tessera.get(key) or not orthanc.get(key):
        return None
    t, o = float(tessera[key]), float(orthanc[key])
    return round(t / o if higher_is_better else o / t, 3)


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every ratio of the report, for ``latest.json`` (None where not comparable)."""

    def side(target: str, *keys: str) -> dict[str, Any]:
        return _get(results, target, *keys) or {}

    out: dict[str, Any] = {"stow_mb_per_s": {}, "qido_p50": {}, "qido_p95": {}}
    for mode in results["plan"]["stow_modes"]:
        t, o = side("tessera", "stow", mode["label"]), side("orthanc", "stow", mode["label"])
        out["stow_mb_per_s"][mode["label"]] = ratio_value(t, o, "mb_per_s", True)
    for section in ("qido", "metadata"):
        for name in side("tessera", section).keys() | side("orthanc", section).keys():
            t, o = side("tessera", section, name), side("orthanc", section, name)
            expected = results["expected_answers"].get(name)
            wrong = any(x.get("answers") != expected for x in (t, o))
            for q in ("p50", "p95"):
                value = None if wrong else ratio_value(t, o, f"{q}_ms", False)
                out.setdefault(f"{section}_{q}", {})[name] = value
    t, o = side("tessera", "retrieve"), side("orthanc", "retrieve")
    out["retrieve_mb_per_s"] = ratio_value(t, o, "mb_per_s", True)
    return out


def _valid(*sides: dict[str, Any]) -> str:
    """ "✗" if a side had failed requests (its figure is not comparable), else ""."""
    return "✗" if any(side.get("failures") for side in sides) else ""


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _cpu(tessera: dict[str, Any], orthanc: dict[str, Any]) -> str:
    """The benchmark client's CPU use during each run, in % of one core (near 100 %: the
    client, not the server, may be the limit)."""

    def one(side: dict[str, Any]) -> str:
        share = side.get("client_cpu_share")
        return "–" if share is None else f"{share * 100:.0f}%"

    return f"{one(tessera)} / {one(orthanc)}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _get(results: dict[str, Any], target: str, *keys: str) -> Any:
    node: Any = results.get("targets", {}).get(target)
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _stow_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for mode in results["plan"]["stow_modes"]:
        label = mode["label"]
        t = _get(results, "tessera", "stow", label) or {}
        o = _get(results, "orthanc", "stow", label) or {}
        rows.append(
            [
                f"{mode['per_request']} per request",
                str(mode["concurrency"]),
                _fmt(t.get("instances_per_s")),
                _fmt(o.get("instances_per_s")),
                _fmt(t.get("mb_per_s")),
                _fmt(o.get("mb_per_s")),
                _valid(t, o) or _ratio(t.get("mb_per_s"), o.get("mb_per_s"), True),
                _cpu(t, o),
            ]
        )
    return rows


def _file_create_note(results: dict[str, Any]) -> list[str]:
    """What creating a file cost just before each STOW (bench.fsprobe), when measured."""
    found = []
    for mode in results["plan"]["stow_modes"]:
        label = mode["label"]
        for target in TARGETS:
            us = (_get(results, target, "stow", label) or {}).get("file_create_us_before")
            if us is not None:
                found.append(f"{label} {target.capitalize()} {us:g}")
    if not found:
        return []
    return [
        "Creating a file in the bench's folder just before each STOW (median CPU, µs; "
        "every stored instance creates at least one, bench/fsprobe.py): " + ", ".join(found) + ".",
        "",
    ]


def _latency_rows(results: dict[str, Any], section: str) -> list[list[str]]:
    names: list[str] = []
    for target in TARGETS:
        for name in _get(results, target, section) or {}:
            if name not in names:
                names.append(name)
    rows = []
    for name in names:
        t = _get(results, "tessera", section, name) or {}
        o = _get(results, "orthanc", section, name) or {}
        expected = results["expected_answers"].get(name)
        answers = f"{t.get('answers', '–')} / {o.get('answers', '–')} / {expected}"
        wrong = any(side and side.get("answers") != expected for side in (t, o))
        invalid = "✗" if wrong else _valid(t, o)
        rows.append(
            [
                name,
                _fmt(t.get("p50_ms"), 2),
                _fmt(o.get("p50_ms"), 2),
                invalid or _ratio(t.get("p50_ms"), o.get("p50_ms"), higher_is_better=False),
                _fmt(t.get("p95_ms"), 2),
                _fmt(o.get("p95_ms"), 2),
                invalid or _ratio(t.get("p95_ms"), o.get("p95_ms"), higher_is_better=False),
                answers + (" ⚠" if wrong else ""),
            ]
        )
    return rows


def _retrieve_rows(results: dict[str, Any]) -> list[list[str]]:
    t = _get(results, "tessera", "retrieve") or {}
    o = _get(results, "orthanc", "retrieve") or {}
    return [
        [
            f"whole study, {results['plan']['retrieve_concurrency']} in parallel",
            _fmt(t.get("mb_per_s")),
            _fmt(o.get("mb_per_s")),
            _valid(t, o) or _ratio(t.get("mb_per_s"), o.get("mb_per_s"), True),
            _fmt(t.get("instances_per_s")),
            _fmt(o.get("instances_per_s")),
            _cpu(t, o),
        ]
    ]


def problems(results: dict[str, Any]) -> list[str]:
    """Anything that makes a figure suspect: failed requests, an archive that does not hold
    the dataset after STOW, answer counts that differ from what the dataset holds."""
    found: list[str] = []
    for target in TARGETS:
        node = results.get("targets", {}).get(target)
        if not node:
            continue
        found += [f"{target}: {problem}" for problem in node.get("problems", [])]
        for section in ("stow", "qido", "metadata"):
            for name, item in (node.get(section) or {}).items():
                if item.get("failures"):
                    found.append(
                        f"{target} {section} {name}: {item['failures']} failures, "
                        f"e.g. {item['errors'][:1]}"
                    )
                expected = results["expected_answers"].get(name)
                if section != "stow" and expected is not None and item["answers"] != expected:
                    found.append(
                        f"{target} {section} {name}: {item['answers']} results, "
                        f"the dataset holds {expected}"
                    )
        viewer = (results.get("ohif") or {}).get("targets", {}).get(target) or {}
        if viewer.get("failures"):
            found.append(
                f"{target} OHIF: {viewer['failures']} failures, e.g. {viewer['errors'][:1]}"
            )
        retrieve = node.get("retrieve") or {}
        if retrieve.get("failures"):
            found.append(
                f"{target} retrieve: {retrieve['failures']} failures, e.g. {retrieve['errors'][:1]}"
            )
    return found


def _notes(results: dict[str, Any]) -> list[str]:
    return [
        f"{target}: {note}"
        for target in TARGETS
        for note in (results.get("targets", {}).get(target) or {}).get("notes", [])
    ]


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    plan, data, machine = results["plan"], results["dataset"], results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    out = [
        f"# Tessera vs Orthanc — {results['started']}",
        "",
        f"Dataset: {data['studies']} studies × {data['series_per_study']} series × "
        f"{data['instances_per_series']} instances = {data['instances']} instances, "
        f"{data['megabytes']:.1f} MB ({data['rows']}×{data['columns']} 16-bit CT/MR, "
        f"Explicit VR Little Endian, seed {data['seed']}).",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, {machine['os']}, kernel {machine['kernel']}, "
        f"data on {machine['workdir_filesystem']}. Client: Python {machine['python']}, "
        f"httpx {machine['httpx']}, on the same machine. Load average (1/5/15 min) "
        f"{machine['load_average_at_start']} at start, {machine.get('load_average_at_end')} "
        f"at end. Commit {machine['commit']}.",
        f"Versions: {versions}.",
        "",
        "Ratios: > 1 means Tessera is faster (Tessera/Orthanc for throughput, "
        "Orthanc/Tessera for latency); ✗ = not comparable (failed requests or wrong "
        "answers, see Checks). MB = 10^6 bytes of DICOM files.",
        "",
        "## STOW-RS (store, each mode into an empty archive)",
        "",
        *_table(STOW_HEADER, _stow_rows(results)),
        "",
        *_file_create_note(results),
        f"## QIDO-RS latency (ms, sequential, {plan['repetitions']} timed requests each)",
        "",
        *_table(QIDO_HEADER, _latency_rows(results, "qido")),
        "",
        "## WADO-RS",
        "",
        *_table(RETRIEVE_HEADER, _retrieve_rows(results)),
        "",
        *_table(METADATA_HEADER, _latency_rows(results, "metadata")),
        "",
    ]
    if results.get("ohif"):
        from bench.ohif import markdown as ohif_markdown

        out += ohif_markdown(results["ohif"])
    checks = [f"- ⚠ {p}" for p in problems(results)] + [f"- {n}" for n in _notes(results)]
    out += ["## Checks", "", *(checks or ["- no failures; every answer count matched"]), ""]
    return "\n".join(out)


def write(results: dict[str, Any], folder: Path = RESULTS_DIR) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` (plus timestamped copies) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    stamp = results["started"].replace(":", "").replace("-", "")
    paths = []
    for name in ("latest", stamp):
        json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        md_path.write_text(text)
        paths.append((json_path, md_path))
    return paths[0]
