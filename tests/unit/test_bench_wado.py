"""The pure parts of the WADO benchmark (bench/wado.py, bench/wado_report.py): statistics,
multipart parsing and frame checks, /proc parsing, profile summaries, ratios, the table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.wado import (
    FrameRun,
    Timed,
    boundary_of,
    cpu_seconds_of_stat,
    frame_problem,
    hot_functions,
    multipart_parts,
    summarize,
)
from bench.wado_report import markdown, median_mb_per_s, problems, ratio, ratios

TYPE = 'multipart/related; type="application/octet-stream"; boundary="b0und"'


def _body(*payloads: bytes, boundary: str = "b0und") -> bytes:
    parts = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/octet-stream\r\n\r\n"
        + p + b"\r\n"
        for p in payloads
    )  # fmt: skip
    return parts + b"--" + boundary.encode() + b"--\r\n"


def test_summarize_percentiles_interpolate_linearly() -> None:
    summary = summarize([float(x) for x in range(1, 101)])
    assert summary["n"] == 100
    assert summary["p50_ms"] == 50.5
    assert summary["p95_ms"] == pytest.approx(95.05)
    assert (summary["min_ms"], summary["max_ms"], summary["mean_ms"]) == (1, 100, 50.5)
    assert summarize([])["p50_ms"] is None


def test_boundary_of_quoted_and_bare() -> None:
    assert boundary_of(TYPE) == "b0und"
    assert boundary_of("multipart/related; boundary=abc; type=x") == "abc"
    with pytest.raises(ValueError):
        boundary_of("application/octet-stream")


def test_multipart_parts_keeps_payload_bytes_exactly() -> None:
    # a payload may hold CRLF and dashes: only CRLF + delimiter ends it (RFC 2046 5.1.1)
    tricky = b"\r\n--b0un\r\n--\x00\xff"
    parts = multipart_parts(b"preamble\r\n" + _body(tricky, b"second"), TYPE)
    assert [p for _, p in parts] == [tricky, b"second"]
    assert parts[0][0] == {"content-type": "application/octet-stream"}


def test_multipart_parts_rejects_a_truncated_body() -> None:
    with pytest.raises(ValueError):
        multipart_parts(_body(b"abc")[:-12], TYPE)
    with pytest.raises(ValueError):
        multipart_parts(b"no delimiter", TYPE)


def test_frame_problem() -> None:
    native = bytes(8)
    assert frame_problem(_body(native), TYPE, 8) is None
    assert frame_problem(_body(native), TYPE, 10) == "8 bytes, not 10"
    assert frame_problem(_body(native, native), TYPE, 8) == "2 parts, expected 1"
    assert frame_problem(_body(b"\xff\x4f\xff\x51rest"), TYPE, None) is None
    assert "not JPEG 2000" in (frame_problem(_body(b"\xff\xd8\xff"), TYPE, None) or "")
    assert "not multipart" in (frame_problem(b"{}", TYPE, 8) or "")


def test_cpu_seconds_of_stat_with_spaces_in_the_name() -> None:
    stat = "4242 (python -m x) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0"
    assert cpu_seconds_of_stat(stat, 100) == 3.0  # (250 + 50) ticks


def test_hot_functions_counts_self_and_inclusive_once_per_stack() -> None:
    collapsed = "\n".join(
        [
            "main (a.py:1);loop (a.py:2);pool (h.py:9) 60",
            "main (a.py:1);loop (a.py:2);loop (a.py:2);send (s.py:3) 30",
            "main (a.py:1);idle (a.py:5) 10",
            "garbage",
        ]
    )
    hot = {name: (own, incl) for name, own, incl in hot_functions(collapsed)}
    assert hot["main (a.py:1)"] == (0.0, 100.0)
    assert hot["loop (a.py:2)"] == (0.0, 90.0)  # recursion not counted twice
    assert hot["pool (h.py:9)"] == (60.0, 60.0)
    assert hot_functions("") == []


def _frames(fps: float, p95: float, failures: int = 0) -> dict[str, Any]:
    run = FrameRun(100, Timed([p95, p95]), frames=100, bytes=100, seconds=100 / fps)
    run.timed.failures = failures
    return run.summary()


def _results() -> dict[str, Any]:
    latency = {"n": 40, "p50_ms": 20.0, "p95_ms": 25.0, "failures": 0, "errors": []}
    slow = {**latency, "p50_ms": 300.0, "p95_ms": 350.0}
    one = {**latency, "n": 1, "p50_ms": 50.0, "p95_ms": 50.0}
    return {
        "started": "2026-11-26T07:00:00+00:00",
        "plan": {"concurrency": 100, "frame_passes": 2},
        "dataset": {"instances": 500, "encapsulated": 200, "size": 512, "megabytes": 303.3},
        "machine": {
            "nproc": 2,
            "cpu_model": "x",
            "memory_gib": 1,
            "workdir_filesystem": "ext4",
            "load_average_at_start": [1, 1, 1],
            "commit": "abc",
        },
        "metadata": {
            "tessera": {"first": one, "warm": latency},
            "orthanc": {"first": {**one, "p50_ms": 400.0}, "warm": slow},
        },
        "rendered": {
            "tessera": {"cold": latency, "cached": latency},
            "orthanc": {"cold": latency, "cached": {**latency, "failures": 1, "errors": ["x"]}},
        },
        "frames": {"native": {"tessera": _frames(300, 400.0), "orthanc": _frames(100, 800.0)}},
        "retrieve": {
            "warm": {
                "raw": [{"mb_per_s": 1000.0}],
                "tessera": [{"mb_per_s": 400.0}, {"mb_per_s": 500.0}, {"mb_per_s": 900.0}],
                "orthanc": [{"mb_per_s": 250.0}],
            },
        },
    }


def test_ratios_are_oriented_so_that_above_one_is_tessera_faster() -> None:
    r = ratios(_results())
    assert r["metadata_p50"] == 15.0
    assert r["metadata_first"] == 8.0
    assert r["frames_native_fps"] == 3.0
    assert r["frames_native_p95"] == 2.0
    assert r["retrieve_warm"] == 2.0  # median of the Tessera passes: 500
    assert r["retrieve_warm_of_raw"] == 0.5
    assert r["rendered_cached_p50"] is None  # Orthanc failed a request: not comparable
    assert r["retrieve_cold"] is None


def test_ratio_and_median_edge_cases() -> None:
    assert ratio(None, 3.0, True) is None
    assert ratio(2.0, 0.0, False) is None
    assert median_mb_per_s([{"mb_per_s": 1.0, "failures": 1}]) is None
    assert median_mb_per_s([]) is None


def test_markdown_shows_targets_and_problems() -> None:
    results = _results()
    results["ratios"] = ratios(results)
    results["problems"] = problems(results)
    text = markdown(results)
    assert "| warm p50 | 20.00 | 300.00 | 15.00× | 40 / 40 | ≥ 10×: met |" in text
    assert "| native, 100 in flight | 300.0 | 100.0 | 3.00× |" in text
    assert "≥ 2×: met" in text
    assert "| warm | 1,000.0 | 500.0 | 250.0 | 2.00× | 0.50× | 3 | – / – |" in text
    assert results["problems"] == ["orthanc rendered cached: 1, ['x']"]
    assert "⚠ orthanc rendered cached" in text
