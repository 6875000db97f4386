"""C-ECHO SCP (PS3.4 Annex A, PS3.7 9.1.5): any registered node with ``echo``."""

from __future__ import annotations

from pynetdicom.events import Event

from tessera.dimse import metrics
from tessera.dimse.context import NOT_AUTHORIZED, Gateway


def handle_echo(gateway: Gateway, event: Event) -> int:
    node = gateway.node_of(event)
    status = 0x0000 if node is not None and node.may("echo") else NOT_AUTHORIZED
    metrics.OPERATIONS.labels("C-ECHO", metrics.status_class(status)).inc()
    return status
