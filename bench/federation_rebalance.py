"""Rebalance speed: add a shard to a federation holding a :mod:`bench.dataset` set.

A federation of ``shards`` shards (ingest, index, index worker, retrieve each), its
router and the real rebalance worker (``python -m tessera.router.rebalance``) are
started with one more shard stack running but not registered. The set is stored through
the router (25 instances per request, 4 clients), then the new shard is added with the
real CLI, ``python -m tessera.router.rebalance.shardctl add NAME ... --follow``, which posts to the
router's admin API and follows the job until it ends. Reported: the wall time of the
command, the job's own figures (``GET /admin/rebalance/{id}``: studies, instances and
bytes moved, time since copying began) and a split of the time between copying and the
fixed waits (:func:`time_split`: studies are locked and released in batches of
``rebalance_switch_studies``, so only the last batch's waits do not overlap copying).
Afterwards each study must be on exactly one shard, the one ``place`` gives with the
new shard, with all its instances.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench import workloads
from bench.dataset import GeneratedSet
from bench.federation_stack import MOVE_SERVICES, start_group
from tessera.router.placement import place


def time_split(
    moving_seconds: float,
    studies: int,
    registry_poll: float,
    concurrency: int,
    batch_studies: int = 1,
) -> dict[str, float]:
    """The moving phase split into the fixed waits and the rest (copy, verify, delete).

    Each study waits ``lock_wait = 2 x registry_poll`` after it is locked (so every
    router sees the lock) and again after it is released (so every router sees the
    release): ``2 x lock_wait`` from its lock to its delete, whatever its size.

    ``batch_studies = 1`` is the per-study protocol: ``concurrency`` studies move at
    once, each paying its own waits, so the waits take at least
    ``ceil(studies / concurrency) x 2 x lock_wait`` of wall time.
    ``batch_studies > 1`` is :mod:`tessera.router.rebalance.batch`: studies are locked
    and released in batches of up to ``batch_studies`` while the next ones are copied,
    so the waits overlap the copying except those of the last batch: ``2 x lock_wait``
    in all (``per_study_waits_s`` keeps the per-study figure, for comparison).
    The job also waits ``lock_wait`` twice before copying begins (the transition, then
    its commit): not in this phase.
    """
    lock_wait = 2 * registry_poll
    waves = math.ceil(studies / concurrency) if studies and concurrency > 0 else 0
    per_study = waves * 2 * lock_wait
    waits = per_study if batch_studies <= 1 else (2 * lock_wait if studies else 0.0)
    waits = min(waits, moving_seconds)
    return {
        "lock_wait_s": lock_wait,
        "waits_per_study_s": 2 * lock_wait,
        "waits_wall_s": round(waits, 2),
        "per_study_waits_s": round(per_study, 2),
        "copy_wall_s": round(moving_seconds - waits, 2),
        "before_copy_waits_s": 2 * lock_wait,
    }


async def study_homes(index_urls: dict[str, str]) -> dict[str, dict[str, int]]:
    """Shard -> StudyInstanceUID -> instances, from each shard's index service."""
    out: dict[str, dict[str, int]] = {}
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        for name, url in index_urls.items():
            r = await http.get(
                url + "/studies?includefield=00201208",
                headers={"Accept": "application/dicom+json"},
            )
            r.raise_for_status()
            out[name] = {
                s["0020000D"]["Value"][0]: int(s.get("00201208", {}).get("Value", [0])[0])
                for s in (r.json() if r.content else [])
            }
    return out


def misplaced(homes: dict[str, dict[str, int]], names: list[str], data: GeneratedSet) -> list[str]:
    """Studies not exactly once, whole, on the shard ``place`` gives them among ``names``."""
    problems = []
    for study in data.studies:
        held = {s: n[study.uid] for s, n in homes.items() if study.uid in n}
        want = place(study.uid, names)
        expected = {want: data.study_instances(study.uid)}
        if held != expected:
            problems.append(f"study {study.uid}: on {held}, expected {expected}")
    return problems


async def run(
    scratch: Path, data: GeneratedSet, shards: int, registry_poll: float,
    log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    folder = scratch / "rebalance"
    group = await asyncio.to_thread(
        start_group, folder, shards, MOVE_SERVICES, spare=1, rebalance_worker=True,
        registry_poll=registry_poll,
    )  # fmt: skip
    out: dict[str, Any] = {"shards_before": shards, "registry_poll": registry_poll,
                           "concurrency": group.router.rebalance_concurrency,
                           "switch_studies": group.router.rebalance_switch_studies}  # fmt: skip
    try:
        log(f"rebalance: storing {len(data.instances)} instances into {shards} shards")
        stored = await workloads.store(
            group.dicomweb_url, workloads.stow_bodies(data.instances, 25), 4
        )
        out["load"] = stored.summary()
        new = group.spares[0]
        index_urls = {s.shard: s.index_url for s in [*group.shards, new]}
        before = await study_homes(index_urls)
        out["studies_before"] = {s: len(u) for s, u in before.items()}
        admin, out["admin_api"] = await asyncio.to_thread(group.admin_api)
        argv = [sys.executable, "-m", "tessera.router.rebalance.shardctl", "--router", admin,
                "add", new.shard, "--ingest", new.ingest_url, "--index", new.index_url,
                "--retrieve", new.retrieve_url, "--follow"]  # fmt: skip
        log(f"rebalance: {' '.join(argv[1:])}")
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=900, check=False
        )
        out["command_seconds"] = round(time.perf_counter() - started, 2)
        out["command_exit"] = done.returncode
        out["command_output"] = (done.stdout + done.stderr).strip().splitlines()[-3:]
        async with httpx.AsyncClient(base_url=admin, trust_env=False) as http:
            jobs = (await http.get("/admin/rebalance")).json()
        job = jobs[0] if jobs else {}
        out["job"] = job
        if job:
            out["split"] = time_split(
                job["elapsed"], job["studies"]["done"], registry_poll, out["concurrency"],
                out["switch_studies"],
            )  # fmt: skip
            mb = job["bytes"] / workloads.MB
            out["instances_per_s_moving"] = round(job["moved"] / job["elapsed"], 2)
            out["mb_per_s_moving"] = round(mb / job["elapsed"], 2)
            out["instances_per_s_command"] = round(job["moved"] / out["command_seconds"], 2)
            out["mb_per_s_command"] = round(mb / out["command_seconds"], 2)
        after = await study_homes(index_urls)
        out["studies_after"] = {s: len(u) for s, u in after.items()}
        out["problems"] = misplaced(after, list(index_urls), data)
        if done.returncode != 0:
            out["problems"].append(f"shardctl exited {done.returncode}: {out['command_output']}")
        log(f"rebalance: {out.get('job', {}).get('moved')} instances in "
            f"{out['command_seconds']} s; split {out.get('split')}")  # fmt: skip
    finally:
        group.close()
        shutil.rmtree(folder, ignore_errors=True)
    return out
