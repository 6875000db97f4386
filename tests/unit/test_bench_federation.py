"""The pure parts of the federation benchmark (bench/federation*.py): how the archive is
split across shards, how multi-study STOW bodies are made, the ratios and the
rebalance time split. No timing is asserted."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.dataset import Instance
from bench.federation import markdown, parse_args, rebalance_lines, wait_cost
from bench.federation_qido import (
    BASELINE,
    ShardSlice,
    answer_mismatches,
    fanout_ratios,
    shard_names,
    slice_rows,
)
from bench.federation_rebalance import time_split
from bench.federation_stow import mixed_groups, stow_ratios, target_order
from bench.scale_data import ScaleSet
from tessera.router.placement import place
from tessera.shared.levels import Layout


def test_slices_partition_the_archive_by_placement() -> None:
    data = ScaleSet(studies=60, instances=600, seed=3)
    names = shard_names(4)
    parts = [ShardSlice.of(data, names, n) for n in names]
    seen = Counter(i for p in parts for i in p.indexes)
    assert sorted(seen) == list(range(60)) and set(seen.values()) == {1}
    for part in parts:
        assert all(place(s.uid, names) == part.shard for s in part.all_studies())


def test_slice_rows_hold_only_the_shards_studies_and_their_patients() -> None:
    data = ScaleSet(studies=40, instances=400, seed=2)
    part = ShardSlice.of(data, shard_names(2), "shard-1")
    rows = {table: list(r) for table, r in slice_rows(part, Layout()).items()}
    studies = list(part.all_studies())
    assert [r[0] for r in rows["study"]] == [s.index + 1 for s in studies]
    assert {r[0] for r in rows["patient"]} == {s.patient + 1 for s in studies}
    assert len(rows["series"]) == sum(len(s.series) for s in studies)
    assert len(rows["instance"]) == sum(n for s in studies for _, _, n in s.series)
    # every series row points at a study of this shard; every instance at a series row
    assert {r[2] for r in rows["series"]} <= {s.index + 1 for s in studies}
    assert {r[2] for r in rows["instance"]} == {r[0] for r in rows["series"]}


def _inst(study: str, n: int) -> Instance:
    return Instance(Path(f"/x/{study}/{n}.dcm"), study, f"{study}.1", f"{study}.1.{n}", 10)


def test_mixed_groups_take_every_study_in_turn() -> None:
    instances = [_inst(s, n) for s in ("a", "b", "c") for n in range(5)]
    groups = mixed_groups(instances, 4)
    assert [len(g) for g in groups] == [4, 4, 4, 3]
    assert [i.study for i in groups[0]] == ["a", "b", "c", "a"]
    assert sorted(i.sop for g in groups for i in g) == sorted(i.sop for i in instances)


def test_target_order_alternates() -> None:
    assert target_order(1) == list(reversed(target_order(0)))


def _m(p50: float, p95: float, answers: int = 3, failures: int = 0) -> dict[str, object]:
    return {"p50_ms": p50, "p95_ms": p95, "answers": answers, "failures": failures,
            "errors": ["boom"] if failures else []}  # fmt: skip


def test_fanout_ratios_are_against_the_one_shard_router() -> None:
    latency = {"list": {BASELINE: _m(10, 20), "2 shards": _m(15, 30), "4 shards": _m(20, 50)}}
    assert fanout_ratios(latency) == {
        "list": {"2 shards": {"p50": 1.5, "p95": 1.5}, "4 shards": {"p50": 2.0, "p95": 2.5}}
    }


def test_answer_mismatches_and_failures_are_reported() -> None:
    latency = {
        "same": {BASELINE: _m(1, 1), "2 shards": _m(1, 1)},
        "differ": {BASELINE: _m(1, 1, answers=3), "2 shards": _m(1, 1, answers=2)},
        "failed": {BASELINE: _m(1, 1), "2 shards": _m(1, 1, failures=2)},
    }
    problems = answer_mismatches(latency)
    assert len(problems) == 2
    assert "differ" in problems[0] and "failed" in problems[1]


def test_stow_ratios_are_against_ingest_direct() -> None:
    modes = {"1x4": {"ingest direct": {"instances_per_s": 40.0},
                     "router, 3 shards": {"instances_per_s": 30.0}}}  # fmt: skip
    assert stow_ratios(modes) == {"1x4": {"router, 3 shards": 0.75}}


def test_time_split_counts_overlapping_waits_per_wave() -> None:
    # 10 studies, 8 at once: two waves, each waiting 2 x lock_wait = 2 x 2 x 0.5 s
    split = time_split(10.0, studies=10, registry_poll=0.5, concurrency=8)
    assert split["lock_wait_s"] == 1.0
    assert split["waits_per_study_s"] == 2.0
    assert split["waits_wall_s"] == 4.0
    assert split["copy_wall_s"] == 6.0
    # the waits never exceed the phase they are part of
    assert time_split(1.0, studies=40, registry_poll=1.0, concurrency=1)["copy_wall_s"] == 0.0


def test_parse_args_quick_defaults_and_bad_parts() -> None:
    args = parse_args(["--quick", "--parts", "qido,stow"])
    assert args.parts == ["qido", "stow"] and args.qido_instances == 10_000
    assert args.registry_polls == [1.0, 0.25]
    assert parse_args(["--registry-poll", "0.5"]).registry_polls == [0.5]
    with pytest.raises(SystemExit) as refused:
        parse_args(["--parts", "nope"])
    assert refused.value.code == 2


def test_markdown_lists_problems() -> None:
    results = {
        "started": "now",
        "machine": {
            "cpus_usable": 2,
            "cpu_model": "x",
            "memory_gib": 1,
            "load_average_at_start": [1, 1, 1],
        },
        "problems": ["STOW 1x4 ingest direct: 1 failed"],
    }
    assert "✗ STOW 1x4 ingest direct: 1 failed" in markdown(results)


def test_rebalance_lines_put_each_poll_in_a_column() -> None:
    run = {
        "registry_poll": 1.0, "shards_before": 2, "concurrency": 8, "admin_api": "router",
        "studies_before": {"shard-0": 2}, "studies_after": {"shard-0": 1, "shard-2": 1},
        "command_seconds": 9.0, "instances_per_s_moving": 5.0, "mb_per_s_moving": 2.5,
        "instances_per_s_command": 2.8, "mb_per_s_command": 1.4,
        "job": {"studies": {"done": 1}, "moved": 25, "bytes": 13_000_000, "elapsed": 5.0},
        "split": time_split(5.0, studies=1, registry_poll=1.0, concurrency=8),
    }  # fmt: skip
    lines = rebalance_lines([run, {**run, "registry_poll": 0.25}])
    assert "| figure | registry_poll 1.0 s | registry_poll 0.25 s |" in lines
    assert any(line.startswith("| copy + verify + delete (the rest) | 1.0 s |") for line in lines)
    assert rebalance_lines([{"problems": ["x"]}])[-1] == "no job ran: see the checks"


def test_wait_cost_compares_the_first_and_last_runs() -> None:
    def run(poll: float, elapsed: float, command: float) -> dict[str, object]:
        return {
            "registry_poll": poll,
            "command_seconds": command,
            "job": {"elapsed": elapsed},
            "split": time_split(elapsed, studies=13, registry_poll=poll, concurrency=8),
        }

    cost = wait_cost([run(1.0, 11.0, 16.0), run(0.25, 7.0, 9.0)])
    assert cost == {
        "from_poll": 1.0,
        "to_poll": 0.25,
        "copying_phase_s": 4.0,
        "model_waits_s": 6.0,  # two waves of 4 s, then of 1 s
        "command_s": 7.0,
        "model_before_copy_s": 3.0,
    }
    assert wait_cost([run(1.0, 11.0, 16.0)]) is None
