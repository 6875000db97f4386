"""``python -m tessera.router.rebalance.shardctl``: add or drain a shard, follow rebalance jobs.

    shardctl add NAME --ingest URL --index URL --retrieve URL [--follow]
    shardctl drain NAME [--follow]
    shardctl status [JOB] [--follow]
    shardctl shards

It talks to a router's admin API (:mod:`tessera.router.rebalance.api`), at ``--router``
(default ``http://<TESSERA_HOST>:<TESSERA_ROUTER_PORT>``). ``--follow`` polls the job
until it ends and draws a progress bar on stderr (plain lines every few seconds when
stderr is not a terminal); the exit status is 0 when the job is done, 1 when it failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

import httpx

from tessera.shared.settings import Settings

BAR = 30
POLL = 1.0
PLAIN_EVERY = 5.0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def render(job: dict[str, Any], bar: bool) -> str:
    """One line of a job's progress; with ``bar`` a ``[####----]`` gauge."""
    total, moved = job["total"], job["moved"]
    fraction = moved / total if total else (1.0 if job["state"] == "done" else 0.0)
    head = f"job {job['id']} {job['kind']} {job['shard']}: {job['state']}"
    gauge = ""
    if bar:
        filled = round(fraction * BAR)
        gauge = " [" + "#" * filled + "-" * (BAR - filled) + "]"
    studies = job["studies"]
    line = (
        f"{head}{gauge} {fraction * 100:5.1f}% {moved}/{total} instances, "
        f"{studies['done']}/{studies['total']} studies, {_size(job['bytes'])}, "
        f"{job['rate']:.1f}/s, ETA {_duration(job['eta'])}"
    )
    if studies["failed"]:
        line += f", {studies['failed']} failed"
    if job.get("error"):
        line += f" ({job['error']})"
    return line


def follow(client: httpx.Client, job_id: int, out: TextIO) -> int:
    tty = out.isatty()
    last_plain = 0.0
    while True:
        job = _get(client, f"/admin/rebalance/{job_id}")
        ended = job["state"] in ("done", "failed")
        if tty:
            out.write("\r\x1b[2K" + render(job, bar=True))
            if ended:
                out.write("\n")
        elif ended or time.monotonic() - last_plain >= PLAIN_EVERY:
            out.write(render(job, bar=False) + "\n")
            last_plain = time.monotonic()
        out.flush()
        if ended:
            return 0 if job["state"] == "done" else 1
        time.sleep(POLL)


def _get(client: httpx.Client, path: str) -> Any:
    r = client.get(path)
    _check(r)
    return r.json()


def _check(r: httpx.Response) -> None:
    if r.status_code >= 400:
        raise SystemExit(
            f"{r.request.method} {r.request.url}: HTTP {r.status_code} {r.text.strip()}"
        )


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(prog="python -m tessera.router.rebalance.shardctl")
    parser.add_argument(
        "--router",
        default=f"http://{settings.host}:{settings.router_port}",
        help="the router's base URL (its admin API is under /admin)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="register a shard and move its studies to it")
    add.add_argument("name")
    add.add_argument("--ingest", required=True, help="the shard's ingest service URL")
    add.add_argument("--index", required=True, help="the shard's index service URL")
    add.add_argument("--retrieve", required=True, help="the shard's retrieve service URL")
    add.add_argument("--follow", action="store_true", help="show progress until it ends")
    drain = sub.add_parser("drain", help="move every study off a shard, then remove it")
    drain.add_argument("name")
    drain.add_argument("--follow", action="store_true", help="show progress until it ends")
    status = sub.add_parser("status", help="rebalance jobs (the latest ones, or JOB)")
    status.add_argument("job", nargs="?", type=int)
    status.add_argument("--follow", action="store_true", help="show progress until it ends")
    sub.add_parser("shards", help="the registered shards")
    args = parser.parse_args(argv)

    with httpx.Client(base_url=args.router.rstrip("/"), timeout=30, trust_env=False) as client:
        if args.command == "shards":
            for s in _get(client, "/admin/shards"):
                print(
                    f"{s['name']}\t{s['state']}\t{s['ingest_url']}\t{s['index_url']}\t{s['retrieve_url']}"
                )
            return 0
        if args.command in ("add", "drain"):
            if args.command == "add":
                body = {
                    "name": args.name,
                    "ingest_url": args.ingest,
                    "index_url": args.index,
                    "retrieve_url": args.retrieve,
                }
                r = client.post("/admin/shards", json=body)
            else:
                r = client.post(f"/admin/shards/{args.name}/drain")
            _check(r)
            job = r.json()
            print(f"started job {job['id']}: {job['kind']} {job['shard']}")
            return follow(client, job["id"], sys.stderr) if args.follow else 0
        if args.job is None:
            jobs = _get(client, "/admin/rebalance")
            if args.follow:
                running = [j for j in jobs if j["state"] not in ("done", "failed")]
                if not running:
                    print("no rebalance job is running")
                    return 0
                return follow(client, running[0]["id"], sys.stderr)
            for job in jobs:
                print(render(job, bar=False))
            return 0
        if args.follow:
            return follow(client, args.job, sys.stderr)
        print(json.dumps(_get(client, f"/admin/rebalance/{args.job}"), indent=2))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
