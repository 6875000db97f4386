"""``tessera store PATH... --url URL``: see :mod:`tessera.importer`.

    tessera store /media/cdrom ~/studies.zip --url http://127.0.0.1:8042/dicom-web
    tessera store DICOMDIR --url https://pacs.example.org/dicom-web --token "$TOKEN"

The journal (``--journal``, default ``.tessera-store.jsonl`` in the current folder) has
a line per instance the archive acknowledged; a run that finds it skips those files (by
path, size and modification time), so an interrupted import goes on where it stopped.
The exit status is 0 when every DICOM file is in the archive, 1 when some failed, 2 for
bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import httpx

from tessera.importer.files import Skipped, Source, walk
from tessera.importer.upload import Item, Outcome, Sender, sop_instance_uid

REASONS = {
    0xA700: "Out of Resources",
    0xA900: "Data Set does not match SOP Class",
    0xC000: "Cannot understand",
    0xC122: "Referenced Transfer Syntax not supported",
    0x0110: "Processing failure",
    0x0111: "Duplicate SOP Instance",
    0x0122: "Referenced SOP Class not supported",
    0x0124: "Not authorized",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="tessera store",
        description="Store DICOM files (folders, zip files, DICOMDIRs) in a DICOMweb archive"
        " with STOW-RS; resumes where an interrupted run stopped.",
    )
    p.add_argument("paths", nargs="+", help="files, folders, zip files or DICOMDIRs")
    p.add_argument(
        "--url", required=True, help="the DICOMweb root, e.g. http://host:8042/dicom-web"
    )
    p.add_argument("--token", default=os.environ.get("TESSERA_TOKEN"),
                   help="a bearer token or API key (default: $TESSERA_TOKEN)")  # fmt: skip
    p.add_argument("--parallel", type=int, default=4, help="requests at once (default 4)")
    p.add_argument("--batch", type=int, default=10, help="instances per request (default 10)")
    p.add_argument("--batch-mb", type=float, default=32.0,
                   help="megabytes a request at most (default 32)")  # fmt: skip
    p.add_argument("--journal", type=Path, default=Path(".tessera-store.jsonl"),
                   help="acknowledged files, to resume (.tessera-store.jsonl)")  # fmt: skip
    p.add_argument("--no-resume", action="store_true", help="send everything again")
    p.add_argument("--report", type=Path, help="write the outcome as JSON to this file")
    p.add_argument("--cacert", help="a CA bundle to verify the archive's certificate")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    args = p.parse_args(argv)
    if args.parallel < 1 or args.batch < 1 or args.batch_mb <= 0:
        p.error("--parallel, --batch and --batch-mb must be positive")
    return args


class Progress:
    """Counts and one status line on stderr (redrawn on a terminal, else every 10 s)."""

    def __init__(self, total: int, total_bytes: int, out: TextIO = sys.stderr) -> None:
        self.total, self.total_bytes = total, total_bytes
        self.done = self.bytes = self.failed = 0
        self.started = time.monotonic()
        self.out = out
        self.tty = out.isatty()
        self.lock = threading.Lock()
        self._last = 0.0

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.done += 1
            self.bytes += outcome.source.size
            self.failed += not outcome.stored
            self.show()

    def line(self) -> str:
        seconds = max(time.monotonic() - self.started, 1e-6)
        rate, mb_rate = self.done / seconds, self.bytes / seconds / 1e6
        left = self.total_bytes - self.bytes
        eta = f"{left / (self.bytes / seconds):.0f}s" if self.bytes else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.done:,}/{self.total:,} instances, {self.bytes / 1e6:,.1f}"
            f"/{self.total_bytes / 1e6:,.1f} MB, {rate:.1f} inst/s, {mb_rate:.1f} MB/s,"
            f" ETA {eta}{failed}"
        )

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 10.0):
            return
        self._last = now
        if self.tty:
            self.out.write("\r\033[K" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def end(self) -> None:
        self.show(force=True)
        if self.tty:
            self.out.write("\n")


def batches(items: Iterator[Item], size: int, max_bytes: int) -> Iterator[list[Item]]:
    """Items in batches of ``size`` and ``max_bytes`` at most; an item whose SOP Instance
    UID could not be read goes alone (its answer must be its own)."""
    batch: list[Item] = []
    weight = 0
    for item in items:
        alone = item.sop is None
        if batch and (alone or len(batch) >= size or weight + len(item.data) > max_bytes):
            yield batch
            batch, weight = [], 0
        batch.append(item)
        weight += len(item.data)
        if alone:
            yield batch
            batch, weight = [], 0
    if batch:
        yield batch


def load_journal(path: Path) -> set[str]:
    keys = set()
    try:
        with path.open() as f:
            for line in f:
                try:
                    keys.add(json.loads(line)["key"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill
    except FileNotFoundError:
        pass
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    found = list(walk(args.paths))
    sources = [s for s in found if isinstance(s, Source)]
    skipped = [s for s in found if isinstance(s, Skipped)]
    acknowledged = set() if args.no_resume else load_journal(args.journal)
    todo = [s for s in sources if s.key not in acknowledged]
    resumed = len(sources) - len(todo)
    print(
        f"{len(sources):,} DICOM files ({sum(s.size for s in sources) / 1e6:,.1f} MB)"
        + (f", {resumed:,} already stored by an earlier run" if resumed else "")
        + (f", {len(skipped):,} other files skipped" if skipped else ""),
        file=sys.stderr,
    )
    progress = Progress(len(todo), sum(s.size for s in todo))
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    args.journal.parent.mkdir(parents=True, exist_ok=True)
    journal = args.journal.open("a")

    def done(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)
            if outcome.stored:
                journal.write(json.dumps({"key": outcome.source.key, "sop": outcome.sop}) + "\n")
                journal.flush()
        progress.add(outcome)

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    verify: str | bool = args.cacert or True
    interrupted = False
    with httpx.Client(
        base_url=args.url.rstrip("/"), headers=headers, timeout=args.timeout, verify=verify
    ) as client:
        sender = Sender(client, done)

        def items() -> Iterator[Item]:
            for source in todo:
                if sender.stop.is_set():
                    return
                try:
                    data = source.read()
                except OSError as e:
                    done(Outcome(source, None, False, None, f"cannot be read: {e.strerror or e}"))
                    continue
                yield Item(source, data, sop_instance_uid(data))

        with ThreadPoolExecutor(args.parallel, thread_name_prefix="stow") as pool:
            try:
                in_flight: set = set()
                for batch in batches(items(), args.batch, int(args.batch_mb * 1e6)):
                    while len(in_flight) >= args.parallel * 2:  # bounded memory
                        finished = {f for f in in_flight if f.done()}
                        if not finished:
                            time.sleep(0.01)
                        in_flight -= finished
                    in_flight.add(pool.submit(sender.send, batch))
                for f in list(in_flight):
                    f.result()
            except KeyboardInterrupt:
                interrupted = True
                sender.stop.set()
    journal.close()
    progress.end()
    return summary(args, outcomes, skipped, resumed, time.monotonic() - started, interrupted)


def summary(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    skipped: list[Skipped],
    resumed: int,
    seconds: float,
    interrupted: bool,
) -> int:
    stored = [o for o in outcomes if o.stored]
    failed = [o for o in outcomes if not o.stored]
    size = sum(o.source.size for o in stored)
    print(
        f"stored {len(stored):,} instances ({size / 1e6:,.1f} MB) in {seconds:.1f}s"
        f" ({len(stored) / max(seconds, 1e-6):.1f} inst/s)"
        + (f"; {resumed:,} were stored by an earlier run" if resumed else ""),
        file=sys.stderr,
    )
    if failed:
        print(f"{len(failed):,} failed:", file=sys.stderr)
        by_reason = Counter((o.reason, o.http) for o in failed)
        for (reason, http), count in by_reason.most_common():
            example = next(o for o in failed if (o.reason, o.http) == (reason, http))
            if reason:
                code = f"{reason:#06x} {REASONS.get(reason, '')}".rstrip() + ":"
            else:
                code = ""
            print(f"  {count:>6,}  {code} {example.message} (e.g. {example.source.name})",
                  file=sys.stderr)  # fmt: skip
    if skipped:
        whys = Counter(s.why for s in skipped).most_common()
        listed = "; ".join(f"{n:,} {why}" for why, n in whys[:3])
        print(f"{len(skipped):,} files skipped ({listed})", file=sys.stderr)
    if interrupted:
        print("interrupted: run the same command again to go on", file=sys.stderr)
    if args.report:
        args.report.write_text(json.dumps({
            "url": args.url,
            "stored": len(stored),
            "stored_bytes": size,
            "already_stored": resumed,
            "seconds": round(seconds, 3),
            "interrupted": interrupted,
            "failed": [{"file": o.source.name, "sop_instance_uid": o.sop, "reason": o.reason,
                        "http_status": o.http, "message": o.message} for o in failed],
            "skipped": [{"file": s.name, "why": s.why} for s in skipped],
        }, indent=2))  # fmt: skip
    if interrupted:
        return 130
    return 1 if failed else 0
