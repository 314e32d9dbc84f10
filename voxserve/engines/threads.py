"""The one adapter between blocking engines and the event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()
# The engines' own threads: the scheduler bounds how many calls run at once, so this bound is
# only a backstop. Not the loop's default executor, which file and SQLite work share.
_ENGINE_THREADS = concurrent.futures.ThreadPoolExecutor(
    max_workers=64, thread_name_prefix="voxserve-engine"
)


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Advance a blocking iterator in a worker thread, one item per step.

    When the consumer stops early, a step not yet started never starts, and a step already
    running (it cannot be interrupted) is left to finish; either way the iterator is closed in a
    worker thread, never on the event loop: an engine's clean-up may wait (Higgs waits for its
    model's current step), and nobody should wait for it.
    """
    step: concurrent.futures.Future | None = None
    waiting: asyncio.Future | None = None
    try:
        while True:
            step = _ENGINE_THREADS.submit(next, iterator, _DONE)
            waiting = asyncio.wrap_future(step)
            # Shielded so that cancelling us leaves `step` running to completion, then closes.
            item = await asyncio.shield(waiting)
            step = waiting = None
            if item is _DONE:
                return
            yield item
    finally:
        if waiting is not None:  # its outcome is nobody's now: retrieved, so none is logged
            waiting.add_done_callback(_retrieve)
        if step is None or step.cancel() or step.done():
            _ENGINE_THREADS.submit(_close, iterator)
        else:  # running: closed in its own thread as soon as it returns
            step.add_done_callback(lambda _: _close(iterator))


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _close(iterator: Iterator) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
