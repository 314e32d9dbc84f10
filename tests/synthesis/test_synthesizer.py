"""Synthesizer contracts, on the fake engine: order, pipelining, pauses, cancellation, failures."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import numpy as np
import pydantic
import pytest

from tests.fakes import FakeEngine, collect, make_synthesizer
from voxserve.audio.frames import AudioChunk
from voxserve.errors import EngineError, InvalidRequestError
from voxserve.request import DialogueRequest, Sampling, SpeechRequest
from voxserve.synthesis.dialogue import prepare_dialogue, render_dialogue
from voxserve.synthesis.synthesizer import NOTHING_TO_SAY_SECONDS, Progress

THREE_SENTENCES = "First one here. Second one follows. Third one ends it."


async def test_segments_come_out_in_order_with_pauses_between_sentences():
    engine = FakeEngine(seconds_per_char=0.01, delay=0.0)
    synthesizer = make_synthesizer(engine, sentence_pause=0.3, first_fragment_small=False)
    audio = await collect(synthesizer, SpeechRequest(input=THREE_SENTENCES))
    assert engine.calls == ["First one here.", "Second one follows.", "Third one ends it."]
    spoken = sum(len(text) for text in engine.calls) * 0.01
    assert len(audio) / 16000 == pytest.approx(spoken + 2 * 0.3, abs=0.01)


async def test_first_clause_is_synthesized_on_its_own():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine)
    await collect(synthesizer, SpeechRequest(input="Sure thing, that is a fine idea. Let us go."))
    assert engine.calls == ["Sure thing,", "that is a fine idea.", "Let us go."]


async def test_output_is_resampled_to_the_requested_rate():
    synthesizer = make_synthesizer(FakeEngine(sample_rate=16000))
    chunks = [
        c async for c in synthesizer.stream(SpeechRequest(input="Hello there.", sample_rate=24000))
    ]
    assert {chunk.sample_rate for chunk in chunks} == {24000}
    total = sum(len(chunk.samples) for chunk in chunks)
    assert total / 24000 == pytest.approx(len("Hello there.") * 0.01, abs=0.005)


async def test_segment_edges_are_faded_so_joins_do_not_click():
    engine = FakeEngine(seconds_per_char=0.02)
    synthesizer = make_synthesizer(engine, sentence_pause=0.0, first_fragment_small=False)
    audio = await collect(synthesizer, SpeechRequest(input="One two three. Four five six."))
    first_length = int(len("One two three.") * 0.02 * 16000)
    assert abs(audio[0]) < 1e-3
    # Around the join, both the tail of the first and the head of the second are near silent.
    assert np.max(np.abs(audio[first_length - 2 : first_length + 2])) < 0.05


async def test_next_segment_is_synthesized_while_the_consumer_is_busy():
    engine = FakeEngine(delay=0.02)
    synthesizer = make_synthesizer(engine, lookahead=2, first_fragment_small=False)
    text = " ".join(f"Sentence number {n}." for n in range(8))
    stream = synthesizer.stream(SpeechRequest(input=text))
    async with contextlib.aclosing(stream):
        await anext(stream)
        await asyncio.sleep(0.3)  # a slow client: look-ahead fills, then stops
        # Two places: the segment being consumed (its last samples are not taken yet), and the
        # next one, synthesized meanwhile; no more.
        assert len(engine.calls) == 2


async def test_a_consumer_that_stops_stops_the_work_and_leaks_no_task():
    engine = FakeEngine(delay=0.02)
    synthesizer = make_synthesizer(engine)
    baseline = len(asyncio.all_tasks())
    text = " ".join(f"Sentence number {n}." for n in range(50))
    stream = synthesizer.stream(SpeechRequest(input=text))
    await anext(stream)
    await stream.aclose()
    calls_at_close = len(engine.calls)
    await asyncio.sleep(0.3)
    assert len(engine.calls) <= calls_at_close + 1
    assert synthesizer.stats.active == 0
    assert len(asyncio.all_tasks()) == baseline


async def test_an_engine_failure_fails_that_request_only():
    engine = FakeEngine(fail_on="boom")
    synthesizer = make_synthesizer(engine)
    with pytest.raises(EngineError, match="fake engine failure"):
        await collect(synthesizer, SpeechRequest(input="Fine. Then boom. Never reached."))
    assert "Never reached." not in engine.calls
    audio = await collect(synthesizer, SpeechRequest(input="Still working."))
    assert len(audio) > 0


async def test_an_engine_that_returns_no_audio_is_an_error():
    # A sampling engine's failure; one that does not sample cannot speak the text (test_bad_input)
    synthesizer = make_synthesizer(FakeEngine(silent_on="quiet", sampling=True))
    with pytest.raises(EngineError) as caught:
        await collect(synthesizer, SpeechRequest(input="Be quiet."))
    assert caught.value.code == "no_audio"


async def test_progress_reports_every_segment():
    synthesizer = make_synthesizer(FakeEngine(), first_fragment_small=False)
    seen: list[Progress] = []
    await collect(synthesizer, SpeechRequest(input=THREE_SENTENCES), seen.append)
    assert [p.segments_done for p in seen] == [1, 2, 3]
    assert all(p.segments_total == 3 for p in seen)
    assert seen[-1].audio_seconds > seen[0].audio_seconds > 0
    assert seen[0].eta_seconds >= 0 and seen[-1].eta_seconds == 0


async def test_streaming_engines_chunks_pass_through_as_they_come():
    engine = FakeEngine(chunks=4)
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    chunks = [c async for c in synthesizer.stream(SpeechRequest(input="A single sentence here."))]
    # The engine's four, each sent as it came; only the last 5 ms (the segment's fade-out) were
    # held back until the engine had ended.
    assert len(chunks) == 5
    assert len(chunks[-1].samples) == 16000 * 5 // 1000


class GatedEngine(FakeEngine):
    """Yields its first chunk, then waits for ``more`` before its second: a provider whose next
    piece is still on its way."""

    def __init__(self):
        super().__init__(chunks=2)
        self.more = threading.Event()

    def synthesize(self, text, options):
        pieces = super().synthesize(text, options)
        yield next(pieces)
        self.more.wait(30)
        yield from pieces


async def test_a_chunk_goes_out_before_the_engine_makes_its_next():
    engine = GatedEngine()
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    stream = synthesizer.stream(SpeechRequest(input="A single sentence here."))
    async with contextlib.aclosing(stream):
        first = await asyncio.wait_for(anext(stream), 30)  # the second piece is not made yet
        assert not engine.more.is_set() and len(first.samples) > 0
        engine.more.set()
        rest = [chunk async for chunk in stream]
    spoken = sum(len(chunk.samples) for chunk in [first, *rest])
    assert spoken == round(len("A single sentence here.") * 0.01 * 16000)


async def test_the_engine_loads_once_for_concurrent_requests():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine)
    requests = [collect(synthesizer, SpeechRequest(input=f"Request {n}.")) for n in range(5)]
    await asyncio.gather(*requests)
    assert engine.loads == 1


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": "Hi.", "speed": 3.0}, "speed"),  # the fake engine does 0.5-2.0
        ({"input": "x" * 5000}, "input"),
        ({"input": "Hi.", "voice": "nobody"}, "voice"),
        ({"input": "Hi.", "model": "no-such-engine"}, "model"),
        ({"input": "Hi.", "language": "de-DE"}, "language"),
    ],
)
def test_requests_the_engine_cannot_honour_are_rejected_naming_the_field(fields, param):
    synthesizer = make_synthesizer(FakeEngine())
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.prepare(SpeechRequest(**fields))
    assert caught.value.param == param
    assert caught.value.status_code == 400


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("text", ["🎉🎉", "...", "  !  "])
async def test_text_with_nothing_to_speak_is_a_moment_of_silence(text, normalize):
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine)
    request = SpeechRequest(input=text, sample_rate=24000, normalize=normalize)
    audio = await collect(synthesizer, request)
    assert len(audio) == round(NOTHING_TO_SAY_SECONDS * 24000)
    assert not audio.any()
    assert engine.calls == []  # nothing was sent to the engine


@pytest.mark.parametrize(
    "model", ["tts-1", "tts-1-hd", "tts-1-1106", "tts-1-hd-1106", "gpt-4o-mini-tts-2025-03-20"]
)
def test_openai_voice_names_and_model_names_resolve_to_the_defaults(model):
    synthesizer = make_synthesizer(FakeEngine())
    synthesizer.settings.voice_aliases["alloy"] = "low"
    prepared = synthesizer.prepare(SpeechRequest(input="Hi.", voice="alloy", model=model))
    assert (prepared.engine.name, prepared.voice.id) == ("fake", "low")


def test_sampling_reaches_engines_that_sample_and_is_refused_by_the_rest(tmp_path):
    request = SpeechRequest(input="Hello.", sampling={"temperature": 0.6, "seed": 4})
    sampler = FakeEngine(sampling=True)
    voicing = make_synthesizer(sampler, data_dir=tmp_path).prepare(request).voicing
    assert voicing.options.sampling == Sampling(temperature=0.6, seed=4)

    with pytest.raises(InvalidRequestError) as caught:
        make_synthesizer(FakeEngine(), data_dir=tmp_path).prepare(request)
    assert (caught.value.param, caught.value.code) == ("sampling", "sampling_not_supported")
    with pytest.raises(ValueError, match="temperature"):
        SpeechRequest(input="Hello.", sampling={"temperature": 0})


async def test_volume_multiplier_scales_the_output_and_clips_it():
    engine = FakeEngine()  # a tone of amplitude 0.5
    synthesizer = make_synthesizer(engine)
    text = "Hello there."
    loud = await collect(synthesizer, SpeechRequest(input=text, volume_multiplier=1.5))
    clipped = await collect(synthesizer, SpeechRequest(input=text, volume_multiplier=4.0))
    plain = await collect(synthesizer, SpeechRequest(input=text))
    assert np.abs(plain).max() == pytest.approx(0.5, abs=0.01)
    assert np.abs(loud).max() == pytest.approx(0.75, abs=0.015)
    assert np.abs(clipped).max() == pytest.approx(1.0) and np.abs(clipped).mean() > 0.6
    np.testing.assert_allclose(loud, plain * 1.5, atol=1e-5)
    # Applied after the cache: one synthesis served all three volumes.
    assert engine.calls == [text]


async def test_a_dialogue_is_spoken_at_its_volume_multiplier():
    synthesizer = make_synthesizer(FakeEngine())
    request = DialogueRequest(
        turns=[{"text": "One turn."}, {"text": "Another turn."}], volume_multiplier=0.5
    )
    dialogue = prepare_dialogue(synthesizer, request)
    rendered = render_dialogue(synthesizer, dialogue)
    chunks = [item.samples async for item in rendered if isinstance(item, AudioChunk)]
    audio = np.concatenate(chunks)
    assert np.abs(audio).max() == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("volume", [0, -1, 4.5, float("nan")])
def test_volume_multiplier_out_of_bounds_is_refused(volume):
    with pytest.raises(ValueError, match="volume_multiplier"):
        SpeechRequest(input="Hi.", volume_multiplier=volume)


@pytest.mark.parametrize(
    ("sent", "language"), [("fr", "fr"), ("en-GB", "en-GB"), ("a", "en-US"), ("z", "zh")]
)
def test_lang_code_is_kokoro_fastapis_name_for_language(sent, language):
    # Kokoro-FastAPI's clients send lang_code, often as Kokoro's one-letter codes.
    assert SpeechRequest.model_validate({"input": "Hi.", "lang_code": sent}).language == language
    assert SpeechRequest(input="Hi.", language=sent).language == language
    both = {"input": "Hi.", "language": "fr", "lang_code": "de"}
    assert SpeechRequest.model_validate(both).language == "fr"  # the field's own name first


def test_a_bad_lang_code_is_refused_naming_lang_code():
    with pytest.raises(pydantic.ValidationError) as caught:
        SpeechRequest.model_validate({"input": "Hi.", "lang_code": "x!"})
    assert caught.value.errors()[0]["loc"] == ("lang_code",)
    # A language the voice does not speak is refused naming the field, as for language
    synthesizer = make_synthesizer(FakeEngine())
    with pytest.raises(InvalidRequestError) as refused:
        synthesizer.prepare(SpeechRequest.model_validate({"input": "Hi.", "lang_code": "f"}))
    assert refused.value.param == "language"
