"""Audit events to an audit repository (IHE ATNA): RFC 5424 syslog messages carrying
the DICOM Audit Message (PS3.15 A.5.1, XML).

With ``audit_syslog_url`` (``udp://host:514``, ``tcp://host:601``, ``tls://host:6514``:
RFC 5426 / RFC 6587 octet counting / RFC 5425), each event is sent after it is committed
to the router's trail, which stays the record: the forwarder is best effort, with a
bounded queue (``QUEUE``), reconnecting with backoff when the repository is away; what
overflows is counted and logged, never blocks a request.

Events (PS3.16 CID 400), with the EventActionCode:

=========  ==================================  ==
query      110112 Query                         E
retrieve   110104 DICOM Instances Transferred   R
store      110104 DICOM Instances Transferred   C
delete     110105 DICOM Study Deleted           D
admin      110113 Security Alert                E
=========  ==================================  ==

Active participants: the caller (UserID the subject, AlternativeUserID its client,
NetworkAccessPointID its address; Source Role ID 110153) and Tessera (Destination Role
ID 110152). Participant objects: the study (110180 Study Instance UID), the patient
(RFC 3881 code 2, Patient Number) and for a query the search as ParticipantObjectQuery
(base64). The syslog header: facility authpriv (10), severity notice (5), APP-NAME
``tessera``, MSGID ``IHE+RFC-3881`` (IHE ITI TF-2 3.20.7.1).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import ssl
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

from tessera.router.auth.audit import AuditEvent

log = logging.getLogger(__name__)

QUEUE = 10_000
PRI = 10 * 8 + 5  # authpriv.notice
EVENTS = {
    "query": ("110112", "Query", "E"),
    "retrieve": ("110104", "DICOM Instances Transferred", "R"),
    "store": ("110104", "DICOM Instances Transferred", "C"),
    "delete": ("110105", "DICOM Study Deleted", "D"),
    "admin": ("110113", "Security Alert", "E"),
}


def _participant(object_id: str, type_code: str, role: str, id_type: str) -> list[str]:
    """A ParticipantObjectIdentification (PS3.15 A.5.1) of ``object_id``."""
    return [
        f"<ParticipantObjectIdentification ParticipantObjectID={quoteattr(object_id)}"
        f' ParticipantObjectTypeCode="{type_code}" ParticipantObjectTypeCodeRole="{role}">',
        id_type,
        "</ParticipantObjectIdentification>",
    ]


def _code(tag: str, code: str, system: str, text: str) -> str:
    return (
        f"<{tag} csd-code={quoteattr(code)} codeSystemName={quoteattr(system)}"
        f" originalText={quoteattr(text)}/>"
    )


def audit_message(event: AuditEvent, host: str) -> str:
    """The DICOM Audit Message (PS3.15 A.5.1) of one event, as XML."""
    code, name, action = EVENTS.get(event.action, EVENTS["admin"])
    at = event.at.isoformat()
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?><AuditMessage>',
        f"<EventIdentification EventActionCode={quoteattr(action)} EventDateTime={quoteattr(at)}"
        f" EventOutcomeIndicator={quoteattr(str(event.outcome))}>",
        _code("EventID", code, "DCM", name),
        "</EventIdentification>",
        f"<ActiveParticipant UserID={quoteattr(event.subject)}"
        + (f" AlternativeUserID={quoteattr(event.client_id)}" if event.client_id else "")
        + f' UserIsRequestor="true" NetworkAccessPointID={quoteattr(event.address)}'
        ' NetworkAccessPointTypeCode="2">',
        _code("RoleIDCode", "110153", "DCM", "Source Role ID"),
        "</ActiveParticipant>",
        f'<ActiveParticipant UserID="tessera" UserIsRequestor="false"'
        f' NetworkAccessPointID={quoteattr(host)} NetworkAccessPointTypeCode="1">',
        _code("RoleIDCode", "110152", "DCM", "Destination Role ID"),
        "</ActiveParticipant>",
        f"<AuditSourceIdentification AuditSourceID={quoteattr('tessera@' + host)}/>",
    ]
    if event.study_instance_uid:  # a study: system object (2), report (3)
        id_type = _code("ParticipantObjectIDTypeCode", "110180", "DCM", "Study Instance UID")
        parts += _participant(event.study_instance_uid, "2", "3", id_type)
    if event.patient_id:  # a patient: person (1), patient (1)
        id_type = _code("ParticipantObjectIDTypeCode", "2", "RFC-3881", "Patient Number")
        parts += _participant(event.patient_id, "1", "1", id_type)
    if event.action == "query":
        query = base64.b64encode(event.query.encode()).decode()
        parts += [
            f"<ParticipantObjectIdentification ParticipantObjectID={quoteattr(event.path)}"
            ' ParticipantObjectTypeCode="2" ParticipantObjectTypeCodeRole="24">',
            _code("ParticipantObjectIDTypeCode", "12", "RFC-3881", "URI"),
            f"<ParticipantObjectQuery>{query}</ParticipantObjectQuery>",
            "</ParticipantObjectIdentification>",
        ]
    parts.append("</AuditMessage>")
    return "".join(parts)


def syslog_message(event: AuditEvent, host: str, pid: int) -> bytes:
    """One RFC 5424 message: header, no structured data, the audit message (UTF-8)."""
    stamp = event.at.isoformat(timespec="microseconds").replace("+00:00", "Z")
    header = f"<{PRI}>1 {stamp} {host} tessera {pid} IHE+RFC-3881 - "
    return header.encode() + b"\xef\xbb\xbf" + audit_message(event, host).encode()


class SyslogForwarder:
    """Sends events to ``url`` from a queue, in the background."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname:
            raise ValueError(
                f"audit_syslog_url must be udp://, tcp:// or tls://host:port, not {url!r}"
            )
        self.scheme = parts.scheme
        self.address = (parts.hostname, parts.port or (6514 if parts.scheme == "tls" else 514))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.dropped = 0
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(QUEUE)
        self._pending: AuditEvent | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def send(self, event: AuditEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.error("audit syslog: queue full, %d event(s) not forwarded", self.dropped)

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                if self.scheme == "udp":
                    await self._udp()
                else:
                    await self._stream()
            except (OSError, ssl.SSLError) as e:
                log.warning("audit syslog %s:%s: %s; again in %gs", *self.address, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _udp(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=self.address
        )
        try:
            while True:
                event = await self._queue.get()
                transport.sendto(syslog_message(event, self.host, self.pid))
        finally:
            transport.close()

    async def _stream(self) -> None:
        context = ssl.create_default_context() if self.scheme == "tls" else None
        _, writer = await asyncio.open_connection(*self.address, ssl=context)
        try:
            while True:
                # an event whose send failed is sent first on the next connection
                self._pending = self._pending or await self._queue.get()
                message = syslog_message(self._pending, self.host, self.pid)
                writer.write(f"{len(message)} ".encode() + message)  # RFC 6587 3.4.1
                await writer.drain()
                self._pending = None
        finally:
            writer.close()
