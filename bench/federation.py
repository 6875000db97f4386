"""Federation benchmarks (issue 6): what the router and more shards cost and give.

1. QIDO-RS latency through the router with 1, 2 and 4 shards holding the same archive
   (bulk loaded, split by the real placement function): :mod:`bench.federation_qido`.
2. STOW-RS throughput through the router (1 and 3 shards) against straight to a shard's
   ingest service, same files and clients: :mod:`bench.federation_stow`.
3. Rebalance speed when a shard is added, with the real worker and ``shardctl``:
   :mod:`bench.federation_rebalance`.

Every federation runs as real processes (:mod:`bench.federation_stack`) in a temporary
folder deleted afterwards. Results: a table on stdout and
``bench/results/federation-latest.{md,json}``; exit status 1 when a check failed (a
failed request, targets disagreeing on a search's results, a store that does not hold
the set, a study not on its shard after the rebalance). Speed is never a pass/fail
criterion. Run as ``make bench BENCH_ARGS=--federation`` or::

    .venv/bin/python bench/federation.py [--parts qido,stow,rebalance] [--quick]
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
from typing import Any

from bench import federation_qido, federation_rebalance, federation_stow, report
from bench.dataset import Spec, ensure

PARTS = ("qido", "stow", "rebalance")


def log(message: str) -> None:
    print(f"[federation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def qido_lines(node: dict[str, Any]) -> list[str]:
    first: dict[str, Any] = next(iter(node["latency"].values()), {})
    targets = list(first)
    compared = [t for t in targets if t != federation_qido.BASELINE]
    header = ["search", *(f"{t} p50 / p95 ms" for t in targets)]
    header += [f"{t} ÷ 1 shard, p50 / p95" for t in compared]
    rows = []
    for search, by_target in node["latency"].items():
        cells = [f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f}" for m in by_target.values()]
        ratios = node["ratios"].get(search, {})
        for t in compared:
            r = ratios.get(t)
            cells.append(f"{r['p50']:.2f} / {r['p95']:.2f}" if r else "–")
        rows.append([search, *cells])
    split = {n: s["study_split"] for n, s in node["shards"].items()}
    return [
        f"### QIDO-RS, {node['instances_requested']} instances ({node['studies']} studies), "
        "sequential requests through the router (and to the 1-shard index service directly)",
        "",
        *_table(header, rows),
        "",
        f"Studies per shard: {json.dumps(split)}",
    ]


def stow_lines(out: dict[str, Any]) -> list[str]:
    d = out["dataset"]
    rows = []
    ratios = federation_stow.stow_ratios(out["modes"])
    for mode, targets in out["modes"].items():
        for target, r in targets.items():
            ratio = ratios.get(mode, {}).get(target)
            rows.append([mode, target, f"{r['instances_per_s']:.1f}", f"{r['mb_per_s']:.1f}",
                         f"{r['request_ms_p50']:.0f} / {r['request_ms_p95']:.0f}",
                         "1" if ratio is None else f"{ratio}"])  # fmt: skip
    return [
        f"### STOW-RS, {d['studies']} studies, {d['instances']} instances, "
        f"{d['bytes'] / 1e6:.0f} MB, fresh federation per run, {out.get('rounds', 1)} run(s) "
        "of each (folded: all instances / all seconds)",
        "",
        *_table(
            [
                "mode (per request x clients)",
                "target",
                "instances/s",
                "MB/s",
                "request p50 / p95 ms",
                "vs ingest direct",
            ],
            rows,
        ),
    ]


def _rebalance_rows(out: dict[str, Any]) -> list[tuple[str, str]]:
    job, split = out["job"], out["split"]
    return [
        ("studies per shard before", json.dumps(out["studies_before"])),
        ("studies per shard after", json.dumps(out["studies_after"])),
        ("moved", f"{job['studies']['done']} studies, {job['moved']} instances, "
                  f"{job['bytes'] / 1e6:.0f} MB"),
        ("`shardctl add --follow`, wall time", f"{out['command_seconds']} s"),
        ("copying phase (job `elapsed`)", f"{job['elapsed']} s"),
        ("speed, copying phase", f"{out['instances_per_s_moving']} instances/s, "
                                 f"{out['mb_per_s_moving']} MB/s"),
        ("speed, whole command", f"{out['instances_per_s_command']} instances/s, "
                                 f"{out['mb_per_s_command']} MB/s"),
        ("lock + release waits in the copying phase (model)",
         f"{split['waits_wall_s']} s ({split['waits_per_study_s']} s a study, "
         "paid once per batch of studies locked together)"),
        ("copy + verify + delete (the rest)", f"{split['copy_wall_s']} s"),
        ("waits before copying (transition, commit)", f"{split['before_copy_waits_s']} s"),
        ("admin API served by", out["admin_api"]),
    ]  # fmt: skip


def wait_cost(runs: list[dict[str, Any]]) -> dict[str, float] | None:
    """The first and last runs compared (same set, different ``registry_poll``): how much
    the copying phase and the whole command shrank, against what the model's waits say."""
    done = [r for r in runs if r.get("job") and r.get("split")]
    if len(done) < 2:
        return None
    a, b = done[0], done[-1]
    return {
        "from_poll": a["registry_poll"],
        "to_poll": b["registry_poll"],
        "copying_phase_s": round(a["job"]["elapsed"] - b["job"]["elapsed"], 2),
        "model_waits_s": round(a["split"]["waits_wall_s"] - b["split"]["waits_wall_s"], 2),
        "command_s": round(a["command_seconds"] - b["command_seconds"], 2),
        "model_before_copy_s": round(
            a["split"]["before_copy_waits_s"] - b["split"]["before_copy_waits_s"], 2
        ),
    }


def rebalance_lines(runs: list[dict[str, Any]]) -> list[str]:
    done = [r for r in runs if r.get("job") and r.get("split")]
    if not done:
        return ["### Rebalance", "", "no job ran: see the checks"]
    header = ["figure", *(f"registry_poll {r['registry_poll']} s" for r in done)]
    columns = [_rebalance_rows(r) for r in done]
    rows = [[name, *(col[i][1] for col in columns)] for i, (name, _) in enumerate(columns[0])]
    lines = [
        f"### Rebalance: add a shard to {done[0]['shards_before']}, the same set each run",
        "",
        *_table(header, rows),
    ]
    cost = wait_cost(done)
    if cost:
        lines += [
            "",
            f"From registry_poll {cost['from_poll']} s to {cost['to_poll']} s the copying "
            f"phase shrank by {cost['copying_phase_s']} s (the model's waits by "
            f"{cost['model_waits_s']} s) and the whole command by {cost['command_s']} s "
            f"(the waits before copying by {cost['model_before_copy_s']} s of it).",
        ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"## Federation benchmark — {results['started']}",
        "",
        f"Machine: {m['cpus_usable']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; "
        f"load average at start {m['load_average_at_start']}, at end "
        f"{m.get('load_average_at_end')} (the machine may be shared: compare figures "
        "within this run only).",
        "",
    ]
    for part, render in (("qido", qido_lines), ("stow", stow_lines),
                         ("rebalance", rebalance_lines)):  # fmt: skip
        if part in results:
            lines += [*render(results[part]), ""]
    lines += ["### Checks", ""]
    lines += [f"- ✗ {p}" for p in results["problems"]] or ["- all passed"]
    return "\n".join(lines) + "\n"


def _scratch(parent: Path | None) -> Path:
    """A new temporary folder PostgreSQL's own user can enter (we may run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="tessera-federation-", dir=parent))
    folder.chmod(0o711)
    return folder


async def run(args: argparse.Namespace) -> dict[str, Any]:
    scratch = _scratch(args.workdir)
    results: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": report.machine_facts(scratch),
        "problems": [],
    }
    try:
        if "qido" in args.parts:
            node = await federation_qido.run(
                scratch, args.qido_instances, args.repetitions, args.warmup, args.seed, log
            )
            results["qido"] = node
            results["problems"] += node["problems"]
        if "stow" in args.parts:
            data = ensure(Spec(studies=args.stow_studies, seed=args.seed))
            out = await federation_stow.run(scratch, data, log, args.stow_rounds)
            results["stow"] = out
            results["problems"] += federation_stow.stow_problems(out)
        if "rebalance" in args.parts:
            spec = Spec(args.rebalance_studies, args.rebalance_series, seed=args.seed)
            data = ensure(spec)
            results["rebalance"] = []
            for poll in args.registry_polls:
                out = await federation_rebalance.run(
                    scratch, data, args.rebalance_shards, poll, log
                )
                results["rebalance"].append(out)
                results["problems"] += out["problems"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def write(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().astimezone().strftime("%Y%m%dT%H%M%S%z")
    text, md = json.dumps(results, indent=2, default=str), markdown(results)
    for name in (f"federation-{stamp}", "federation-latest"):
        (folder / f"{name}.json").write_text(text)
        (folder / f"{name}.md").write_text(md)
    return folder / "federation-latest.json", folder / "federation-latest.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Federation (issue 6) benchmarks.")
    parser.add_argument("--parts", default=",".join(PARTS), help="qido,stow,rebalance")
    parser.add_argument("--quick", action="store_true", help="smaller sets, fewer repetitions")
    parser.add_argument("--qido-instances", type=int, help="instances in all (100000)")
    parser.add_argument("--repetitions", type=int, help="timed requests per search (50)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--stow-studies", type=int, help="studies of 2 x 25 instances (20)")
    parser.add_argument("--stow-rounds", type=int, help="runs of each mode (2; --quick 1)")
    parser.add_argument("--rebalance-studies", type=int, help="studies (40; --quick 4)")
    parser.add_argument("--rebalance-series", type=int, help="series of 25 a study (1; --quick 2)")
    parser.add_argument("--rebalance-shards", type=int, default=2, help="shards before (2)")
    parser.add_argument(
        "--registry-poll", default="1.0,0.25", help="seconds; one rebalance run each (1.0,0.25)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="where the temporary data goes (/tmp)")
    parser.add_argument("--results", type=Path, default=report.RESULTS_DIR)
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    try:
        args.registry_polls = [float(p) for p in args.registry_poll.split(",") if p.strip()]
    except ValueError:
        parser.error(f"--registry-poll {args.registry_poll!r}: seconds, comma-separated")
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    quick = args.quick
    args.qido_instances = args.qido_instances or (10_000 if quick else 100_000)
    args.repetitions = args.repetitions or (20 if quick else 50)
    args.stow_studies = args.stow_studies or (4 if quick else 20)
    args.stow_rounds = args.stow_rounds or (1 if quick else 2)
    args.rebalance_studies = args.rebalance_studies or (4 if quick else 40)
    args.rebalance_series = args.rebalance_series or (2 if quick else 1)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args))
    json_path, md_path = write(results, args.results)
    print(markdown(results))
    log(f"written {md_path} and {json_path}")
    return 1 if results["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
