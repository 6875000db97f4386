"""Who may associate (PS3.8 7.1, 9.3.4): the AE title rules.

An A-ASSOCIATE-RQ is accepted only when

* its Called AE Title is Tessera's (``dimse_ae_title``), else it is rejected
  permanently by the service user with reason 7, "called-AE-title-not-recognized";
* its Calling AE Title is a registered node, and the connection comes from that node's
  address when the node names one; else reason 3, "calling-AE-title-not-recognized".

pynetdicom checks AE titles only against fixed lists, so the gateway puts this check in
front of pynetdicom's own acceptor negotiation (:func:`install`); the rest of the
negotiation (presentation contexts, roles, the association limit) is pynetdicom's.
What a node may do once associated is checked per request by the service handlers.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.acse import ACSE

from tessera.dimse import metrics
from tessera.dimse.nodes import DicomNode

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (PS3.8 Table 9-21): result 1 rejected-permanent, source 1 service-user
REJECTED_PERMANENT = 0x01
SERVICE_USER = 0x01
CALLING_AE_NOT_RECOGNIZED = 0x03
CALLED_AE_NOT_RECOGNIZED = 0x07
_RESOLVE_TTL = 60.0


@dataclass(frozen=True)
class Refusal:
    diagnostic: int
    why: str  # for the log and the metrics: never sent (the RJ PDU has no text)


class Policy:
    def __init__(self, ae_title: str, nodes: Callable[[str], DicomNode | None]) -> None:
        self.ae_title = ae_title.strip()
        self.nodes = nodes
        self._resolved: dict[str, tuple[frozenset[str], float]] = {}

    def refuse(self, calling: str, called: str, address: str) -> Refusal | None:
        if called.strip() != self.ae_title:
            return Refusal(CALLED_AE_NOT_RECOGNIZED, "called AE title is not ours")
        node = self.nodes(calling)
        if node is None:
            return Refusal(CALLING_AE_NOT_RECOGNIZED, "unknown calling AE title")
        if node.host and _ip(address) not in self._addresses(node.host):
            return Refusal(CALLING_AE_NOT_RECOGNIZED, "calling AE from another address")
        return None

    def _addresses(self, host: str) -> frozenset[str]:
        """The IP addresses of ``host`` (an address, or a DNS name resolved and kept for
        a minute)."""
        try:
            return frozenset({str(ipaddress.ip_address(host))})
        except ValueError:
            pass
        cached = self._resolved.get(host)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            found = frozenset(_ip(str(info[4][0])) for info in infos)
        except OSError:
            found = frozenset()
        self._resolved[host] = (found, time.monotonic() + _RESOLVE_TTL)
        return found


def _ip(address: str) -> str:
    """The canonical text of an IP address; an IPv4-mapped IPv6 one as IPv4."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


_original = ACSE._negotiate_as_acceptor


def _negotiate_as_acceptor(self: ACSE) -> None:
    policy: Policy | None = getattr(self.assoc.ae, "tessera_policy", None)
    if policy is not None:
        request: Any = self.requestor.primitive
        address = self.assoc.requestor.address
        refusal = policy.refuse(
            str(request.calling_ae_title), str(request.called_ae_title), address
        )
        if refusal is not None:
            log.warning(
                "association from %s (calling %r, called %r) rejected: %s",
                address,
                str(request.calling_ae_title).strip(),
                str(request.called_ae_title).strip(),
                refusal.why,
            )
            metrics.ASSOCIATIONS.labels("rejected").inc()
            self.send_reject(REJECTED_PERMANENT, SERVICE_USER, refusal.diagnostic)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
    _original(self)


def install() -> None:
    """Put the AE title rules in front of pynetdicom's acceptor negotiation (for an AE
    with a ``tessera_policy`` attribute; any other AE of the process is unaffected)."""
    ACSE._negotiate_as_acceptor = _negotiate_as_acceptor  # type: ignore[method-assign]
