"""The one adapter between blocking engines and the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(iterator: Iterator[T]) -> AsyncIterator[T]:
    """Advance a blocking iterator in a worker thread, one item per step.

    When the consumer stops early, no further step is started; a step already running in its thread
    cannot be interrupted, so the iterator is closed as soon as that step returns.
    """
    loop = asyncio.get_running_loop()
    step: asyncio.Future | None = None
    try:
        while True:
            step = loop.run_in_executor(None, next, iterator, _DONE)
            # Shielded so that cancelling us leaves `step` running to completion, then closes.
            item = await asyncio.shield(step)
            step = None
            if item is _DONE:
                return
            yield item
    finally:
        if step is None or step.done():
            _close(iterator)
        else:
            step.add_done_callback(lambda finished: _close(iterator, finished))


def _close(iterator: Iterator, finished_step: asyncio.Future | None = None) -> None:
    if finished_step is not None and not finished_step.cancelled():
        finished_step.exception()  # retrieved: nobody is waiting for this step any more
    close = getattr(iterator, "close", None)
    if close is not None:
        close()
