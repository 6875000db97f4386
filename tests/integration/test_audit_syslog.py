"""Audit events forwarded as RFC 5424 syslog carrying the DICOM Audit Message (PS3.15
A.5.1), to a UDP and a TCP (RFC 6587 octet counting) listener of the test."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
import socket
import xml.etree.ElementTree as ET

import pytest

from tessera.router.auth.audit import AuditEvent
from tessera.router.auth.syslog import SyslogForwarder, audit_message
from tests.support.audit import audit_event

HEADER = re.compile(rb"<85>1 (\S+) (\S+) tessera (\d+) IHE\+RFC-3881 - \xef\xbb\xbf")


def query_event() -> AuditEvent:
    return audit_event(
        action="query",
        subject="alice",
        client_id="ohif",
        address="10.0.0.7",
        path="/dicom-web/studies",
        query="PatientID=12345&StudyDate=2024*",
        study_instance_uid=None,
        patient_id="12345",
    )


def test_the_audit_message_follows_the_dicom_schema() -> None:
    doc = ET.fromstring(audit_message(query_event(), "pacs1"))
    ident = doc.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == "E"
    assert ident.get("EventOutcomeIndicator") == "0"
    event_id = ident.find("EventID")
    assert event_id is not None and event_id.get("csd-code") == "110112"
    caller, us = doc.findall("ActiveParticipant")
    assert caller.get("UserID") == "alice" and caller.get("AlternativeUserID") == "ohif"
    assert caller.get("NetworkAccessPointID") == "10.0.0.7"
    assert caller.find("RoleIDCode").get("csd-code") == "110153"  # type: ignore[union-attr]
    assert us.find("RoleIDCode").get("csd-code") == "110152"  # type: ignore[union-attr]
    objects = doc.findall("ParticipantObjectIdentification")
    patient = next(o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "1")
    assert patient.get("ParticipantObjectID") == "12345"
    query = next(o for o in objects if o.get("ParticipantObjectTypeCodeRole") == "24")
    text = query.findtext("ParticipantObjectQuery") or ""
    assert base64.b64decode(text).decode() == "PatientID=12345&StudyDate=2024*"
    retrieve = dataclasses.replace(query_event(), action="retrieve", study_instance_uid="1.2.3")
    doc = ET.fromstring(audit_message(retrieve, "pacs1"))
    assert doc.find("EventIdentification").get("EventActionCode") == "R"  # type: ignore[union-attr]
    study = doc.find("ParticipantObjectIdentification")
    assert study is not None and study.get("ParticipantObjectID") == "1.2.3"


async def test_sent_over_udp() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    forwarder = SyslogForwarder(f"udp://127.0.0.1:{listener.getsockname()[1]}")
    forwarder.start()
    try:
        forwarder.send(query_event())
        data = await asyncio.to_thread(listener.recv, 65536)
    finally:
        await forwarder.close()
        listener.close()
    m = HEADER.match(data)
    assert m is not None, data[:120]
    assert m.group(1) == b"2026-12-07T03:00:00.123456Z"
    assert ET.fromstring(data[m.end() :]).tag == "AuditMessage"


async def test_sent_over_tcp_with_octet_counting() -> None:
    received: list[bytes] = []
    got = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            length = await reader.readuntil(b" ")
            received.append(await reader.readexactly(int(length)))
            got.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    forwarder = SyslogForwarder(f"tcp://127.0.0.1:{port}")
    forwarder.start()
    try:
        for n in range(3):
            forwarder.send(dataclasses.replace(query_event(), subject=f"user-{n}"))
        while len(received) < 3:
            got.clear()
            await asyncio.wait_for(got.wait(), 10)
    finally:
        await forwarder.close()
        server.close()
    callers = [ET.fromstring(HEADER.sub(b"", m)).find("ActiveParticipant") for m in received]
    assert [c.get("UserID") for c in callers if c is not None] == ["user-0", "user-1", "user-2"]


def test_a_bad_url_is_refused() -> None:
    with pytest.raises(ValueError, match="udp://"):
        SyslogForwarder("http://audit.example")
