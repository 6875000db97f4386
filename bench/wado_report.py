"""Tables, ratios and result files of ``bench/run.py --wado`` (see :mod:`bench.wado_run`).

Ratios are oriented as in :mod:`bench.report`: > 1 means Tessera is faster
(Orthanc/Tessera for latency, Tessera/Orthanc for throughput). The retrieval table also
gives Tessera's speed as a share of the storage folder's raw read speed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.report import _fmt, _table

# issue 4: metadata >= 10x Orthanc (p50), frames >= 2x Orthanc (frames/s)
TARGETS = {"metadata_p50": 10.0, "frames_native_fps": 2.0, "frames_jpeg2000_fps": 2.0}


def ratio(tessera: float | None, orthanc: float | None, higher_is_better: bool) -> float | None:
    """> 1: Tessera faster; None when either side is missing or zero."""
    if not tessera or not orthanc:
        return None
    return round(tessera / orthanc if higher_is_better else orthanc / tessera, 3)


def median_mb_per_s(passes: list[dict[str, Any]] | None) -> float | None:
    """The median MB/s over passes (None without passes or with a failed pass)."""
    if not passes or any(p.get("failures") for p in passes):
        return None
    return float(statistics.median(p["mb_per_s"] for p in passes))


def _side(results: dict[str, Any], section: str, target: str, *keys: str) -> Any:
    node: Any = (results.get(section) or {}).get(target)
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _ok(*summaries: dict[str, Any] | None) -> bool:
    return all(s and not s.get("failures") for s in summaries)


def ratios(results: dict[str, Any]) -> dict[str, float | None]:
    """Every ratio of the report (None where a side failed or is missing)."""
    out: dict[str, float | None] = {}
    for kind in ("first", "warm"):
        t = _side(results, "metadata", "tessera", kind)
        o = _side(results, "metadata", "orthanc", kind)
        for q in ("p50", "p95") if kind == "warm" else ("p50",):
            key = f"metadata_{q}" if kind == "warm" else "metadata_first"
            out[key] = ratio(t[f"{q}_ms"], o[f"{q}_ms"], False) if _ok(t, o) else None
    for kind in ("cold", "cached"):
        t = _side(results, "rendered", "tessera", kind)
        o = _side(results, "rendered", "orthanc", kind)
        for q in ("p50", "p95"):
            value = ratio(t[f"{q}_ms"], o[f"{q}_ms"], False) if _ok(t, o) else None
            out[f"rendered_{kind}_{q}"] = value
    for kind, by_target in (results.get("frames") or {}).items():
        t, o = by_target.get("tessera"), by_target.get("orthanc")
        ok = _ok(t, o)
        out[f"frames_{kind}_fps"] = (
            ratio(t["frames_per_s"], o["frames_per_s"], True) if ok else None
        )
        out[f"frames_{kind}_p95"] = ratio(t["p95_ms"], o["p95_ms"], False) if ok else None
        out[f"frames_{kind}_p50"] = ratio(t["p50_ms"], o["p50_ms"], False) if ok else None
    retrieve = results.get("retrieve") or {}
    for kind in ("warm", "cold"):
        speeds = {n: median_mb_per_s(p) for n, p in (retrieve.get(kind) or {}).items()}
        out[f"retrieve_{kind}"] = ratio(speeds.get("tessera"), speeds.get("orthanc"), True)
        raw = speeds.get("raw")
        out[f"retrieve_{kind}_of_raw"] = ratio(speeds.get("tessera"), raw, True)
    return out


def problems(results: dict[str, Any]) -> list[str]:
    """Failed or wrong answers anywhere (their ratios are not comparable)."""
    found = []
    for section, kinds in (("metadata", ("first", "warm")), ("rendered", ("cold", "cached"))):
        for target, node in (results.get(section) or {}).items():
            for kind in kinds:
                if node[kind]["failures"]:
                    errors = node[kind]["errors"][:1]
                    found.append(f"{target} {section} {kind}: {node[kind]['failures']}, {errors}")
    for kind, by_target in (results.get("frames") or {}).items():
        for target, node in by_target.items():
            if node["failures"]:
                found.append(f"{target} frames {kind}: {node['failures']}, {node['errors'][:1]}")
    direct = (results.get("frames_direct") or {}).get("native") or {}
    if direct.get("failures"):
        found.append(f"frames straight to retrieve: {direct['failures']}, {direct['errors'][:1]}")
    retrieve = results.get("retrieve") or {}
    for phase in ("warm", "cold"):
        for target, passes in (retrieve.get(phase) or {}).items():
            for p in passes:
                if p.get("failures"):
                    found.append(f"{target} retrieve {phase}: {p['errors'][:1]}")
    if retrieve.get("missing_objects"):
        found.append(f"objects not found in Tessera's folder: {retrieve['missing_objects']}")
    return found


def _x(value: float | None) -> str:
    return "✗" if value is None else f"{value:.2f}×"


def _met(value: float | None, target: float | None) -> str:
    if target is None:
        return ""
    if value is None:
        return "✗"
    return f"≥ {target:g}×: {'met' if value >= target else 'missed'}"


def _latency_rows(
    results: dict[str, Any], section: str, kinds: list[tuple[str, str]], r: dict[str, float | None]
) -> list[list[str]]:
    rows = []
    for kind, label in kinds:
        t = _side(results, section, "tessera", kind) or {}
        o = _side(results, section, "orthanc", kind) or {}
        for q in ("p50", "p95") if t.get("n", 0) > 1 or o.get("n", 0) > 1 else ("p50",):
            key = f"{section}_{q}" if kind == "warm" else f"{section}_{kind}"
            if section == "rendered":
                key = f"rendered_{kind}_{q}"
            name = f"{label} {q}" if t.get("n", 0) > 1 else label
            target = _met(r.get(key), TARGETS[key]) if key in TARGETS else ""
            rows.append(
                [
                    name,
                    _fmt(t.get(f"{q}_ms"), 2),
                    _fmt(o.get(f"{q}_ms"), 2),
                    _x(r.get(key)),
                    f"{t.get('n', 0)} / {o.get('n', 0)}",
                    target,
                ]
            )
    return rows


def _frames_label(kind: str, concurrency: int | None) -> str:
    """``native_6`` (6 in flight) -> ``native, 6 in flight``."""
    name = kind.split("_")[0]
    return f"{name}, {concurrency} in flight" if concurrency else name


def _frame_rows(results: dict[str, Any], r: dict[str, float | None]) -> list[list[str]]:
    rows = []
    for kind, by_target in (results.get("frames") or {}).items():
        t, o = by_target.get("tessera") or {}, by_target.get("orthanc") or {}
        key = f"frames_{kind}_fps"
        cpu = "/".join(f"{(s.get('client_cpu_share') or 0) * 100:.0f}%" for s in (t, o))
        rows.append(
            [
                _frames_label(kind, t.get("concurrency") or o.get("concurrency")),
                _fmt(t.get("frames_per_s")),
                _fmt(o.get("frames_per_s")),
                _x(r.get(key)),
                _fmt(t.get("p50_ms")),
                _fmt(o.get("p50_ms")),
                _fmt(t.get("p95_ms")),
                _fmt(o.get("p95_ms")),
                _x(r.get(f"frames_{kind}_p95")),
                _met(r.get(key), TARGETS.get(key)),
                cpu,
            ]
        )
    return rows


def _retrieve_rows(results: dict[str, Any], r: dict[str, float | None]) -> list[list[str]]:
    retrieve = results.get("retrieve") or {}
    rows = []
    for phase in ("warm", "cold"):
        by = retrieve.get(phase) or {}
        if not by:
            continue
        speed = {n: median_mb_per_s(p) for n, p in by.items()}
        rows.append(
            [
                phase,
                _fmt(speed.get("raw")),
                _fmt(speed.get("tessera")),
                _fmt(speed.get("orthanc")),
                _x(r.get(f"retrieve_{phase}")),
                _x(r.get(f"retrieve_{phase}_of_raw")),
                str(max((len(p) for p in by.values()), default=0)),
                " / ".join(_client_cpu(by.get(n)) for n in ("tessera", "orthanc")),
            ]
        )
    return rows


def _client_cpu(passes: list[dict[str, Any]] | None) -> str:
    """The benchmark client's median CPU share of one core over the passes."""
    shares = [p["client_cpu_share"] for p in passes or [] if p.get("client_cpu_share")]
    return f"{statistics.median(shares) * 100:.0f}%" if shares else "–"


def _cpu_lines(results: dict[str, Any]) -> list[str]:
    """Server CPU per frame, by process: where each target spends its time."""
    lines = []
    for kind, by_target in (results.get("frames") or {}).items():
        for target, node in by_target.items():
            cpu = node.get("server_cpu_ms_per_frame") or {}
            busy = {k: v for k, v in cpu.items() if v >= 0.05}
            text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(busy.items(), key=lambda x: -x[1]))
            lines.append(f"- {kind}, {target}: {sum(cpu.values()):.2f} ms ({text or '–'})")
    direct = (results.get("frames_direct") or {}).get("native")
    if direct:
        cpu = direct.get("server_cpu_ms_per_frame") or {}
        lines.append(
            f"- diagnostic, native frames straight to Tessera's retrieve service (no router): "
            f"{_fmt(direct.get('frames_per_s'))} frames/s, p95 {_fmt(direct.get('p95_ms'))} ms, "
            f"retrieve {cpu.get('retrieve', 0):.2f} ms CPU per frame"
            + (f", {direct['failures']} failures" if direct.get("failures") else "")
        )
    return ["Server CPU per frame (ms of CPU, by process):", "", *lines] if lines else []


def _render_cpu_lines(results: dict[str, Any]) -> list[str]:
    """Server CPU per rendering, by process."""
    lines = []
    for target, node in (results.get("rendered") or {}).items():
        for phase in ("cold", "cached"):
            cpu = node[phase].get("server_cpu_ms_per_request") or {}
            busy = {k: v for k, v in cpu.items() if v >= 0.05}
            text = ", ".join(f"{k} {v:.2f}" for k, v in sorted(busy.items(), key=lambda x: -x[1]))
            lines.append(f"- {phase}, {target}: {sum(cpu.values()):.2f} ms ({text or '–'})")
    return ["Server CPU per request (ms of CPU, by process):", "", *lines] if lines else []


def _profile_lines(results: dict[str, Any]) -> list[str]:
    """The hottest functions py-spy saw (``--profile``)."""
    out = []
    for service, node in (results.get("profile") or {}).items():
        out += ["", f"py-spy, Tessera {service} during the native frames (`{node['file']}`):", ""]
        rows = [[name[:110], f"{own:.1f}", f"{incl:.1f}"] for name, own, incl in node["hot"]]
        out += _table(["function", "% self", "% inclusive"], rows)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The whole WADO report as Markdown."""
    data, machine, r = results["dataset"], results["machine"], results.get("ratios") or {}
    versions = ", ".join(f"{k} {v}" for k, v in results.get("versions", {}).items())
    plan = results["plan"]
    dicomweb = (results.get("orthanc_config") or {}).get("DicomWeb", {})
    metadata_mode = dicomweb.get("SeriesMetadata", "Full (packaged default)")
    size = f"{data['size']}×{data['size']}"
    out = [
        f"# WADO: Tessera vs Orthanc — {results['started']}",
        "",
        f"Dataset: one CT study, {data['instances']} native instances ({size} 16-bit, "
        f"Explicit VR Little Endian) + {data['encapsulated']} JPEG 2000 Lossless, "
        f"{data['megabytes']:.1f} MB. Machine: {machine['nproc']} CPUs "
        f"({machine['cpu_model']}), {machine['memory_gib']} GiB, data on "
        f"{machine['workdir_filesystem']}. Load average {machine['load_average_at_start']}"
        f" at start; {results.get('load_average')}. Commit {machine['commit']}.",
        f"Versions: {versions}. Orthanc DicomWeb SeriesMetadata: {metadata_mode}.",
        "",
        "Ratios > 1: Tessera faster (Orthanc/Tessera for latency, Tessera/Orthanc for "
        "throughput); ✗ = not comparable (see Checks).",
        "",
        f"## Series /metadata ({data['instances']} instances; ms)",
        "",
        *_table(
            ["request", "Tessera", "Orthanc", "ratio", "n T / O", "target"],
            _latency_rows(
                results, "metadata", [("first", "first request (cold)"), ("warm", "warm")], r
            ),
        ),
        "",
        f"## /frames/1, distinct instances ({plan['frame_passes']} passes; ms)",
        "",
        *_table(
            [
                "stored as",
                "Tessera frames/s",
                "Orthanc frames/s",
                "ratio",
                "Tessera p50",
                "Orthanc p50",
                "Tessera p95",
                "Orthanc p95",
                "ratio p95",
                "target",
                "client CPU T/O",
            ],
            _frame_rows(results, r),
        ),
        "",
        *_cpu_lines(results),
        *_profile_lines(results),
        "",
        f"## /rendered (image/jpeg, {size} CT; ms)",
        "",
        *_table(
            ["request", "Tessera", "Orthanc", "ratio", "n T / O", ""],
            _latency_rows(
                results,
                "rendered",
                [("cold", "first (never rendered)"), ("cached", "again (cached)")],
                r,
            ),
        ),
        "",
        *_render_cpu_lines(results),
        "",
        "## Whole study, WADO-RS multipart as stored, one request (MB/s, median of passes)",
        "",
        *_table(
            [
                "page cache",
                "raw read of Tessera's object files",
                "Tessera",
                "Orthanc",
                "Tessera / Orthanc",
                "Tessera / raw",
                "passes",
                "client CPU T / O",
            ],
            _retrieve_rows(results, r),
        ),
        "",
        "## Checks",
        "",
        *([f"- ⚠ {p}" for p in results.get("problems", [])] or ["- every answer checked"]),
        "",
    ]
    return "\n".join(out)


def write(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``wado-latest.{json,md}`` and timestamped copies in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    stamp = results["started"].replace(":", "").replace("-", "")
    paths = []
    for name in ("wado-latest", f"wado-{stamp}"):
        json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        md_path.write_text(text)
        paths.append((json_path, md_path))
    return paths[0]
