"""What the engine seam does for every engine: retries, time limits, words in stream time,
voicing per segment, look-ahead across a dialogue's turns, caching only what can be reused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest

from tests.fakes import FakeEngine, collect, make_synthesizer
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.engines.base import Capabilities, SynthesisOptions
from voxserve.errors import EngineError
from voxserve.request import DialogueRequest, SpeechRequest
from voxserve.synthesis.dialogue import TurnTiming, prepare_dialogue, render_dialogue


class FlakyEngine(FakeEngine):
    """Fails its first ``failures`` calls with a passing error, before or after some audio."""

    def __init__(self, failures: int, *, after_audio: bool = False, retryable: bool = True, **kw):
        super().__init__(**kw)
        self.failures = failures
        self.after_audio = after_audio
        self.retryable = retryable

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        if self.failures:
            self.failures -= 1
            self.calls.append(text)
            if self.after_audio:
                yield AudioChunk(np.full(160, 0.1, np.float32), self.sample_rate)
            raise EngineError("upstream dropped the connection", retryable=self.retryable)
        yield from super().synthesize(text, options)


class WordEngine(FakeEngine):
    """Times its words: each word a slice of the tone, its time from the chunk's start."""

    def describe(self) -> Capabilities:
        return Capabilities(**{**super().describe().to_dict(), "word_timings": True})

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        for chunk in super().synthesize(text, options):
            words, start = [], 0.0
            for word in text.split():
                length = len(word) * self.seconds_per_char
                words.append(WordTiming(word, start, start + length))
                start += length + self.seconds_per_char
            yield AudioChunk(chunk.samples, chunk.sample_rate, tuple(words))


async def test_a_passing_failure_before_any_audio_is_tried_again():
    engine = FlakyEngine(failures=1)
    audio = await collect(make_synthesizer(engine), SpeechRequest(input="Hello there."))
    assert len(audio) and engine.calls == ["Hello there.", "Hello there."]


@pytest.mark.parametrize(
    ("after_audio", "retryable"), [(True, True), (False, False)], ids=["after-audio", "not-passing"]
)
async def test_a_failure_after_audio_or_not_passing_is_not_tried_again(after_audio, retryable):
    engine = FlakyEngine(failures=1, after_audio=after_audio, retryable=retryable)
    with pytest.raises(EngineError, match="dropped"):
        await collect(make_synthesizer(engine), SpeechRequest(input="Hello there."))
    assert engine.calls == ["Hello there."]


async def test_a_call_past_its_time_limit_fails_the_request_and_the_server_goes_on():
    engine = FakeEngine(delay=0.5, chunks=4, call_timeout=0.2)
    synthesizer = make_synthesizer(engine)
    with pytest.raises(EngineError) as caught:
        await collect(synthesizer, SpeechRequest(input="Too slow."))
    assert caught.value.code == "engine_timeout" and "call_timeout" in caught.value.message
    engine.delay = 0.0
    assert len(await collect(synthesizer, SpeechRequest(input="Fine now.")))


async def test_words_come_out_in_stream_time_through_pauses_and_resampling():
    engine = WordEngine(sample_rate=16000, chunks=1)
    synthesizer = make_synthesizer(engine, sentence_pause=0.3)
    request = SpeechRequest(input="One two. Three four.", sample_rate=24000)
    chunks = [chunk async for chunk in synthesizer.stream(request)]
    words = [word for chunk in chunks for word in chunk.words]
    assert [word.text for word in words] == ["One", "two.", "Three", "four."]
    first_length = len("One two.") * engine.seconds_per_char
    # The second sentence's words start after the first sentence's audio and its pause
    assert words[2].start == pytest.approx(first_length + 0.3, abs=1e-6)
    starts = [word.start for word in words]
    assert starts == sorted(starts) and all(word.start < word.end for word in words)
    total = sum(len(chunk.samples) for chunk in chunks) / 24000
    assert words[-1].end <= total + 1e-3


async def test_a_dialogue_looks_ahead_across_its_turns():
    # The next speaker's first sentence is made while this speaker's last one is still going
    # out: before, look-ahead stopped at each turn's end.
    engine = FakeEngine(delay=0.05)
    synthesizer = make_synthesizer(engine, lookahead=2)
    request = DialogueRequest(turns=[{"speaker": "A", "text": "First turn."},
                                     {"speaker": "B", "text": "Second turn."}])  # fmt: skip
    dialogue = prepare_dialogue(synthesizer, request)
    calls_at_first_timing = None
    async for item in render_dialogue(synthesizer, dialogue):
        if isinstance(item, AudioChunk) and calls_at_first_timing is None:
            await asyncio.sleep(0.2)  # a slow client on turn 1's audio
            calls_at_first_timing = list(engine.calls)
    assert calls_at_first_timing == ["First turn.", "Second turn."]


async def test_a_dialogue_times_each_turn_without_its_pause():
    synthesizer = make_synthesizer(FakeEngine(), speakers={"fake": ["tone", "low"]})
    request = DialogueRequest(
        turns=[{"speaker": "A", "text": "Hello."}, {"speaker": "B", "text": "Hi."}],
        pause_between_turns=0.5,
    )
    items = [
        item async for item in render_dialogue(synthesizer, prepare_dialogue(synthesizer, request))
    ]
    first, second = [item for item in items if isinstance(item, TurnTiming)]
    assert second.start - first.end == pytest.approx(0.5, abs=1e-3)
    assert first.voice != second.voice


async def test_segments_spoken_in_a_context_are_not_cached():
    # A context-carrying engine got a fresh context id per render into its cache key: entries
    # that could never be found again, filling the cache.
    class ContextEngine(FakeEngine):
        def describe(self) -> Capabilities:
            return Capabilities(**{**super().describe().to_dict(), "carries_context": True})

    engine = ContextEngine()
    synthesizer = make_synthesizer(engine)
    for _ in range(2):
        await collect(synthesizer, SpeechRequest(input="Same words."))
    assert engine.calls == ["Same words.", "Same words."]
    assert synthesizer.cache.hits == synthesizer.cache.misses == 0  # never looked for
    assert len({options.context_id for options in engine.options}) == 2


async def test_capabilities_are_computed_once():
    engine = FakeEngine()
    described = []
    original = engine.describe

    def counting() -> Capabilities:
        described.append(time.monotonic())
        return original()

    engine.describe = counting
    synthesizer = make_synthesizer(engine)
    for text in ("One.", "Two."):
        await collect(synthesizer, SpeechRequest(input=text))
    assert len(described) == 1
