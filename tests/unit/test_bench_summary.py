"""Issue 12's side-by-side table (bench/summary.py) from a core and a WADO result."""

from __future__ import annotations

from bench import summary


def _stow(inst_per_s: float, cpu: float, by: dict[str, float]) -> dict[str, object]:
    return {
        "instances_per_s": inst_per_s,
        "server_cpu_ms_per_instance": cpu,
        "server_cpu_ms_per_instance_by_service": by,
    }


MAIN = {
    "targets": {
        "tessera": {"stow": {"1x4": _stow(150, 8.0, {"ingest": 5.0, "router": 3.0}),
                             "10x4": _stow(200, 6.0, {"ingest": 6.0})}},
        "orthanc": {"stow": {"1x4": _stow(300, 4.0, {"Orthanc": 4.0}),
                             "10x4": _stow(400, 3.0, {"Orthanc": 3.0})}},
    }
}  # fmt: skip
WADO = {
    "retrieve": {"warm": {"tessera": [{"mb_per_s": 400.0}], "orthanc": [{"mb_per_s": 200.0}]}},
    "frames": {
        "native_1": {"tessera": {"p50_ms": 2.0}, "orthanc": {"p50_ms": 3.0}},
        "native_6": {"tessera": {"frames_per_s": 600.0}, "orthanc": {"frames_per_s": 300.0}},
    },
    "rendered": {"tessera": {"cold": {"p50_ms": 10.0}}, "orthanc": {"cold": {"p50_ms": 5.0}}},
}


def test_every_row_with_its_ratio_oriented_tessera_better_above_one():
    rows = {r[0]: r[1:] for r in summary.rows(MAIN, WADO)}
    assert rows["STOW 1 instance/request, 4 clients"] == ["300.0 inst/s", "150.0 inst/s", "0.50"]
    assert rows["STOW 10 instances/request, 4 clients"][2] == "0.50"
    assert rows["server CPU per stored instance, all processes (1x4)"][2] == "0.50"
    assert rows["whole study retrieve (one request, identity)"][2] == "2.00"
    assert rows["one native CT frame, sequential p50"][2] == "1.50"
    assert rows["viewer opening a series, 6 in flight, identity"][2] == "2.00"
    assert rows["first `/rendered` JPEG of a CT instance, p50"][2] == "0.50"


def test_cpu_by_service_and_missing_parts():
    text = summary.markdown(MAIN, {})
    assert "- STOW 1x4, tessera: ingest 5.00, router 3.00" in text
    assert "viewer" not in text  # no WADO part: no row made up for it
