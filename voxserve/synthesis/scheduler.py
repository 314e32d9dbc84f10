"""Who synthesizes next on an engine: admission, priority and fairness.

Two limits per engine. Streams: requests being synthesized at once (more wait in a bounded queue;
beyond it the request is refused with a retry hint). Slots: engine calls running at once (the
engine's concurrency). Streams share slots segment by segment, earliest deadline first: a segment
that produces a stream's *first* audio goes ahead of everything, then each segment is due when the
audio already made for its stream has played out (started playing at first audio, real time). So a
client about to run dry goes before one with seconds buffered, and no stream starves. Background
work (an audiobook job: ``background`` set in its task) goes after every live stream's segment:
no one waits for its audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from voxserve.errors import OverloadedError

background: contextvars.ContextVar[bool] = contextvars.ContextVar("background", default=False)
"""Set in a task whose syntheses are background work (its streams' clocks read it)."""


@dataclass
class EngineStats:
    """What an engine has done; realtime factor = audio seconds made per second of synthesis."""

    generations: int = 0
    synthesis_seconds: float = 0.0
    audio_seconds: float = 0.0

    @property
    def average_seconds(self) -> float:
        return self.synthesis_seconds / self.generations if self.generations else 0.0

    @property
    def realtime_factor(self) -> float:
        return self.audio_seconds / self.synthesis_seconds if self.synthesis_seconds else 0.0


@dataclass
class StreamClock:
    """A stream's place in the schedule."""

    admitted_at: float = field(default_factory=time.monotonic)
    first_audio_at: float | None = None
    audio_seconds: float = 0.0
    background: bool = field(default_factory=background.get)

    def deadline(self) -> tuple[int, float]:
        if self.background:
            return (2, self.admitted_at)
        if self.first_audio_at is None:
            return (0, self.admitted_at)
        return (1, self.first_audio_at + self.audio_seconds)


class EngineScheduler:
    def __init__(self, concurrency: int, max_streams: int, max_queue: int):
        self.concurrency = concurrency
        self.max_streams = max_streams
        self.max_queue = max_queue
        self.stats = EngineStats()
        self.active_streams = 0
        self.queued_streams = 0
        self._stream_waiters: list[asyncio.Future] = []
        self._free_slots = concurrency
        self._slot_waiters: list[tuple[tuple[int, float], int, asyncio.Future]] = []
        self._order = itertools.count()
        self._average_stream_seconds = 0.0

    @contextlib.asynccontextmanager
    async def stream(self) -> AsyncIterator[StreamClock]:
        """Hold a stream place for a request; raises OverloadedError when the queue is full."""
        if self.active_streams >= self.max_streams or self._stream_waiters:
            if self.queued_streams >= self.max_queue:
                raise OverloadedError(
                    f"server busy: {self.active_streams} streams and {self.queued_streams} queued",
                    retry_after=self._retry_after(),
                )
            waiter = asyncio.get_running_loop().create_future()
            self._stream_waiters.append(waiter)
            self.queued_streams += 1
            try:
                await waiter  # the releasing stream hands its place over: active count unchanged
            except asyncio.CancelledError:
                if waiter in self._stream_waiters:
                    self._stream_waiters.remove(waiter)
                elif not waiter.cancelled():  # handed over just as we were cancelled: pass it on
                    self._release_stream()
                raise
            finally:
                self.queued_streams -= 1
        else:
            self.active_streams += 1
        clock = StreamClock()
        try:
            yield clock
        finally:
            self._release_stream()
            elapsed = time.monotonic() - clock.admitted_at
            self._average_stream_seconds += 0.2 * (elapsed - self._average_stream_seconds)

    @contextlib.asynccontextmanager
    async def slot(self, clock: StreamClock) -> AsyncIterator[None]:
        """Hold one engine call's slot, granted by deadline."""
        if self._free_slots > 0 and not self._slot_waiters:
            self._free_slots -= 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            entry = (clock.deadline(), next(self._order), waiter)
            heapq.heappush(self._slot_waiters, entry)
            try:
                await waiter  # handed over by the releasing call
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release_slot()
                else:
                    self._slot_waiters.remove(entry)
                    heapq.heapify(self._slot_waiters)
                raise
        try:
            yield
        finally:
            self._release_slot()

    def record(self, synthesis_seconds: float, audio_seconds: float) -> None:
        self.stats.generations += 1
        self.stats.synthesis_seconds += synthesis_seconds
        self.stats.audio_seconds += audio_seconds

    def _release_stream(self) -> None:
        while self._stream_waiters:
            waiter = self._stream_waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active_streams -= 1

    def _release_slot(self) -> None:
        while self._slot_waiters:
            _, _, waiter = heapq.heappop(self._slot_waiters)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free_slots += 1

    def _retry_after(self) -> int:
        # How long the queue ahead takes to drain if each stream takes the recent average.
        drain = self._average_stream_seconds * (self.queued_streams + 1) / self.max_streams
        return max(1, math.ceil(drain))
