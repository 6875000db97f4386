"""The audit trail (PS3.15 A.5): every query, retrieve and store is recorded with its
subject, client, address, study and outcome; an admin lists them."""

from __future__ import annotations

import httpx
from pydicom.uid import generate_uid

from tests.e2e.security.conftest import Tokens
from tests.support.cluster import Cluster
from tests.support.dicomgen import make_instance, multipart


def test_queries_retrieves_and_stores_are_audited_with_their_subject(
    secure: Cluster, tokens: Tokens
) -> None:
    study, patient = generate_uid(), f"AUDIT-{generate_uid()[-8:]}"
    body, ctype = multipart([make_instance(study=study, patient_id=patient)])
    stored = httpx.post(
        f"{secure.base_url}/studies/{study}",
        content=body,
        headers={"Content-Type": ctype, "Authorization": f"Bearer {tokens['writer']}"},
        timeout=60,
    )
    assert stored.status_code == 200
    reader = {"Authorization": f"Bearer {tokens['reader']}"}
    assert (
        httpx.get(
            f"{secure.base_url}/studies", params={"PatientID": patient}, headers=reader
        ).status_code
        == 200
    )
    assert (
        httpx.get(f"{secure.base_url}/studies/{study}/metadata", headers=reader).status_code == 200
    )
    missing = httpx.get(f"{secure.base_url}/studies/{generate_uid()}/metadata", headers=reader)
    assert missing.status_code == 404

    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    audit = f"http://127.0.0.1:{secure.settings.router_port}/admin/audit"
    by_study = httpx.get(audit, params={"study": study}, headers=admin).json()["events"]
    assert [(e["action"], e["subject"], e["outcome"]) for e in reversed(by_study)] == [
        ("store", "writer", 0),
        ("retrieve", "reader", 0),
    ]
    assert all(e["address"] == "127.0.0.1" and e["auth_method"] == "oidc" for e in by_study)
    by_patient = httpx.get(audit, params={"patient": patient}, headers=admin).json()["events"]
    assert [(e["action"], e["subject"], e["client_id"]) for e in by_patient] == [
        ("query", "reader", "reader")
    ]
    assert f"PatientID={patient}" in by_patient[0]["query"]
    failures = httpx.get(
        audit, params={"subject": "reader", "action": "retrieve"}, headers=admin
    ).json()["events"]
    assert any(e["status"] == 404 and e["outcome"] == 4 for e in failures)
    assert httpx.get(audit, params={"since": "yesterday"}, headers=admin).status_code == 400
    assert httpx.get(audit, headers=reader).status_code == 403
