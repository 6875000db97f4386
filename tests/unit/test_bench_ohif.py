"""The pure parts of bench/ohif.py: request kinds, statistics, ratios, the table."""

from __future__ import annotations

from typing import Any

from bench.ohif import Side, markdown, ratios, request_kind, viewer_url

BASE = "http://127.0.0.1:8042/dicom-web/studies/1.2"


def test_request_kinds() -> None:
    assert request_kind(f"{BASE}/series/3/instances/4/frames/1") == "frames"
    assert request_kind(f"{BASE}/series/3/metadata") == "metadata"
    assert request_kind(f"{BASE}/series?includefield=0008103E") == "search series"
    assert request_kind(f"{BASE}/series/3/instances?limit=1") == "search instances"
    assert request_kind("http://h/dicom-web/studies?limit=101") == "search studies"
    assert request_kind(f"{BASE}/series/3/instances/4/thumbnail?accept=image/jpeg") == "thumbnail"
    assert request_kind(f"{BASE}/series/3/instances/4/bulk/7FE00010") == "other"


def test_viewer_url_of_a_dicomweb_root() -> None:
    assert viewer_url("http://127.0.0.1:8042/dicom-web") == "http://127.0.0.1:8042/viewer/"
    assert viewer_url("http://127.0.0.1:8042/dicom-web/") == "http://127.0.0.1:8042/viewer/"


def _side(first: list[float], whole: list[float], errors: int = 0) -> Side:
    side = Side()
    for f, w in zip(first, whole, strict=True):
        run = {
            "first_image_ms": f,
            "series_loaded_ms": w,
            "errors": [],
            "requests": [[f"{BASE}/series/3/instances/4/frames/1", 100.0, 50.0]],
        }
        side.add(run, start=0.0)
    side.errors += ["HTTP 500"] * errors
    return side


def test_summaries_ratios_and_the_table() -> None:
    tessera = _side([100, 200, 300], [1000, 1100, 1200]).summary()
    orthanc = _side([200, 400, 600], [1000, 1100, 1200]).summary()
    assert tessera["first_image_ms"] == {"median": 200, "p95": 300, "min": 100}
    assert tessera["first_frame_received_ms"]["median"] == 150
    assert tessera["request_ms"]["frames"] == {"count": 3, "median": 50.0, "max": 50.0}
    section: dict[str, Any] = {
        "plan": {"rounds": 3, "studies": 1, "viewers": {}},
        "targets": {"tessera": tessera, "orthanc": orthanc},
    }
    section["ratios"] = ratios(section)
    assert section["ratios"]["first_image_ms_median"] == 2.0  # > 1: Tessera faster
    assert section["ratios"]["series_loaded_ms_median"] == 1.0
    table = "\n".join(markdown(section))
    assert "| first image | 200 | 400 | 2.00× |" in table
    assert "| frames | 3 | 50 | 50 | 3 | 50 | 50 |" in table


def test_failures_make_ratios_not_comparable() -> None:
    section = {
        "targets": {
            "tessera": _side([100], [1000], errors=1).summary(),
            "orthanc": _side([100], [1000]).summary(),
        }
    }
    assert set(ratios(section).values()) == {None}
