"""What one client may hold: connections at once, and time between the pieces of a body.

One ASGI middleware in front of every route:

- WebSockets are counted per client address and overall; over
  ``connections.max_websockets_per_client`` or ``connections.max_websockets`` the handshake is
  refused with a 429 (a close 1013, "try again later", where the server cannot answer a handshake
  with HTTP).
- HTTP requests in progress are counted per client address; over
  ``connections.max_requests_per_client`` the request gets a 429.
- A request body that pauses longer than ``connections.body_timeout`` between two pieces gets a
  408, and the connection is closed after it. Headers are timed by the HTTP protocol
  (`voxserve.server.serving`).

A client is the socket's peer address: behind a reverse proxy every client is the proxy, so raise
the caps there (or cap at the proxy).
"""

from __future__ import annotations

import asyncio
import collections
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.config import ConnectionSettings
from voxserve.errors import RateLimitedError, RequestTimeoutError, VoxserveError
from voxserve.server.errors import refuse

logger = logging.getLogger("voxserve.server")
RETRY_AFTER = 1  # seconds: a connection is usually freed soon


class ConnectionGuard:
    """The ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp, settings: ConnectionSettings):
        self.app = app
        self.settings = settings
        self._websockets: collections.Counter[str] = collections.Counter()
        self._requests: collections.Counter[str] = collections.Counter()

    @property
    def websockets(self) -> int:
        """WebSockets open now."""
        return sum(self._websockets.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        websocket = scope["type"] == "websocket"
        counts = self._websockets if websocket else self._requests
        refusal = self._refusal(client, websocket)
        if refusal is not None:
            logger.warning("refused %s %s from %s: %s", scope.get("method", "WS"),
                           scope["path"], client, refusal.message)  # fmt: skip
            await refuse(scope, send, refusal)
            return
        counts[client] += 1
        try:
            if websocket:
                await self.app(scope, receive, send)
            else:
                await self._timed(scope, receive, send)
        finally:
            counts[client] -= 1
            if not counts[client]:
                del counts[client]  # no address is remembered once it has nothing open

    def _refusal(self, client: str, websocket: bool) -> VoxserveError | None:
        if websocket:
            if self._websockets[client] >= self.settings.max_websockets_per_client:
                return _too_many(
                    f"this address has {self._websockets[client]} WebSockets open, the most "
                    "allowed (connections.max_websockets_per_client): close one and try again"
                )
            if self.websockets >= self.settings.max_websockets:
                return _too_many(
                    f"the server has {self.websockets} WebSockets open, the most allowed "
                    "(connections.max_websockets): try again later"
                )
        elif self._requests[client] >= self.settings.max_requests_per_client:
            return _too_many(
                f"this address has {self._requests[client]} requests in progress, the most "
                "allowed (connections.max_requests_per_client): try again when one has ended"
            )
        return None

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with each wait for the next piece of the body bounded. After a timeout the
        answer is ours, whatever the app made of the error it got (FastAPI reports a failure to
        read a JSON body as a 400), and it closes the connection: what is left of the body would
        be read as the next request."""
        body_done = started = timed_out = False
        timeout = RequestTimeoutError(
            f"the request body stopped coming for {self.settings.body_timeout:g} s "
            "(connections.body_timeout)",
            code="body_timeout",
        )

        async def receive_in_time() -> Message:
            nonlocal body_done, timed_out
            if body_done:  # the app now waits for a disconnect: that may take all day
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.settings.body_timeout)
            except TimeoutError:
                timed_out = True
                raise timeout from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_unless_timed_out(message: Message) -> None:
            nonlocal started
            if timed_out and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_unless_timed_out)
        except Exception:
            if not timed_out:
                raise
        if timed_out and not started:
            await refuse(scope, send, timeout, close=True)


def _too_many(message: str) -> RateLimitedError:
    return RateLimitedError(message, retry_after=RETRY_AFTER, code="too_many_connections")
