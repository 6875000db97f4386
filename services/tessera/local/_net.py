"""Loopback TCP ports: find a free one, check whether one is free or accepting."""

from __future__ import annotations

import random
import socket
import threading

_LOWEST = 10000
_given: set[int] = set()
_lock = threading.Lock()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (outgoing connections' ports)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, never one this process
    handed out before.

    Drawn at random below the kernel's ephemeral range, where neither an outgoing
    connection nor another program's ``bind(0)`` can take it between this call and the
    server's bind; and remembered, so that two servers started from one process (a test
    cluster) never get the same port, which once let a service's health check be
    answered by another service that had bound it first.
    """
    low = _ephemeral_low()
    with _lock:
        if low - _LOWEST > 1000:
            for _ in range(200):
                port = random.randrange(_LOWEST, low)
                if port not in _given and _bindable(port):
                    _given.add(port)
                    return port
        while True:  # an unusual range: the kernel's choice, still never twice
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _given:
                _given.add(port)
                return port


def port_is_free(port: int) -> bool:
    """True if a server could bind 127.0.0.1:``port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port(preferred: int) -> int:
    """``preferred`` unless it is busy, else any free port."""
    return preferred if port_is_free(preferred) else free_port()


def accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
