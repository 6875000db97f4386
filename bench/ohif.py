"""OHIF on Tessera vs OHIF on Orthanc: time to the first image, and to a whole series.

Both sides use the same OHIF build (``make viewer``) and the same generated
``app-config.js`` (:mod:`tessera.router.viewer.ohif`, thumbnails decoded from frames on both,
``thumbnailRendering: 'wadors'``, as Orthanc's plugin renders no ``/thumbnail``), served
same-origin by the same code:

* Tessera: its own router serves ``/viewer/`` (what ``make run`` does);
* Orthanc: a Tessera *router process* whose one shard is Orthanc's DICOMweb root serves
  ``/viewer/`` and proxies ``/dicom-web/`` to Orthanc (:func:`start_front`). Each side so
  has one proxy hop between the browser and the server that answers.

One run: a fresh browser context (empty cache) opens
``/viewer/viewer?StudyInstanceUIDs=<study>``. The clock starts at the viewer's first
DICOMweb request (booting OHIF, the same bundle on both sides, is not counted):

* **first image**: the viewport's canvas first shows an image (sampled in the page every
  20 ms);
* **series loaded**: every frame of the displayed series has arrived (``responseEnd`` of
  its ``.../frames/1`` requests, from Resource Timing); OHIF prefetches the whole stack.

Runs alternate between the two sides, study by study, for ``--rounds`` rounds; the
table gives medians and p95, and the ratio Orthanc/Tessera (> 1: Tessera faster).
Headless Chromium draws with SwiftShader (no GPU) on the same cores as both servers:
compare the ratios, not the absolute figures, with a real viewer.

    .venv/bin/python bench/ohif.py                # 4 studies (2 × 25 × 512², 3 rounds)
    .venv/bin/python bench/run.py --ohif          # the full benchmark, then this on it
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.dataset import GeneratedSet, Spec, ensure
from tessera.local import ServerProcess, free_port, spawn, wait_until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# no onboarding tour or banner over the viewport; room for every frame's timing entry
INIT_SCRIPT = """
localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
sessionStorage.setItem('investigationalUseDialog', 'hidden');
performance.setResourceTimingBufferSize(100000);
"""
# performance.now() once the viewport shows an image (a tenth of a 32×32 sample lit)
FIRST_IMAGE_JS = """() => {
  const canvas = document.querySelector('canvas.cornerstone-canvas');
  if (!canvas || !canvas.width) return false;
  const sample = document.createElement('canvas');
  sample.width = sample.height = 32;
  const ctx = sample.getContext('2d');
  ctx.drawImage(canvas, 0, 0, 32, 32);
  const data = ctx.getImageData(0, 0, 32, 32).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] + data[i + 1] + data[i + 2] > 24) lit++;
  return lit > 102 ? performance.now() : false;
}"""
# the last responseEnd of a series whose frames have all arrived: [[uid, count], ...]
SERIES_LOADED_JS = """(series) => {
  const entries = performance.getEntriesByType('resource');
  for (const [uid, count] of series) {
    const done = new Map();
    for (const e of entries) {
      const frame = e.name.includes('/series/' + uid + '/') && e.name.includes('/frames/');
      if (frame && e.responseEnd > 0) done.set(e.name, e.responseEnd);
    }
    if (done.size >= count) return Math.max(...done.values());
  }
  return false;
}"""
FIRST_REQUEST_JS = """() => {
  const times = performance.getEntriesByType('resource')
    .filter(e => e.name.includes('/dicom-web/')).map(e => e.startTime);
  return times.length ? Math.min(...times) : null;
}"""
DICOMWEB_ENTRIES_JS = """() => performance.getEntriesByType('resource')
  .filter(e => e.name.includes('/dicom-web/'))
  .map(e => [e.name, e.startTime, e.responseEnd - e.startTime])"""
FIRST_IMAGE_TIMEOUT = 60.0
SERIES_TIMEOUT = 180.0
TARGETS = ("tessera", "orthanc")


def log(message: str) -> None:
    print(f"[bench ohif {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what the viewer needs -------------------------------------------------------------------


def viewer_dist() -> Path:
    """The OHIF build ``make viewer`` fetches (pinned in the Makefile)."""
    make = ["make", "-s", "--no-print-directory"]
    subprocess.run([*make, "viewer"], cwd=ROOT, check=True, timeout=900)
    out = subprocess.run(
        [*make, "viewer-dir"], cwd=ROOT, check=True, capture_output=True, text=True
    )
    dist = Path(out.stdout.strip().splitlines()[-1])
    if not (dist / "index.html").is_file():
        raise RuntimeError(f"make viewer left no index.html in {dist}")
    return dist


def viewer_env(dist: Path) -> dict[str, str]:
    """The settings of a router that serves the benchmark's viewer."""
    return {"TESSERA_VIEWER_DIR": str(dist), "TESSERA_VIEWER_THUMBNAIL_RENDERING": "wadors"}


def viewer_url(dicomweb_url: str) -> str:
    """``http://host:port/viewer/`` of a router whose DICOMweb root is ``dicomweb_url``."""
    return dicomweb_url.rstrip("/").removesuffix("/dicom-web") + "/viewer/"


class Front(ServerProcess):
    """A Tessera router whose shard is another server's DICOMweb root."""

    name = "viewer front"

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, port: int) -> None:
        super().__init__(proc, log_path)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def start_front(dicomweb_url: str, dist: Path, workdir: Path) -> Front:
    """``/viewer/`` and ``/dicom-web/`` (proxied to ``dicomweb_url``) on a free port."""
    port = free_port()
    upstream = dicomweb_url.rstrip("/")
    env = {
        **os.environ,
        **viewer_env(dist),
        "TESSERA_ROUTER_PORT": str(port),
        "TESSERA_INGEST_URL": upstream,
        "TESSERA_INDEX_URL": upstream,
        "TESSERA_RETRIEVE_URL": upstream,
        "TESSERA_LOG_LEVEL": "warning",
    }
    log_path = workdir / "front.log"
    proc = spawn([sys.executable, "-m", "tessera.router"], log_path, env=env, cwd=workdir)
    front = Front(proc, log_path, port)
    try:
        wait_until(lambda: _answers(front.url + "/viewer/"), proc, "viewer front", log_path)
    except BaseException:
        front.stop()
        raise
    return front


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Side:
    """The runs of one target."""

    first_image_ms: list[float] = field(default_factory=list)
    series_ms: list[float] = field(default_factory=list)
    frame_asked_ms: list[float] = field(default_factory=list)
    frame_received_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    requests: dict[str, list[float]] = field(default_factory=dict)  # kind -> durations

    def add(self, run: dict[str, Any], start: float) -> None:
        self.first_image_ms.append(run["first_image_ms"])
        self.series_ms.append(run["series_loaded_ms"])
        self.errors += run["errors"]
        frames = [(t, d) for url, t, d in run["requests"] if request_kind(url) == "frames"]
        if frames:
            asked, took = min(frames)
            self.frame_asked_ms.append(asked - start)
            self.frame_received_ms.append(asked + took - start)
        for url, _, duration in run["requests"]:
            self.requests.setdefault(request_kind(url), []).append(duration)

    def summary(self) -> dict[str, Any]:
        def stats(samples: list[float]) -> dict[str, float | None]:
            if not samples:
                return {"median": None, "p95": None, "min": None}
            ordered = sorted(samples)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            return {"median": statistics.median(ordered), "p95": p95, "min": ordered[0]}

        return {
            "runs": len(self.first_image_ms),
            "first_image_ms": stats(self.first_image_ms),
            "series_loaded_ms": stats(self.series_ms),
            "first_frame_asked_ms": stats(self.frame_asked_ms),
            "first_frame_received_ms": stats(self.frame_received_ms),
            "samples": {
                "first_image_ms": self.first_image_ms,
                "series_loaded_ms": self.series_ms,
                "first_frame_asked_ms": self.frame_asked_ms,
                "first_frame_received_ms": self.frame_received_ms,
            },
            "request_ms": {
                kind: {"count": len(d), "median": statistics.median(d), "max": max(d)}
                for kind, d in sorted(self.requests.items())
            },
            "failures": len(self.errors),
            "errors": self.errors[:5],
        }


def request_kind(url: str) -> str:
    """The DICOMweb transaction of one of the viewer's requests."""
    path, _, _ = url.partition("?")
    if "/frames/" in path:
        return "frames"
    for suffix in ("metadata", "thumbnail", "rendered", "series", "instances", "studies"):
        if path.endswith("/" + suffix):
            return {"series": "search series", "instances": "search instances",
                    "studies": "search studies"}.get(suffix, suffix)  # fmt: skip
    return "other"


async def _one_run(
    browser: Any, viewer: str, study: str, series: list[list[Any]]
) -> dict[str, Any]:
    """Open ``study`` in a fresh context; the two times (ms) and any DICOMweb error."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    await context.add_init_script(INIT_SCRIPT)
    page = await context.new_page()
    errors: list[str] = []
    page.on(
        "response",
        lambda r: (
            errors.append(f"HTTP {r.status} {r.url}")
            if r.status >= 400 and "/dicom-web/" in r.url
            else None
        ),
    )
    try:
        await page.goto(f"{viewer}viewer?StudyInstanceUIDs={study}")
        shown = await page.wait_for_function(
            FIRST_IMAGE_JS, polling=20, timeout=FIRST_IMAGE_TIMEOUT * 1000
        )
        loaded = await page.wait_for_function(
            SERIES_LOADED_JS, arg=series, polling=50, timeout=SERIES_TIMEOUT * 1000
        )
        start = await page.evaluate(FIRST_REQUEST_JS)
        return {
            "start": start,
            "first_image_ms": await shown.json_value() - start,
            "series_loaded_ms": await loaded.json_value() - start,
            "errors": errors,
            "requests": await page.evaluate(DICOMWEB_ENTRIES_JS),
        }
    finally:
        await context.close()


async def measure(
    viewers: dict[str, str], data: GeneratedSet, rounds: int, studies: int
) -> dict[str, Any]:
    """Every run of the plan on each viewer in ``viewers`` (name -> ``.../viewer/``)."""
    from playwright.async_api import async_playwright

    per_series = {se: 0 for s in data.studies for se in s.series}
    for inst in data.instances:
        per_series[inst.series] += 1
    chosen = data.studies[:studies]
    sides = {name: Side() for name in viewers}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            for viewer in viewers.values():  # warm-up (server caches, OS page cache)
                await _one_run(browser, viewer, chosen[0].uid, [[chosen[0].series[0], 1]])
            for n in range(rounds):
                for study in chosen:
                    series = [[se, per_series[se]] for se in study.series]
                    order = list(viewers) if n % 2 == 0 else list(reversed(viewers))
                    for name in order:
                        side = sides[name]
                        try:
                            run = await _one_run(browser, viewers[name], study.uid, series)
                        except Exception as exc:  # a timeout: recorded, the bench goes on
                            side.errors.append(f"{study.uid}: {type(exc).__name__}: {exc}"[:300])
                            continue
                        side.add(run, run["start"])
                        first, whole = run["first_image_ms"], run["series_loaded_ms"]
                        log(f"  {name} {study.uid[-12:]}: {first:.0f} ms, series {whole:.0f} ms")
        finally:
            await browser.close()
    out: dict[str, Any] = {
        "plan": {"rounds": rounds, "studies": len(chosen), "viewers": viewers},
        "targets": {name: side.summary() for name, side in sides.items()},
    }
    out["ratios"] = ratios(out)
    return out


def ratios(section: dict[str, Any]) -> dict[str, float | None]:
    """Orthanc/Tessera of the medians and p95s (> 1: Tessera faster)."""
    targets = section.get("targets", {})
    t, o = targets.get("tessera"), targets.get("orthanc")
    out: dict[str, float | None] = {}
    for metric in (
        "first_frame_asked_ms",
        "first_frame_received_ms",
        "first_image_ms",
        "series_loaded_ms",
    ):
        for q in ("median", "p95"):
            tv = (t or {}).get(metric, {}).get(q)
            ov = (o or {}).get(metric, {}).get(q)
            bad = (t or {}).get("failures") or (o or {}).get("failures")
            out[f"{metric}_{q}"] = round(ov / tv, 3) if tv and ov and not bad else None
    return out


def markdown(section: dict[str, Any]) -> list[str]:
    """The OHIF table, as Markdown lines."""
    plan, targets, ratio = section["plan"], section["targets"], section["ratios"]

    def cell(name: str, metric: str, q: str) -> str:
        value = targets.get(name, {}).get(metric, {}).get(q)
        return "–" if value is None else f"{value:,.0f}"

    def r(key: str) -> str:
        value = ratio.get(key)
        return "–" if value is None else f"{value:.2f}×"

    rows = [
        ["(OHIF asks for the first frame)", "first_frame_asked_ms"],
        ["(the first frame has arrived)", "first_frame_received_ms"],
        ["first image", "first_image_ms"],
        ["whole series loaded", "series_loaded_ms"],
    ]
    lines = [
        f"## OHIF viewer ({plan['studies']} studies × {plan['rounds']} rounds, fresh browser"
        " context per run, ms from the first DICOMweb request)",
        "",
        "| time to | Tessera median | Orthanc median | ratio | Tessera p95 | Orthanc p95 | ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, metric in rows:
        lines.append(
            f"| {label} | {cell('tessera', metric, 'median')} | {cell('orthanc', metric, 'median')}"
            f" | {r(metric + '_median')} | {cell('tessera', metric, 'p95')}"
            f" | {cell('orthanc', metric, 'p95')} | {r(metric + '_p95')} |"
        )
    kinds = sorted({k for side in targets.values() for k in side.get("request_ms", {})})
    lines += [
        "",
        "Each request of the viewer, duration (ms, start to last byte, as the browser saw"
        " it, concurrent with the others):",
        "",
        "| request | Tessera count | Tessera median | Tessera max | Orthanc count"
        " | Orthanc median | Orthanc max |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        cells = []
        for name in TARGETS:
            item = targets.get(name, {}).get("request_ms", {}).get(kind)
            cells += (
                ["–"] * 3
                if not item
                else [str(item["count"]), f"{item['median']:.0f}", f"{item['max']:.0f}"]
            )
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    for name, side in targets.items():
        if side.get("failures"):
            lines.append(f"\n⚠ {name}: {side['failures']} failures, e.g. {side['errors'][:2]}")
    return [*lines, ""]


# --- standalone ------------------------------------------------------------------------------


async def _store(url: str, data: GeneratedSet) -> None:
    from bench import workloads

    result = await workloads.store(url, workloads.stow_bodies(data.instances, 25), 4)
    if result.failures:
        raise RuntimeError(f"STOW to {url} failed: {result.errors[:2]}")


def check_chromium() -> None:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make deps-browser`")


def run_standalone(args: argparse.Namespace) -> dict[str, Any]:
    """Start Tessera (viewer included), Orthanc and its front; store; measure; stop."""
    from bench import cluster, orthanc

    check_chromium()
    data = ensure(Spec(studies=args.studies, seed=args.seed))
    dist = viewer_dist()
    scratch = Path(tempfile.mkdtemp(prefix="tessera-bench-ohif-"))
    scratch.chmod(0o711)
    servers: list[ServerProcess] = []
    try:
        tessera = cluster.start_tessera(scratch / "tessera", env=viewer_env(dist))
        servers.append(tessera)
        baseline = orthanc.start_orthanc(scratch / "orthanc")
        servers.append(baseline)
        front = start_front(baseline.dicomweb_url, dist, scratch)
        servers.append(front)
        viewers = {"tessera": viewer_url(tessera.dicomweb_url), "orthanc": front.url + "/viewer/"}

        async def store_and_measure() -> dict[str, Any]:
            log(f"storing {len(data.instances)} instances in both")
            await asyncio.gather(
                _store(tessera.dicomweb_url, data), _store(baseline.dicomweb_url, data)
            )
            return await measure(viewers, data, args.rounds, args.studies)

        section = asyncio.run(store_and_measure())
        section["versions"] = {
            **tessera.versions(),
            **baseline.versions(),
            "ohif": dist.parent.name,
        }
        return section
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=4, help="studies of 2 × 25 instances")
    parser.add_argument("--rounds", type=int, default=3, help="runs per study and target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    section = run_standalone(args)
    text = "\n".join(markdown(section))
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ohif-latest.json").write_text(json.dumps(section, indent=2) + "\n")
    (args.results / "ohif-latest.md").write_text(text + "\n")
    print(text)
    bad = any(side["failures"] for side in section["targets"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
