"""Repeated segments come from the cache; the cache stays within its memory."""

from __future__ import annotations

import numpy as np

from tests.fakes import FakeEngine, collect, make_synthesizer
from voxserve.audio.frames import AudioChunk
from voxserve.request import SpeechRequest
from voxserve.synthesis.cache import SegmentCache
from voxserve.synthesis.scheduler import background


class CountingObserver:
    def __init__(self):
        self.cache_events: list[bool] = []
        self.first_audio_seconds: list[float] = []
        self.completed: list[tuple[float, float]] = []

    def first_audio(self, engine: str, seconds: float) -> None:
        self.first_audio_seconds.append(seconds)

    def finished(self, engine: str, audio_seconds: float, wall_seconds: float) -> None:
        self.completed.append((audio_seconds, wall_seconds))

    def cached(self, engine: str, hit: bool) -> None:
        self.cache_events.append(hit)


async def test_a_repeated_phrase_is_not_synthesized_again():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    first = await collect(synthesizer, SpeechRequest(input="One moment, please. Let me look."))
    again = await collect(synthesizer, SpeechRequest(input="One moment, please. Something new."))
    assert engine.calls == ["One moment, please.", "Let me look.", "Something new."]
    assert synthesizer.cache.hits == 1
    assert np.array_equal(first[:1000], again[:1000])


async def test_a_background_job_reads_the_cache_but_does_not_fill_it():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    request = SpeechRequest(input="Said once in a book.")
    token = background.set(True)
    try:
        await collect(synthesizer, request)
    finally:
        background.reset(token)
    await collect(synthesizer, request)  # live: spoken again, and kept
    token = background.set(True)
    try:
        await collect(synthesizer, request)  # a job: served from what the live request kept
    finally:
        background.reset(token)
    assert engine.calls == ["Said once in a book."] * 2 and synthesizer.cache.hits == 1


async def test_other_options_are_other_entries():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine)
    await collect(synthesizer, SpeechRequest(input="Same words."))
    await collect(synthesizer, SpeechRequest(input="Same words.", speed=1.5))
    await collect(synthesizer, SpeechRequest(input="Same words.", voice="low"))
    assert len(engine.calls) == 3


async def test_the_observer_hears_cache_first_audio_and_completion():
    observer = CountingObserver()
    synthesizer = make_synthesizer(FakeEngine())
    synthesizer.observer = observer
    for _ in range(2):
        await collect(synthesizer, SpeechRequest(input="Hello again."))
    assert observer.cache_events == [False, True]
    assert len(observer.first_audio_seconds) == 2
    assert all(seconds >= 0 for seconds in observer.first_audio_seconds)
    assert observer.completed[0][0] > 0


def test_the_cache_evicts_the_least_recently_used_within_its_bytes():
    chunk = AudioChunk(np.zeros(1000, np.float32), 16000)  # 4,000 bytes
    cache = SegmentCache(max_bytes=10_000)
    cache.put("a", [chunk])
    cache.put("b", [chunk])
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", [chunk])
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", [AudioChunk(np.zeros(10_000, np.float32), 16000)])
    assert cache.get("huge") is None
    assert not SegmentCache(0).wants("anything")
