"""The audit trail (PS3.15 A.5): every query, retrieve and store is recorded with its
subject, client, address, study and outcome; an admin lists them."""

from __future__ import annotations

import itertools
import signal
import threading
import time

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
    # the patient: the search that named them, and every request on their study
    by_patient = httpx.get(audit, params={"patient": patient}, headers=admin).json()["events"]
    assert [(e["action"], e["subject"], e["client_id"]) for e in reversed(by_patient)] == [
        ("store", "writer", "writer"),
        ("query", "reader", "reader"),
        ("retrieve", "reader", "reader"),
    ]
    assert f"PatientID={patient}" in by_patient[1]["query"]
    failures = httpx.get(
        audit, params={"subject": "reader", "action": "retrieve"}, headers=admin
    ).json()["events"]
    assert any(e["status"] == 404 and e["outcome"] == 4 for e in failures)
    assert httpx.get(audit, params={"since": "yesterday"}, headers=admin).status_code == 400
    assert httpx.get(audit, headers=reader).status_code == 403


def test_sigkill_of_the_router_loses_no_event_of_an_answered_request(
    secure: Cluster, tokens: Tokens
) -> None:
    """Four clients search with a PatientID of their own per request while the router is
    SIGKILLed: every search that was answered 200 or 204 has its audit event (the event is
    committed before the answer's first byte)."""
    reader = {"Authorization": f"Bearer {tokens['reader']}"}
    answered: list[str] = []
    stop = threading.Event()

    def search(client_no: int) -> None:
        with httpx.Client(timeout=10) as client:
            for n in itertools.count():
                if stop.is_set():
                    return
                patient = f"KILL-{client_no}-{n}"
                try:
                    r = client.get(
                        f"{secure.base_url}/studies", params={"PatientID": patient}, headers=reader
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code in (200, 204):  # 204: no match (PS3.18 8.3.4.4.1)
                    answered.append(patient)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    secure.kill("router", signal.SIGKILL)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    secure.start("router")
    secure.wait_ready("router")
    assert len(answered) > 10, answered

    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    audit = f"http://127.0.0.1:{secure.settings.router_port}/admin/audit"
    events = httpx.get(
        audit, params={"subject": "reader", "action": "query", "limit": 10000}, headers=admin
    ).json()["events"]
    recorded = {e["patient_id"] for e in events}
    missing = [p for p in answered if p not in recorded]
    assert not missing, f"{len(missing)} answered searches have no audit event: {missing[:5]}"
