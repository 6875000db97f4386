"""TCP_NODELAY on every association's socket (pynetdicom leaves Nagle's algorithm on).

A DIMSE exchange is request, then answer: with Nagle on, the last small segment of a
C-STORE response or of a P-DATA fragment waits for the peer's delayed ACK (40 ms on
Linux), which capped C-MOVE and C-GET at about ten instances a second.
"""

from __future__ import annotations

import socket
from contextlib import suppress

from pynetdicom import evt
from pynetdicom.events import Event


def nodelay(event: Event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


HANDLER = (evt.EVT_CONN_OPEN, nodelay)
