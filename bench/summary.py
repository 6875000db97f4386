"""Issue 12's side-by-side: the figures users feel first, Tessera and Orthanc from the
same ``make bench`` run (the core plan's STOW modes, then the WADO set's reads), as one
table with ratios > 1 where Tessera is better, and the server CPU per stored instance by
service. Printed at the end of ``make bench`` and written to ``results/summary-latest.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import _fmt, _table
from bench.wado_report import median_mb_per_s, ratio


def _stow(main: dict[str, Any], target: str, label: str) -> dict[str, Any]:
    return ((main.get("targets") or {}).get(target) or {}).get("stow", {}).get(label) or {}


def _row(name: str, t: float | None, o: float | None, unit: str, higher: bool) -> list[str]:
    r = ratio(t, o, higher)
    return [name, f"{_fmt(o)} {unit}", f"{_fmt(t)} {unit}", "–" if r is None else f"{r:.2f}"]


def rows(main: dict[str, Any], wado: dict[str, Any]) -> list[list[str]]:
    out = []
    for label, name in (
        ("1x4", "STOW 1 instance/request, 4 clients"),
        ("10x4", "STOW 10 instances/request, 4 clients"),
    ):
        t, o = _stow(main, "tessera", label), _stow(main, "orthanc", label)
        if t or o:
            out.append(
                _row(name, t.get("instances_per_s"), o.get("instances_per_s"), "inst/s", True)
            )
    for label in ("1x4", "10x4"):
        t, o = _stow(main, "tessera", label), _stow(main, "orthanc", label)
        tc, oc = t.get("server_cpu_ms_per_instance"), o.get("server_cpu_ms_per_instance")
        if tc or oc:
            out.append(
                _row(
                    f"server CPU per stored instance, all processes ({label})", tc, oc, "ms", False
                )
            )
    warm = (wado.get("retrieve") or {}).get("warm") or {}
    if warm:
        out.append(
            _row(
                "whole study retrieve (one request, identity)",
                median_mb_per_s(warm.get("tessera")),
                median_mb_per_s(warm.get("orthanc")),
                "MB/s",
                True,
            )
        )
    frames = wado.get("frames") or {}
    one, six = frames.get("native_1") or {}, frames.get("native_6") or {}
    if one:
        t, o = one.get("tessera") or {}, one.get("orthanc") or {}
        out.append(
            _row(
                "one native CT frame, sequential p50", t.get("p50_ms"), o.get("p50_ms"), "ms", False
            )
        )
    if six:
        t, o = six.get("tessera") or {}, six.get("orthanc") or {}
        out.append(
            _row(
                "viewer opening a series, 6 in flight, identity",
                t.get("frames_per_s"),
                o.get("frames_per_s"),
                "frames/s",
                True,
            )
        )
    rendered = wado.get("rendered") or {}
    t = (rendered.get("tessera") or {}).get("cold") or {}
    o = (rendered.get("orthanc") or {}).get("cold") or {}
    if t or o:
        out.append(
            _row(
                "first `/rendered` JPEG of a CT instance, p50",
                t.get("p50_ms"),
                o.get("p50_ms"),
                "ms",
                False,
            )
        )
    return out


def cpu_lines(main: dict[str, Any]) -> list[str]:
    lines = []
    for label in ("1x4", "10x4"):
        for target in ("tessera", "orthanc"):
            by = _stow(main, target, label).get("server_cpu_ms_per_instance_by_service")
            if by:
                text = ", ".join(f"{k} {v:.2f}" for k, v in by.items() if v >= 0.05)
                lines.append(f"- STOW {label}, {target}: {text}")
    return ["Server CPU per stored instance by service (ms):", "", *lines] if lines else []


def markdown(main: dict[str, Any], wado: dict[str, Any]) -> str:
    lines = [
        "# Issue 12: Tessera next to Orthanc (ratio > 1: Tessera better)",
        "",
        *_table(["figure", "Orthanc", "Tessera", "ratio"], rows(main, wado)),
        "",
        *cpu_lines(main),
    ]
    return "\n".join(lines) + "\n"


def write(text: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "summary-latest.md"
    path.write_text(text)
    return path
