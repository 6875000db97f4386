"""``make run`` picks the processes per HTTP service by the machine's cores (issue 12)
unless TESSERA_*_WORKERS says otherwise."""

from __future__ import annotations

import pytest

from tessera.local.cli import WORKER_SETTINGS, cluster_settings, default_workers


@pytest.mark.parametrize(
    ("cores", "workers"), [(None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (6, 3), (8, 4), (64, 4)]
)
def test_one_process_per_two_cores_at_most_four(cores, workers):
    assert default_workers(cores) == workers


def test_an_explicit_setting_wins(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.setenv("TESSERA_INGEST_WORKERS", "3")
    for name in WORKER_SETTINGS:
        if name != "ingest_workers":
            monkeypatch.delenv(f"TESSERA_{name.upper()}", raising=False)
    settings = cluster_settings(tmp_path, "postgresql://x/y", "redis://x", 0)
    assert settings.ingest_workers == 3
    assert settings.router_workers == settings.retrieve_workers == 4
