"""The app served by uvicorn, built the same way for ``voxserve serve`` and the tests.

uvicorn bounds the wait between two requests (``timeout_keep_alive``) but not the wait for a
request's headers: a client that opens connections and sends half its headers holds each one for
as long as it likes. `HeaderTimeout` closes a connection whose headers are not all in within
``connections.header_timeout`` seconds of its opening, or of the end of its previous response.
(The body is timed in ASGI, by `voxserve.server.connections`.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from voxserve.config import Settings


class HeaderTimeout:
    """Mixed into uvicorn's HTTP protocol (httptools, or h11 without it): both make a new
    ``cycle`` once a request's headers are complete, and hand the transport to another protocol
    on a WebSocket upgrade."""

    header_timeout: float
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        waiting_for = self.cycle
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not waiting_for or self.transport.get_protocol() is not self:
            self._stop_waiting()  # a request's headers are in, or a WebSocket took over

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        # Unless a pipelined request's headers are in already, the next request's are awaited.
        if self.cycle.response_complete and not self.transport.is_closing():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)  # type: ignore[misc]

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol, with headers due within ``header_timeout`` seconds."""
    return type(
        "HeaderTimedHTTPProtocol",
        (HeaderTimeout, AutoHTTPProtocol),
        {"header_timeout": header_timeout},
    )


def server(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` on ``settings``' host and port; ``overrides`` are uvicorn
    ``Config`` arguments (``port``, ``log_level``...)."""
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": http_protocol(settings.connections.header_timeout),
        "ws_max_size": settings.max_websocket_message_bytes,
        **overrides,
    }
    return uvicorn.Server(uvicorn.Config(app, **options))
