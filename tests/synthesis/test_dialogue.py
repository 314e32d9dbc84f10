"""Dialogue rendering on fake engines: voice assignment, timings, pauses, mixed engines."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import Voice
from voxserve.errors import InvalidRequestError, OverloadedError
from voxserve.request import DialogueRequest, SpeechRequest
from voxserve.synthesis.dialogue import TurnTiming, prepare_dialogue, render_dialogue
from voxserve.voices.profile import VoiceProfile


class OtherEngine(FakeEngine):
    """A second engine, at another sample rate, with a voice of its own."""

    name = "other"

    def voices(self) -> list[Voice]:
        return [Voice("bright", self.name, "bright", "en")]


def dialogue_synthesizer(tmp_path, **settings):
    synthesizer = make_synthesizer(
        FakeEngine(sample_rate=16000), data_dir=tmp_path,
        speakers={"fake": ["tone", "low"]}, **settings,
    )  # fmt: skip
    synthesizer.registry.register(OtherEngine(sample_rate=24000))
    return synthesizer


async def render(synthesizer, request):
    dialogue = prepare_dialogue(synthesizer, request)
    chunks, timings = [], []
    async for item in render_dialogue(synthesizer, dialogue):
        (timings if isinstance(item, TurnTiming) else chunks).append(item)
    return dialogue, chunks, timings


async def test_voices_come_from_the_turn_then_profiles_then_the_mapping_then_the_pool(tmp_path):
    synthesizer = dialogue_synthesizer(tmp_path)
    synthesizer.resolver.voices.create(VoiceProfile(id="alice", display_name="Alice", voice="low"))
    request = DialogueRequest(
        voice="tone",
        voices={"BOB": "bright", "alice": "tone"},  # a profile wins over the mapping
        turns=[
            {"text": "Narrated."},
            {"speaker": "Alice", "text": "Hi."},
            {"speaker": "Bob", "text": "Hello."},
            {"speaker": "Carol", "text": "Hey."},
            {"speaker": "Dan", "text": "Yo.", "voice": "tone"},
        ],
    )
    dialogue, _, timings = await render(synthesizer, request)
    assert [(t.speaker, t.voice) for t in timings] == [
        ("", "tone"), ("Alice", "low"), ("Bob", "bright"), ("Carol", "low"), ("Dan", "tone"),
    ]  # fmt: skip
    assert dialogue.turns[2][1].engine.name == "other"


async def test_turns_are_timed_with_pauses_and_resampled_to_one_rate(tmp_path):
    synthesizer = dialogue_synthesizer(tmp_path)
    request = DialogueRequest(
        voices={"B": "bright"}, pause_between_turns=0.5,
        turns=[{"speaker": "A", "text": "First turn."}, {"speaker": "B", "text": "Second one."}],
    )  # fmt: skip
    dialogue, chunks, timings = await render(synthesizer, request)
    assert dialogue.sample_rate == 16000
    assert {chunk.sample_rate for chunk in chunks} == {16000}
    total = sum(len(chunk.samples) for chunk in chunks) / 16000
    assert timings[0].start == 0
    assert timings[1].start == pytest.approx(timings[0].end + 0.5, abs=0.01)
    assert timings[1].end == pytest.approx(total, abs=0.01)
    assert timings[0].end == pytest.approx(len("First turn.") * 0.01, abs=0.01)
    assert isinstance(chunks[0], AudioChunk)


def test_a_bad_turn_is_refused_before_any_audio_naming_the_turn(tmp_path):
    synthesizer = dialogue_synthesizer(tmp_path)
    request = DialogueRequest(turns=[{"speaker": "A", "text": "Hi."}], voices={"a": "nobody"})
    with pytest.raises(InvalidRequestError) as caught:
        prepare_dialogue(synthesizer, request)
    assert caught.value.param == "turns.0.voice" and "turn 1 ('A')" in caught.value.message
    with pytest.raises(InvalidRequestError, match="maximum"):
        prepare_dialogue(
            dialogue_synthesizer(tmp_path, max_dialogue_chars=5),
            DialogueRequest(turns=[{"text": "Far too long."}]),
        )


def test_a_dialogue_that_reads_too_long_is_refused_before_any_audio(tmp_path):
    # Digits are read out about five times longer than written: 400 of them within the written
    # limit (500) read past the spoken one (500 * 8192 / 4096 = 1000), so they are refused
    synthesizer = dialogue_synthesizer(tmp_path, max_dialogue_chars=500)
    digits = DialogueRequest(turns=[{"speaker": "A", "text": "1" * 200}, {"text": "2" * 200}])
    with pytest.raises(InvalidRequestError, match="reads as") as caught:
        prepare_dialogue(synthesizer, digits)
    assert caught.value.param == "turns" and caught.value.code == "input_too_long"
    words = DialogueRequest(turns=[{"speaker": "A", "text": "Hello there. " * 30}])
    assert prepare_dialogue(synthesizer, words).plans[0]  # as long written, but not spelled out


async def test_a_dialogue_holds_its_place_on_the_engine_from_first_turn_to_last(tmp_path):
    # With one stream and one queue place, a dialogue asked for admission again at every turn:
    # between its turns the place went to a waiting request, another one filled the queue, and
    # turn 2 was refused (429) after turn 1's audio had gone out in a 200.
    synthesizer = make_synthesizer(
        FakeEngine(delay=0.02), data_dir=tmp_path, max_streams_per_engine=1, max_queue=1
    )
    request = DialogueRequest(turns=[{"speaker": "A", "text": "One. Two."}, {"text": "Three."}])
    dialogue = prepare_dialogue(synthesizer, request)

    async def speak(text: str) -> list:
        return [chunk async for chunk in synthesizer.stream(SpeechRequest(input=text))]

    waiting = third = None
    timings = []
    async for item in render_dialogue(synthesizer, dialogue):
        if waiting is None and isinstance(item, AudioChunk):
            waiting = asyncio.create_task(speak("Waiting."))  # queued behind the dialogue
            await asyncio.sleep(0.01)
        if isinstance(item, TurnTiming):
            timings.append(item)
            if third is None:  # between the turns, another client asks
                third = asyncio.create_task(speak("Third."))
                await asyncio.sleep(0.01)
    assert [timing.index for timing in timings] == [0, 1]
    with pytest.raises(OverloadedError):
        await third  # the queue holds the waiting request: the dialogue never gave up its place
    assert await waiting
