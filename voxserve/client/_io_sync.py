"""What the blocking client does differently from the async one: the names of `_io_async.py`,
for websockets' threading client and threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from websockets.sync.client import ClientConnection, connect

from voxserve.client._protocol import POLL_SECONDS

__all__ = ["ClientConnection", "TextSource", "Worker", "blocking", "connect", "recv", "text_pieces"]

T = TypeVar("T")

TextSource = Iterable[str]
"""Text pieces to speak, read by a thread of their own while audio comes back."""


def blocking(function: Callable[..., T], *args: Any) -> T:
    return function(*args)


def recv(ws: ClientConnection, seconds: float | None) -> str | bytes:
    """The next frame; TimeoutError after `seconds` (None: wait for ever)."""
    return ws.recv(timeout=seconds)


def text_pieces(pieces: TextSource) -> Iterator[str]:
    return iter(pieces)


class Worker:
    """Work done beside the caller's (a daemon thread), left when the caller is done with it."""

    def __init__(self, name: str, work: Callable[..., None], *args: Any) -> None:
        self._thread = threading.Thread(target=work, args=args, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def done(self) -> bool:
        return self._thread.ident is not None and not self._thread.is_alive()

    def stop(self) -> None:
        # A thread cannot be cancelled: once its socket is closed, one still inside the caller's
        # iterable stops at its next send. Wait a moment for it, not for the iterable.
        if self._thread.ident is not None:
            self._thread.join(timeout=POLL_SECONDS)
