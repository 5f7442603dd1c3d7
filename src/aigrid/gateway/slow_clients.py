"""Deadlines for a client that sends its request slowly: the request's head here, its body in routes.read_body.

uvicorn arms no timer while a request's head arrives: a connection that sends nothing, or half a header line and
then nothing, stays open for good (checked on uvicorn 0.55: a connection with an unfinished head was still open
after 40 s), and after a response the keep-alive timer is dropped at the next request's first byte. A few
thousand such connections (slowloris) hold the gateway's file descriptors and memory, and no request of theirs
ever reaches the pipeline, its quotas or its audit log. Envoy's `request_headers_timeout`, nginx's
`client_header_timeout` (60 s) and the compiled routers bound it the same way.

`HeadDeadline` is uvicorn's httptools protocol with one timer more: from the connection's start, and from the
first byte of each later request on it, its head must be complete within HEAD_TIMEOUT_S; else the gateway answers
408 and closes the connection (logged, with the client's address). The body then has BODY_TIMEOUT_S
(routes.read_body: the API's own 408 envelope, audited as every refused request is).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
"""A body of the gateway's largest (4 MiB) at 1 Mbit/s takes about 34 s."""
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

log = logging.getLogger("aigrid.gateway")


class HeadDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on each request's head (module docstring)."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a later request on a kept connection: its head has the same time from its first byte

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        who = f"{self.client[0]}:{self.client[1]}" if self.client else "an unknown client"
        log.warning("closed a connection from %s: its request head was not complete within %.0f s", who,
                    self.head_timeout_s)
        self.transport.write(TIMED_OUT)
        self.transport.close()
