"""Limits on what an HTTP client may make a server hold: the request head's size and
number of fields, and the time to send it (RFC 9110 15.5.9 408, RFC 6585 5 431).

uvicorn's httptools protocol has neither: a client could send a 10 MB header line, a
hundred thousand header lines, or open connections and send nothing, each kept for ever.
:func:`guarded_protocol` is that protocol with the limits of the settings; every server
of Tessera runs it (:mod:`.serve`, :mod:`.health_server`).

- The head (request line and header fields) is counted in bytes as they arrive (the
  parser holds an unfinished line in memory and reports it only whole) and in fields as
  the parser reports them; past ``http_max_head_bytes`` or ``http_max_headers`` the
  answer is 431.
- A connection has ``http_head_timeout`` seconds, from when it opens or its last
  response ends, to complete the next request's head: then 408 if a request had begun,
  else the connection is closed. A request being answered is never cut by it.
- A refused connection is closed lingering: the client may still be sending its head,
  and closing with unread bytes would reset the connection before the client reads the
  answer (RFC 9112 9.6).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tessera.shared.settings import Settings

_LINGER = 2.0  # seconds a refused connection's further bytes are read and dropped


def _answer(status: bytes, reason: str) -> bytes:
    body = reason.encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


def guarded_protocol(settings: Settings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class with ``settings``' head limits."""
    max_bytes, max_fields = settings.http_max_head_bytes, settings.http_max_headers
    head_timeout = settings.http_head_timeout

    class GuardedProtocol(HttpToolsProtocol):
        _in_head = True  # from a connection's start or a message's end to its headers' end
        _head_bytes = 0
        _head_fields = 0
        _too_large = ""  # why the head was refused, for send_400_response
        _lingering = False
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._lingering:
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_bytes and not self._lingering:
                self._too_large = f"the request head is over {max_bytes} bytes\n"
                self.send_400_response(self._too_large)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_fields += 1
            if self._head_fields > max_fields:
                self._too_large = f"the request has over {max_fields} header fields\n"
                raise ValueError(self._too_large)  # the parser stops: send_400_response
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._head_bytes, self._head_fields = True, 0, 0
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_head_timer()

        def send_400_response(self, msg: str) -> None:
            # what uvicorn calls on any parser error, ours (raised in a callback) included
            if self._too_large:
                self.logger.warning("refused a request head: %s", self._too_large.strip())
                self._refuse(b"431 Request Header Fields Too Large", self._too_large)
            else:
                self._disarm_head_timer()
                super().send_400_response(msg)

        def _refuse(self, status: bytes, reason: str) -> None:
            self._disarm_head_timer()
            self._lingering = True
            self.transport.write(_answer(status, reason))
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(_LINGER, self.transport.close)

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(head_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or (self.cycle and not self.cycle.response_complete):
                return
            if self._head_bytes:  # a request had begun: tell the client why
                self._refuse(b"408 Request Timeout", "the request head was too slow\n")
            else:
                self.transport.close()

    return GuardedProtocol
