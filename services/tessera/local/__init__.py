"""Tessera on one machine (``tessera run``, ``make run``), and the process helpers the
tests and benchmarks use to start real servers.

Public API (the ``_child`` / ``_net`` modules behind it are private):

* processes: :func:`spawn` (a child that dies with its parent), :func:`child_kwargs`
  (the same for your own ``Popen``), :class:`ServerProcess` (a started server and its
  log), :func:`wait_until`, :func:`pid_alive`, :func:`server_user` (who an unprivileged
  server runs as when we are root), :class:`PortBusy`;
* ports: :func:`free_port`, :func:`pick_port`, :func:`port_is_free`.

Servers themselves: :mod:`tessera.local.processes` (PostgreSQL, Redis, an S3 API).
"""

from tessera.local._child import (
    PortBusy,
    ServerProcess,
    child_kwargs,
    pid_alive,
    server_user,
    spawn,
    wait_until,
)
from tessera.local._net import free_port, pick_port, port_is_free

__all__ = [
    "PortBusy",
    "ServerProcess",
    "child_kwargs",
    "free_port",
    "pick_port",
    "pid_alive",
    "port_is_free",
    "server_user",
    "spawn",
    "wait_until",
]
