"""Admission, priority and fairness on one engine, with the fake engine standing in for a model."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fakes import FakeEngine, collect, make_synthesizer
from voxserve.errors import OverloadedError
from voxserve.request import SpeechRequest
from voxserve.synthesis.scheduler import EngineScheduler, StreamClock, background


async def test_a_full_queue_refuses_with_a_retry_hint():
    scheduler = EngineScheduler(concurrency=1, max_streams=1, max_queue=1)
    holding, queued = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with scheduler.stream():
            holding.set()
            await asyncio.sleep(0.2)

    async def wait_in_queue() -> None:
        async with scheduler.stream():
            queued.set()

    first = asyncio.create_task(hold())
    await holding.wait()
    second = asyncio.create_task(wait_in_queue())
    await asyncio.sleep(0)
    assert scheduler.queued_streams == 1
    with pytest.raises(OverloadedError) as refused:
        async with scheduler.stream():
            pass
    assert refused.value.status_code == 429
    assert refused.value.retry_after >= 1
    await asyncio.gather(first, second)
    assert queued.is_set()
    assert (scheduler.active_streams, scheduler.queued_streams) == (0, 0)


async def test_a_cancelled_waiter_gives_its_place_back():
    scheduler = EngineScheduler(concurrency=1, max_streams=1, max_queue=4)
    async with scheduler.stream():
        waiter = asyncio.create_task(scheduler.stream().__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert scheduler.queued_streams == 0
    assert scheduler.active_streams == 0
    async with scheduler.stream():  # the place is free again
        assert scheduler.active_streams == 1


async def test_first_audio_goes_ahead_then_the_earliest_deadline():
    scheduler = EngineScheduler(concurrency=1, max_streams=8, max_queue=8)
    now = time.monotonic()
    playing_far_ahead = StreamClock(first_audio_at=now, audio_seconds=30.0)
    playing_about_to_run_dry = StreamClock(first_audio_at=now, audio_seconds=0.5)
    new_request = StreamClock()
    order: list[str] = []

    async def take(name: str, clock: StreamClock) -> None:
        async with scheduler.slot(clock):
            order.append(name)

    async with scheduler.slot(StreamClock()):  # busy: everyone below queues
        tasks = [
            asyncio.create_task(take("far ahead", playing_far_ahead)),
            asyncio.create_task(take("running dry", playing_about_to_run_dry)),
            asyncio.create_task(take("new", new_request)),
        ]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["new", "running dry", "far ahead"]


async def test_background_work_waits_for_every_live_stream():
    scheduler = EngineScheduler(concurrency=1, max_streams=8, max_queue=8)
    order: list[str] = []

    async def take(name: str, live: bool) -> None:
        if not live:
            background.set(True)  # in this task only, as a job's runner sets it
        async with scheduler.stream() as clock, scheduler.slot(clock):
            order.append(name)

    async with scheduler.slot(StreamClock()):
        tasks = [asyncio.create_task(take("book", live=False))]
        await asyncio.sleep(0)  # the book waits first
        tasks.append(asyncio.create_task(take("far ahead", live=True)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["far ahead", "book"] and not background.get()


async def test_concurrent_requests_share_the_engine_and_each_starts_quickly():
    engine = FakeEngine(delay=0.05)
    synthesizer = make_synthesizer(engine, first_fragment_small=False, cache_mb=0)
    long_text = " ".join(f"Sentence number {n}." for n in range(10))
    first_audio: dict[int, float] = {}
    started = time.monotonic()

    async def client(number: int) -> None:
        async for _ in synthesizer.stream(SpeechRequest(input=long_text)):
            first_audio.setdefault(number, time.monotonic() - started)

    await asyncio.gather(*(client(n) for n in range(4)))
    # With one slot, every client's first segment is served before anyone's look-ahead:
    # 4 first segments at 0.05 s each, not 10 segments of a whole earlier request.
    assert max(first_audio.values()) < 0.05 * 10
    assert synthesizer.scheduler(engine).stats.generations == 40


async def test_engine_statistics_are_kept():
    engine = FakeEngine(seconds_per_char=0.02, delay=0.01)
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    await collect(synthesizer, SpeechRequest(input="One sentence. And another one."))
    stats = synthesizer.engine_stats()["fake"]
    assert stats.generations == 2
    spoken = len("One sentence.") + len("And another one.")
    assert stats.audio_seconds == pytest.approx(spoken * 0.02, abs=0.01)
    assert stats.realtime_factor > 0 and stats.average_seconds >= 0.01


async def test_idle_engines_unload_after_their_keep_alive_and_reload_on_demand():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine, default_engine="piper", keep_alive=0.1)
    request = SpeechRequest(input="Hello.", model="fake")
    await collect(synthesizer, request)
    registry = synthesizer.registry
    assert registry.loaded_names() == ["fake"]
    assert await registry.unload_idle() == []  # used just now
    await asyncio.sleep(0.15)
    assert await registry.unload_idle() == ["fake"]
    await collect(synthesizer, request)
    assert engine.loads == 2
