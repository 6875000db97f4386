"""The file-creation probe beside each STOW of the side-by-side (bench/fsprobe.py)."""

from __future__ import annotations

from pathlib import Path

from bench import fsprobe, report


def test_the_probe_creates_its_files_in_a_subfolder_and_keeps_them(tmp_path: Path) -> None:
    us = fsprobe.file_create_us(tmp_path, files=20)
    assert us > 0
    (probe,) = tmp_path.iterdir()
    assert probe.name.startswith("fsprobe-") and len(list(probe.iterdir())) == 20


def test_the_report_gives_the_probe_of_each_stow_measured() -> None:
    results = {
        "plan": {"stow_modes": [{"label": "1x4"}, {"label": "10x4"}]},
        "targets": {
            "tessera": {"stow": {"1x4": {"file_create_us_before": 31.5}}},
            "orthanc": {"stow": {"1x4": {"file_create_us_before": 640.0}, "10x4": {}}},
        },
    }
    (line, blank) = report._file_create_note(results)
    assert line.endswith("1x4 Tessera 31.5, 1x4 Orthanc 640.")
    assert blank == ""
    assert report._file_create_note({**results, "targets": {}}) == []
