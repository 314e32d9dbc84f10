"""What the async client does differently from the blocking one, beyond ``await``: the
asyncio side of websockets, tasks, and threads for blocking work.

`_io_sync.py` has the same names for the blocking client: `_async.py` imports them from here,
and scripts/unasync.py points `_sync.py` at that module, so the client is written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect

__all__ = ["ClientConnection", "TextSource", "Worker", "blocking", "connect", "recv", "text_pieces"]

T = TypeVar("T")

TextSource = Iterable[str] | AsyncIterable[str]
"""Text pieces to speak: a plain iterable is read on the event loop, so it must not block."""


async def blocking(function: Callable[..., T], *args: Any) -> T:
    """Run blocking work (files) in a thread: the event loop never waits on it."""
    return await asyncio.to_thread(function, *args)


async def recv(ws: ClientConnection, seconds: float | None) -> str | bytes:
    """The next frame; TimeoutError after `seconds` (None: wait for ever)."""
    async with asyncio.timeout(seconds):
        return await ws.recv()


async def text_pieces(pieces: TextSource) -> AsyncIterator[str]:
    if isinstance(pieces, AsyncIterable):
        async for piece in pieces:
            yield piece
    else:
        for piece in pieces:
            yield piece


class Worker:
    """Work done beside the caller's (an asyncio task), stopped when the caller is done with it."""

    def __init__(
        self, name: str, work: Callable[..., Coroutine[Any, Any, None]], *args: Any
    ) -> None:
        self._name = name
        self._work = work
        self._args = args
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(*self._args), name=self._name)

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # unlike awaiting it, never raises our cancellation
