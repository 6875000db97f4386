"""An audit event to test with: a reader's frame retrieve, changed as a test needs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from tessera.router.auth.audit import AuditEvent

BASE = AuditEvent(
    at=datetime(2026, 12, 7, 3, 0, 0, 123456, tzinfo=UTC),
    action="retrieve",
    outcome=0,
    status=200,
    subject="reader",
    client_id="viewer",
    auth_method="oidc",
    address="127.0.0.1",
    http_method="GET",
    path="/dicom-web/studies/1.2.3/series/4/instances/5/frames/1",
    query="",
    study_instance_uid="1.2.3",
    patient_id=None,
)


def audit_event(**changes: object) -> AuditEvent:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
