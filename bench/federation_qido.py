"""QIDO-RS through the router with 1, 2 and 4 shards holding the same archive.

One :class:`~bench.scale_data.ScaleSet` (``--fed-qido-instances``, default 100,000
instances) is split across the shards of each federation by the router's own placement
function (:func:`tessera.router.placement.place` over the shard names), and each shard's
part is bulk loaded with COPY into that shard's database (:func:`load_slice`: the rows
:mod:`bench.scale_load` writes, for the studies placed there only). Each federation runs
the index service of each shard and one router reading its registry. All three (and
the 1-shard federation's index service on its own, to show the router's own cost) are
up together and :func:`bench.workloads.latency` alternates the requests between them,
so a busy moment of the shared machine falls on every target alike. The searches are
:func:`bench.qido_scale.queries`; every target must return the same number of results.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench import workloads
from bench.federation_stack import QIDO_SERVICES, start_group
from bench.qido_scale import queries
from bench.scale_data import ScaleSet, Study
from bench.scale_load import COLUMNS, _chunks, instance_rows, patient_rows, series_rows, study_rows
from tessera.router.placement import place
from tessera.shared.levels import Layout

SHARD_COUNTS = (1, 2, 4)
BASELINE = "1 shard"
DIRECT = "1 shard, index direct"
SEARCHES = (
    "studies (OHIF list)",
    "PatientName=*smi*",
    "StudyDate=2019",
    "ModalitiesInStudy=MR",
    "20 StudyInstanceUIDs",
    "series of a study",
    "instances of a series",
)


def shard_names(count: int) -> list[str]:
    """The names ``tessera.local.federation.plan`` gives ``count`` shards."""
    return [f"shard-{i}" for i in range(count)]


@dataclass(frozen=True)
class ShardSlice(ScaleSet):
    """The studies of a :class:`ScaleSet` that ``place`` gives to ``shard`` among
    ``shards``; the bulk loader's row functions read it like the whole set."""

    shards: tuple[str, ...] = ()
    shard: str = ""
    indexes: tuple[int, ...] = field(default=(), compare=False)

    @classmethod
    def of(cls, data: ScaleSet, shards: list[str], shard: str) -> ShardSlice:
        chosen = tuple(i for i in range(data.studies) if place(data.study(i).uid, shards) == shard)
        return cls(data.studies, data.instances, data.seed, tuple(shards), shard, chosen)

    def all_studies(self) -> Iterator[Study]:
        return (self.study(i) for i in self.indexes)

    def patient_indexes(self) -> set[int]:
        return {s.patient for s in self.all_studies()}


def slice_rows(part: ShardSlice, layout: Layout) -> dict[str, Iterator[list[object]]]:
    """The rows of each table for one shard: only its studies and their patients
    (primary keys stay those of the whole set)."""
    patients = {p + 1 for p in part.patient_indexes()}  # patient pk = index + 1
    return {
        "patient": (row for row in patient_rows(part) if row[0] in patients),
        "study": study_rows(part, layout),
        "series": series_rows(part, layout),
        "instance": instance_rows(part),
    }


async def load_slice(dsn: str, part: ShardSlice) -> dict[str, int]:
    """COPY one shard's part into its (empty, migrated) database; rows per table."""
    conn = await asyncpg.connect(dsn)
    counts: dict[str, int] = {}
    try:
        for table, rows in slice_rows(part, Layout()).items():
            counter = [0]
            await conn.copy_to_table(
                table, source=_chunks(rows, counter), columns=COLUMNS[table], format="text"
            )
            counts[table] = counter[0]
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'),"
                f" (SELECT coalesce(max(pk), 1) FROM {table}))"
            )
        await conn.execute("VACUUM (ANALYZE) patient, study, series, instance")
    finally:
        await conn.close()
    return counts


def fanout_ratios(latency: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Search -> target -> p50 and p95 ratio to the 1-shard router (> 1: slower)."""
    out: dict[str, dict[str, Any]] = {}
    for search, targets in latency.items():
        base = targets.get(BASELINE)
        out[search] = {}
        for target, m in targets.items():
            if target == BASELINE or not base or not base["p50_ms"] or not base["p95_ms"]:
                continue
            out[search][target] = {
                "p50": round(m["p50_ms"] / base["p50_ms"], 2),
                "p95": round(m["p95_ms"] / base["p95_ms"], 2),
            }
    return out


def answer_mismatches(latency: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Searches where the targets did not all return the same number of results, or failed."""
    problems = []
    for search, targets in latency.items():
        answers = {t: m["answers"] for t, m in targets.items()}
        if len(set(answers.values())) > 1:
            problems.append(f"QIDO {search}: different result counts {answers}")
        for t, m in targets.items():
            if m["failures"]:
                problems.append(f"QIDO {search} on {t}: {m['failures']} failed: {m['errors'][:1]}")
    return problems


async def run(
    scratch: Path, instances: int, repetitions: int, warmup: int, seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:  # fmt: skip
    data = ScaleSet(studies=max(1, instances // 10), instances=instances, seed=seed)
    node: dict[str, Any] = {"instances_requested": instances, "studies": data.studies,
                            "shards": {}, "latency": {}}  # fmt: skip
    targets: dict[str, str] = {}
    with ExitStack() as stack:
        for count in SHARD_COUNTS:
            log(f"QIDO: starting {count} shard(s) and loading {instances} instances")
            group = await asyncio.to_thread(
                start_group, scratch / f"qido-{count}", count, QIDO_SERVICES
            )
            stack.callback(group.close)
            names = shard_names(count)
            loaded: dict[str, Any] = {}
            started = time.perf_counter()
            for shard in group.shards:
                part = ShardSlice.of(data, names, shard.shard)
                loaded[shard.shard] = await load_slice(shard.database_url, part)
            node["shards"][str(count)] = {
                "rows": loaded,
                "load_seconds": round(time.perf_counter() - started, 1),
                "study_split": dict(Counter(place(s.uid, names) for s in data.all_studies())),
            }
            log(f"  loaded {loaded} in {node['shards'][str(count)]['load_seconds']} s")
            label = BASELINE if count == 1 else f"{count} shards"
            targets[label] = group.dicomweb_url
            if count == 1:
                targets[DIRECT] = group.shards[0].index_url
        all_queries = queries(data)
        for name in SEARCHES:
            measured = await workloads.latency(targets, name, all_queries[name], repetitions,
                                               warmup)  # fmt: skip
            node["latency"][name] = {t: m.summary() for t, m in measured.items()}
            log("  " + name + ": " + ", ".join(
                f"{t} p50 {m.p50:.1f} p95 {m.p95:.1f} ms ({m.answers})" for t, m in measured.items()
            ))  # fmt: skip
    node["ratios"] = fanout_ratios(node["latency"])
    node["problems"] = answer_mismatches(node["latency"])
    return node
