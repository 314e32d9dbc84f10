"""Work for a client that may leave before it is done: cancelled as soon as the client does.

A streamed answer notices on its first failed send; an answer made in full before it is sent
(``stream: false``, ``/ws/tts``) would otherwise synthesize to the end for nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class ClientLeft(Exception):
    """The client went away before its answer was ready."""


async def unless_client_leaves(work: Awaitable[T], leaving: Awaitable[bool]) -> T:
    """``work``'s result. Should ``leaving`` end first saying True (the client has gone), ``work``
    is cancelled and ClientLeft raised; saying False (the client sent something else), the watch
    is over and ``work`` goes on."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(leaving)
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and watch.result():
            raise ClientLeft()
        return await task
    finally:
        for pending in (task, watch):
            pending.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
