"""EXPLAIN, checks and tables of the QIDO-RS scale benchmark (:mod:`bench.qido_scale`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg

from bench.report import RESULTS_DIR
from tessera.shared.qido.params import Level, Scope, parse_query
from tessera.shared.qido.sql import SESSION_SETTINGS, Sql, page_of, search_sql

TARGET_MS = 50.0  # p95 at the largest size
GROWTH = 2.0  # p95 at the largest size / p95 at the smallest


async def database_size(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()


def sql_for(request: str, max_limit: int = 1000) -> Sql:
    """The SQL the index service runs for a request path with its query string."""
    path, _, query = request.partition("?")
    parts = path.strip("/").split("/")
    level, scope = {
        1: (Level.STUDY, Scope()),
        3: (Level.SERIES, Scope(parts[1] if len(parts) > 1 else None)),
        5: (Level.INSTANCE, Scope(*parts[1:4:2])),
    }[len(parts)]
    parsed = parse_query(parse_qsl(query, keep_blank_values=True), level, scope)
    return search_sql(parsed, page_of(parsed, max_limit))


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [n for child in node.get("Plans", []) for n in _walk(child)]


async def explain_all(dsn: str, searches: dict[str, list[str]]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of each search's first request, planned as the service
    plans it (``SESSION_SETTINGS``)."""
    conn = await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
    out: dict[str, Any] = {}
    try:
        for name, requests in searches.items():
            sql = sql_for(requests[0])
            text = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql.text, *sql.args)
            raw = await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql.text, *sql.args)
            plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
            nodes = _walk(plan["Plan"])
            out[name] = {
                "execution_ms": plan["Execution Time"],
                "planning_ms": plan["Planning Time"],
                "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
                "seq_scans": sorted(
                    {n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"}
                ),
                "plan": [r[0] for r in text],
            }
    finally:
        await conn.close()
    return out


def problems(results: dict[str, Any]) -> list[str]:
    """Missed targets and failed searches."""
    found: list[str] = []
    sizes = sorted(results["sizes"], key=int)
    for size in sizes:
        for name, by_target in results["sizes"][size]["latency"].items():
            for target, summary in by_target.items():
                if summary["failures"]:
                    found.append(f"{target} {size} {name}: {summary['errors']}")
                elif target == "tessera" and not summary["answers"]:
                    found.append(f"tessera {size} {name}: no results")
    if sizes:
        largest = results["sizes"][sizes[-1]]["latency"]
        smallest = results["sizes"][sizes[0]]["latency"]
        for name, by_target in largest.items():
            p95 = by_target["tessera"]["p95_ms"]
            if p95 > TARGET_MS:
                found.append(f"{name} at {sizes[-1]}: p95 {p95} ms > {TARGET_MS} ms")
            small = smallest.get(name, {}).get("tessera", {})
            comparable = _comparable(small.get("answers", 0), by_target["tessera"]["answers"])
            base = small.get("p95_ms")
            if len(sizes) > 1 and comparable and base and p95 > GROWTH * base:
                found.append(f"{name}: p95 {p95} ms at {sizes[-1]} > {GROWTH} × {base} ms")
    return found


def _comparable(a: int, b: int) -> bool:
    """As many results, give or take 10 % (drill-downs pick other studies per size)."""
    return abs(a - b) <= 0.1 * max(a, b, 1)


def growth_notes(results: dict[str, Any]) -> list[str]:
    """p95 at the largest size over p95 at the smallest, per search; the 2× target only
    applies where both answered as many results (a page of 8 is not a page of 101)."""
    sizes = sorted(results["sizes"], key=int)
    if len(sizes) < 2:
        return []
    notes = []
    for name, by_target in results["sizes"][sizes[-1]]["latency"].items():
        large = by_target["tessera"]
        small = results["sizes"][sizes[0]]["latency"][name]["tessera"]
        ratio = large["p95_ms"] / small["p95_ms"] if small["p95_ms"] else float("nan")
        same = _comparable(small["answers"], large["answers"])
        notes.append(
            f"{name}: {ratio:.2f}×"
            + (
                ""
                if same
                else f" (not comparable: {small['answers']} vs {large['answers']} results)"
            )
        )
    return notes


def _fmt(summary: dict[str, Any] | None) -> str:
    if not summary:
        return "–"
    return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f} ({summary['answers']})"


def markdown(results: dict[str, Any]) -> str:
    sizes = sorted(results["sizes"], key=int)
    lines = [f"# QIDO-RS at scale ({results['started']})", ""]
    for size in sizes:
        node = results["sizes"][size]
        rows = node["load"]["rows"]
        lines.append(
            f"- {size}: {rows['study']} studies, {rows['series']} series, {rows['instance']}"
            f" instances; bulk load {node['load']['total_seconds']} s; database"
            f" {node['database_bytes'] / 2**20:.0f} MiB"
            + (f"; Orthanc load {node['orthanc_load']}" if "orthanc_load" in node else "")
        )
    header = ["search"] + [f"Tessera {s} p50 / p95 ms (results)" for s in sizes]
    orthanc = [s for s in sizes if "orthanc_load" in results["sizes"][s]]
    header += [f"Orthanc {s} p50 / p95 (results)" for s in orthanc]
    header += [f"Orthanc/Tessera p50 at {s}" for s in orthanc]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name in results["sizes"][sizes[0]]["latency"]:
        cells = [name] + [_fmt(results["sizes"][s]["latency"][name].get("tessera")) for s in sizes]
        cells += [_fmt(results["sizes"][s]["latency"][name].get("orthanc")) for s in orthanc]
        for s in orthanc:
            pair = results["sizes"][s]["latency"][name]
            ratio = pair.get("orthanc", {}).get("p50_ms", 0) / pair["tessera"]["p50_ms"]
            cells.append(f"{ratio:.1f}×" if "orthanc" in pair else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "EXPLAIN ANALYZE at the largest size (SQL execution, indexes used):", ""]
    for name, plan in results["sizes"][sizes[-1]]["explain"].items():
        seq = f"; seq scan {', '.join(plan['seq_scans'])}" if plan["seq_scans"] else ""
        indexes = ", ".join(plan["indexes"]) or "no index"
        lines.append(f"- {name}: {plan['execution_ms']:.2f} ms, {indexes}{seq}")
    lines += ["", f"p95 growth, {sizes[-1]} over {sizes[0]} instances (target ≤ {GROWTH}×):", ""]
    lines += [f"- {note}" for note in growth_notes(results)]
    lines += ["", "Problems: " + ("; ".join(results["problems"]) or "none"), ""]
    return "\n".join(lines)


def write(results: dict[str, Any], folder: Path = RESULTS_DIR) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = results["started"].replace(":", "").replace("-", "")
    text = markdown(results)
    paths = []
    for name in ("qido-scale-latest", f"qido-scale-{stamp}"):
        json_path, md_path = folder / f"{name}.json", folder / f"{name}.md"
        json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        md_path.write_text(text)
        paths.append((json_path, md_path))
    return paths[0]
