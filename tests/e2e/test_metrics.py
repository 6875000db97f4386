"""Every service of a running cluster serves ``/metrics``, and the counters follow a real
STOW-RS and WADO-RS through the router (differences: the cluster is shared by the session).
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from tests.support.cluster import PORTS, Cluster
from tests.support.dicomgen import make_instance, multipart

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(http: httpx.AsyncClient, cluster: Cluster) -> dict[str, Samples]:
    out = {}
    for name in (n for n in PORTS if n in cluster.procs):  # the services this cluster runs
        answer = await http.get(cluster.service_url(name) + "/metrics")
        assert answer.status_code == 200, name
        out[name] = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples
        }
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


async def test_metrics_follow_a_stow_and_a_retrieve(cluster: Cluster, client) -> None:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    instances = [
        make_instance(study=study, series=series, sop=sop),
        make_instance(study=study, series=series, instance_number=2),
    ]
    # the same SOPInstanceUID with other content: refused, 0x0111 (duplicate_policy=reject)
    clash = make_instance(study=study, series=series, sop=sop, patient_name="Other^Name")
    async with httpx.AsyncClient(timeout=30) as http:
        before = await _scrape(http, cluster)
        body, ctype = multipart(instances)
        stow = await client.post("/studies", content=body, headers={"Content-Type": ctype})
        assert stow.status_code == 200
        body, ctype = multipart([clash])
        stow = await client.post("/studies", content=body, headers={"Content-Type": ctype})
        assert stow.status_code == 409
        study_answer = await client.get(
            f"/studies/{study}", headers={"Accept": 'multipart/related; type="application/dicom"'}
        )
        assert study_answer.status_code == 200
        after = await _scrape(http, cluster)

    def delta(service: str, name: str, **labels: str) -> float:
        return _get(after[service], name, **labels) - _get(before[service], name, **labels)

    stored = "tessera_ingest_instances_total"
    assert delta("ingest", stored, outcome="stored", reason="") == 2
    assert delta("ingest", stored, outcome="failed", reason="duplicate_sop_instance") == 1
    # new objects written: the two instances and the clashing one (deleted afterwards)
    new_bytes = sum(len(i) for i in instances) + len(clash)
    assert delta("ingest", "tessera_ingest_stored_bytes_total") == new_bytes
    # one job per STOW here: its instances go to the index together (tessera.ingest.to_index)
    assert delta("index-worker", "tessera_index_jobs_total", result="processed") == 2

    sent = delta(
        "retrieve", "tessera_http_response_bytes_total", method="GET", route="/studies/{study}"
    )
    assert sent == len(study_answer.content) >= sum(len(i) for i in instances)
    assert (
        delta(
            "retrieve",
            "tessera_http_requests_total",
            method="GET",
            route="/studies/{study}",
            status="200",
        )
        == 1
    )

    upstream = "tessera_router_upstream_duration_seconds_count"
    ingest_origin = cluster.service_url("ingest")
    assert (
        _sum(after["router"], upstream, upstream=ingest_origin)
        - _sum(before["router"], upstream, upstream=ingest_origin)
        == 2
    )
    for name in ("ingest", "index", "retrieve", "router"):  # the first scrape was counted
        assert (
            _get(
                after[name],
                "tessera_http_requests_total",
                method="GET",
                route="/metrics",
                status="200",
            )
            >= 1
        )
    assert (
        "tessera_transcode_queue_depth",
        frozenset({("shard", cluster.settings.shard)}),
    ) in after["transcode"]
    assert ("tessera_index_queue_depth", frozenset({("shard", cluster.settings.shard)})) in after[
        "index-worker"
    ]
