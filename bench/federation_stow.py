"""STOW-RS throughput through the router against straight to a shard's ingest service.

Same files (a :mod:`bench.dataset` set), same client concurrency, request bodies built
before the clock starts (:func:`bench.workloads.store`). Targets:

* ``ingest direct``: one shard's ingest service, no router;
* ``router, 1 shard``: the router (registry mode) in front of one shard;
* ``router, 3 shards``: the router in front of three shards; it sends each study to
  its shard and splits a request holding several studies into one request per shard.

Modes (instances per request x clients): ``1x4``; ``25x4`` with each request one series
(:func:`bench.workloads.stow_bodies`); ``25x4 mixed`` with each request's instances
taken in turn from every study (:func:`mixed_groups`), so the 3-shard router must split
every request. Every (mode, target) stores the whole set into a fresh, empty federation
(new databases, new processes), the order of targets alternating between modes; then a
``/studies`` search must report every study and instance.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import workloads
from bench.dataset import GeneratedSet, Instance
from bench.federation_stack import STOW_SERVICES, Group, start_group

TARGETS = ("ingest direct", "router, 1 shard", "router, 3 shards")
MODES = {"1x4": (1, 4, False), "25x4": (25, 4, False), "25x4 mixed": (25, 4, True)}


def mixed_groups(instances: Sequence[Instance], per_request: int) -> list[list[Instance]]:
    """Groups of ``per_request`` instances taken round-robin across the studies (each
    request holds as many studies as it can)."""
    by_study: dict[str, list[Instance]] = {}
    for inst in instances:
        by_study.setdefault(inst.study, []).append(inst)
    queues = list(by_study.values())
    order: list[Instance] = []
    for k in range(max((len(q) for q in queues), default=0)):
        order += [q[k] for q in queues if k < len(q)]
    return [order[i : i + per_request] for i in range(0, len(order), per_request)]


def bodies(instances: Sequence[Instance], per_request: int, mixed: bool) -> list[Any]:
    if not mixed:
        return workloads.stow_bodies(instances, per_request)
    delimiter = f"--{workloads.BOUNDARY}".encode()
    head = delimiter + b"\r\nContent-Type: application/dicom\r\n\r\n"
    out = []
    for group in mixed_groups(instances, per_request):
        files = [inst.path.read_bytes() for inst in group]
        if any(delimiter in f for f in files):
            raise RuntimeError("the multipart boundary occurs in a DICOM file; change BOUNDARY")
        content = b"".join(head + f + b"\r\n" for f in files) + delimiter + b"--\r\n"
        out.append(workloads.StowBody(content, len(files), sum(len(f) for f in files)))
    return out


def target_order(mode_index: int) -> list[str]:
    """Targets in turn, reversed every other mode."""
    return list(TARGETS) if mode_index % 2 == 0 else list(reversed(TARGETS))


async def holdings(qido_url: str) -> tuple[int, int]:
    """(studies, instances) a ``/studies`` search reports."""
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        r = await http.get(
            qido_url + "/studies?includefield=00201208",
            headers={"Accept": "application/dicom+json"},
        )
        r.raise_for_status()
        found = r.json() if r.content else []
    n = sum(int(s.get("00201208", {}).get("Value", [0])[0]) for s in found)
    return len(found), n


def _urls(target: str, group: Group) -> tuple[str, str]:
    """(STOW base URL, QIDO base URL) of a target."""
    if target == "ingest direct":
        shard = group.shards[0]
        return shard.ingest_url, shard.index_url
    return group.dicomweb_url, group.dicomweb_url


async def _store_once(
    folder: Path, target: str, prepared: list[Any], clients: int
) -> tuple[workloads.Throughput, tuple[int, int]]:
    """Start a fresh federation for ``target``, store every body, see what it holds."""
    shards = 3 if target.endswith("3 shards") else 1
    group = await asyncio.to_thread(
        start_group, folder, shards, STOW_SERVICES, router=target != "ingest direct"
    )
    try:
        stow_url, qido_url = _urls(target, group)
        measured = await workloads.store(stow_url, prepared, clients)
        return measured, await holdings(qido_url)
    finally:
        group.close()
        shutil.rmtree(folder, ignore_errors=True)


async def run(
    scratch: Path, data: GeneratedSet, log: Callable[[str], None], rounds: int = 1
) -> dict[str, Any]:
    """Every mode on every target, ``rounds`` times (runs of a mode and target are folded:
    instances/s = all instances / all their seconds)."""
    out: dict[str, Any] = {"dataset": {"studies": len(data.studies),
                                       "instances": len(data.instances),
                                       "bytes": data.total_bytes},
                           "rounds": rounds, "modes": {}}  # fmt: skip
    folded: dict[tuple[str, str], workloads.Throughput] = {}
    held: dict[tuple[str, str], list[tuple[int, int]]] = {}
    turn = 0
    for r in range(rounds):
        for m, (mode, (per, clients, mixed)) in enumerate(MODES.items()):
            prepared = bodies(data.instances, per, mixed)
            for target in target_order(turn):
                folder = scratch / f"stow-{r}-{m}-{target.replace(' ', '').replace(',', '-')}"
                measured, holds = await _store_once(folder, target, prepared, clients)
                if (mode, target) in folded:
                    folded[mode, target].add(measured)
                else:
                    folded[mode, target] = measured
                held.setdefault((mode, target), []).append(holds)
                log(f"STOW {mode} {target}: {measured.instances_per_s:.1f} inst/s, "
                    f"{measured.mb_per_s:.1f} MB/s, holds {holds}, "
                    f"{measured.failures} failed")  # fmt: skip
            turn += 1
            del prepared
    for (mode, target), measured in folded.items():
        result = measured.summary()
        result["held"] = held[mode, target]
        out["modes"].setdefault(mode, {})[target] = result
    return out


def stow_ratios(modes: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Mode -> target -> instances/s relative to ``ingest direct`` (< 1: slower)."""
    out: dict[str, dict[str, float]] = {}
    for mode, targets in modes.items():
        base = targets.get("ingest direct", {}).get("instances_per_s")
        out[mode] = {
            t: round(r["instances_per_s"] / base, 2)
            for t, r in targets.items()
            if base and t != "ingest direct"
        }
    return out


def stow_problems(out: dict[str, Any]) -> list[str]:
    want = (out["dataset"]["studies"], out["dataset"]["instances"])
    problems = []
    for mode, targets in out["modes"].items():
        for target, r in targets.items():
            if r["failures"]:
                problems.append(f"STOW {mode} {target}: {r['failures']} failed {r['errors'][:1]}")
            wrong = [h for h in r["held"] if tuple(h) != want]
            if wrong:
                problems.append(f"STOW {mode} {target}: holds {wrong}, expected {want}")
    return problems
