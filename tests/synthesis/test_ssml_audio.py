"""SSML and pause tags rendered by the real Piper joe: pauses measured as silence where they were
written, rates heard as length, spelling, voices switched; and what an engine cannot honour
refused. Dialogue turns and pushed text keep their tags out of the speech."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from tests.fakes import FakeEngine, fake_voicing, make_synthesizer
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.audio.voice_transform import median_pitch
from voxserve.engines.base import Capabilities, Voice
from voxserve.errors import InvalidRequestError
from voxserve.request import DialogueRequest, SpeechRequest
from voxserve.synthesis.dialogue import prepare_dialogue
from voxserve.synthesis.plan import PlanOptions
from voxserve.synthesis.synthesizer import SpokenSegment, Synthesizer, iterate
from voxserve.synthesis.text_stream import TextStream

WINDOW = 0.01  # seconds of audio per loudness measurement


@dataclass
class Rendered:
    samples: np.ndarray
    rate: int
    words: list[WordTiming]
    spans: list[SpokenSegment]

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def longest_silence(self) -> tuple[float, float]:
        """(start, end) in seconds of the longest run of quiet 10 ms windows."""
        size = int(self.rate * WINDOW)
        frames = len(self.samples) // size
        loudness = np.sqrt((self.samples[: frames * size].reshape(frames, size) ** 2).mean(1))
        best, start = (0, 0), None
        for index, quiet in enumerate([*(loudness < 0.01), False]):
            if quiet and start is None:
                start = index
            elif not quiet and start is not None:
                best = max(best, (start, index), key=lambda run: run[1] - run[0])
                start = None
        return best[0] * WINDOW, best[1] * WINDOW

    def word(self, text: str) -> WordTiming:
        return next(word for word in self.words if word.text.strip(".,") == text)

    def silence_between(self, before: str, after: str) -> float:
        """The longest silence's length, checked to lie between words ``before`` and ``after``
        (a segment's last word is timed to include the quiet Piper ends it with: the silence
        is checked to start after that word starts, and end before the next one ends)."""
        start, end = self.longest_silence()
        assert self.word(before).start < start and end < self.word(after).end
        return end - start

    def between(self, first: str, last: str) -> float:
        """Seconds from the start of word ``first`` to the end of ``last``."""
        return self.word(last).end - self.word(first).start


def render(synthesizer: Synthesizer, text: str, **fields) -> Rendered:
    prepared = synthesizer.prepare(SpeechRequest(input=text, voice="joe", **fields))

    async def collect() -> Rendered:
        rendered = Rendered(np.zeros(0, np.float32), prepared.sample_rate, [], [])
        pieces = []
        items = synthesizer.render(
            iterate(prepared.segments),
            [segment.engine for segment in prepared.segments],
            prepared.sample_rate,
        )
        async for item in items:
            if isinstance(item, AudioChunk):
                pieces.append(item.samples)
                rendered.words.extend(item.words)
            else:
                rendered.spans.append(item)
        rendered.samples = np.concatenate(pieces)
        return rendered

    return asyncio.run(collect())


def refused(synthesizer: Synthesizer, text: str, **fields) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.prepare(SpeechRequest(input=text, voice="joe", **fields))
    assert caught.value.param == "input"
    return caught.value.message


def test_a_break_is_that_much_silence_where_it_was_written(piper_synthesizer):
    template = "<speak>One two three. <break time='{}'/> Four five six.</speak>"
    long = render(piper_synthesizer, template.format("1s"))
    none = render(piper_synthesizer, template.format("0ms"))
    # Piper's own quiet either side is the same in both: the difference is the break.
    silence = long.silence_between("three", "Four") - none.silence_between("three", "Four")
    assert silence == pytest.approx(1.0, abs=0.03)
    assert long.seconds - none.seconds == pytest.approx(1.0, abs=0.01)


def test_a_pause_tag_in_plain_text_is_silence_and_is_not_spoken(piper_synthesizer):
    tagged = render(piper_synthesizer, "One two three [pause:1.5s] four five six.")
    assert [word.text for word in tagged.words] == ["One", "two", "three", "four", "five", "six."]
    assert tagged.silence_between("three", "four") > 1.5
    plain = render(piper_synthesizer, "One two three four five six.")
    assert tagged.seconds - plain.seconds > 1.4


def test_a_pause_written_before_anything_is_silence_at_the_start(piper_synthesizer):
    plain = render(piper_synthesizer, "One two three.")
    for text in (
        "<speak><break time='1200ms'/>One two three.</speak>", "[pause:1.2s] One two three."
    ):
        led = render(piper_synthesizer, text)
        assert led.seconds - plain.seconds == pytest.approx(1.2, abs=0.01), text
        assert np.max(np.abs(led.samples[: int(1.1 * led.rate)])) < 1e-3  # silence first
        assert led.word("One").start == pytest.approx(plain.word("One").start + 1.2, abs=0.01)


def test_prosody_x_slow_makes_that_part_longer_and_only_that_part(piper_synthesizer):
    plain = render(piper_synthesizer, "<speak>Quick words here. Slow words there.</speak>")
    slowed = render(
        piper_synthesizer,
        "<speak>Quick words here. <prosody rate='x-slow'>Slow words there.</prosody></speak>",
    )
    assert slowed.between("Slow", "there") > 1.6 * plain.between("Slow", "there")
    # Piper draws its durations (noise_w): the same words, spoken again, vary by ~15%.
    assert slowed.between("Quick", "here") == pytest.approx(plain.between("Quick", "here"), 0.25)


def test_say_as_characters_spells_the_word(piper_synthesizer):
    spelled = render(
        piper_synthesizer, "<speak><say-as interpret-as='characters'>cat</say-as></speak>"
    )
    said = render(piper_synthesizer, "<speak>cat</speak>")
    assert [word.text for word in spelled.words] == ["C,", "A,", "T"]
    assert spelled.seconds > 2 * said.seconds


def test_say_as_and_sub_are_read_as_words_in_one_sentence(piper_synthesizer):
    prepared = piper_synthesizer.prepare(SpeechRequest(input=(
        "<speak>I have <say-as interpret-as='cardinal'>3</say-as> dogs, born "
        "<say-as interpret-as='date' format='dmy'>15/03/2024</say-as>. Call "
        "<sub alias='the World Wide Web Consortium'>W3C</sub>.</speak>"
    )))  # fmt: skip
    assert [segment.text for segment in prepared.segments] == [
        "I have three dogs,",
        "born March fifteenth, twenty twenty-four.",
        "Call the World Wide Web Consortium.",
    ]


def test_a_voice_element_switches_voice_for_its_part(piper_synthesizer):
    rendered = render(
        piper_synthesizer,
        "<speak>This is joe speaking now. <voice name='deep_male'>This is someone deeper "
        "speaking.</voice></speak>",
    )
    joe, deep = rendered.spans
    assert (joe.segment.voicing.voice.id, deep.segment.voicing.voice.id) == ("joe", "deep_male")
    rate = rendered.rate
    first = rendered.samples[round(joe.start * rate) : round(joe.speech_end * rate)]
    second = rendered.samples[round(deep.start * rate) : round(deep.speech_end * rate)]
    assert median_pitch(second, rate) < 0.9 * median_pitch(first, rate)


def test_an_unknown_voice_is_refused_naming_the_element(piper_synthesizer):
    message = refused(piper_synthesizer, "<speak>\n<voice name='nobody'>Hi.</voice></speak>")
    assert message.startswith("SSML line 2, column 1: <voice name='nobody'>: ")


def test_emphasis_is_refused_on_piper_which_cannot_speak_it(piper_synthesizer):
    assert not piper_synthesizer.registry.get("piper").capabilities.emphasis
    message = refused(piper_synthesizer, "<speak>Say it <emphasis>loud</emphasis>.</speak>")
    assert message == "SSML line 1, column 15: engine 'piper' cannot speak <emphasis>"


def test_a_rate_beyond_the_engines_range_and_a_foreign_xml_lang_are_refused(piper_synthesizer):
    message = refused(
        piper_synthesizer, "<speak><prosody rate='x-fast'>Hi</prosody></speak>", speed=4
    )
    assert "speed 7" in message and "0.25-4" in message
    with pytest.raises(InvalidRequestError, match="xml:lang 'de-DE'"):
        piper_synthesizer.prepare(SpeechRequest(input="<speak xml:lang='de-DE'>Hallo</speak>"))


class FixedRateEngine(FakeEngine):
    """An engine without rate control, as CSM or Chatterbox are."""

    name = "fixed"

    def describe(self) -> Capabilities:
        return Capabilities(sample_rate=16000, languages=("en",), max_input_chars=200,
                            speed_range=(1.0, 1.0))  # fmt: skip


def test_prosody_rate_is_refused_on_an_engine_without_rate_control():
    synthesizer = make_synthesizer(FixedRateEngine(), default_engine="fixed")
    with pytest.raises(InvalidRequestError, match="engine 'fixed' has no rate control"):
        synthesizer.prepare(SpeechRequest(input="<speak><prosody rate='slow'>a</prosody></speak>"))


def test_input_format_forces_either_way(piper_synthesizer):
    as_text = piper_synthesizer.prepare(
        SpeechRequest(input="<speak>Hello <b>there</speak>", input_format="text")
    )
    assert [segment.text for segment in as_text.segments] == ["Hello there"]
    message = refused(piper_synthesizer, "Hello <break time='1s'/> there", input_format="ssml")
    assert message == "SSML line 1, column 1: syntax error"  # not a document at all


def test_a_pause_tag_out_of_range_is_refused_naming_input(piper_synthesizer):
    assert "longer than the maximum" in refused(piper_synthesizer, "Wait [pause:11s] for it.")


def test_dialogue_turns_take_pause_tags(tmp_path):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    request = DialogueRequest(turns=[{"speaker": "A", "text": "Well [pause:2s] maybe."},
                                     {"speaker": "B", "text": "Sure."}])  # fmt: skip
    first, second = prepare_dialogue(synthesizer, request).plans
    assert [(s.text, s.pause_after) for s in first] == [("Well", 2.0), ("maybe.", 0.4)]
    with pytest.raises(InvalidRequestError) as caught:
        prepare_dialogue(synthesizer, DialogueRequest(turns=[{"text": "Hi [pause:1h]"}]))
    assert caught.value.param == "turns"


def test_pushed_text_takes_pause_tags_inside_a_sentence():
    plan = PlanOptions(max_chars=200, sentence_pause=0.2, clause_pause=0.05, small_first=False)
    stream = TextStream(fake_voicing(), plan)
    for piece in ["One [pau", "se:750ms] two. ", "Three."]:
        stream.push(piece)
    stream.end()
    assert [(s.text, s.pause_after) for s in stream.released] == [
        ("One", 0.75), ("two.", 0.2), ("Three.", 0.2),
    ]  # fmt: skip


class OtherEngine(FakeEngine):
    """A second engine, at another rate, with a voice of its own."""

    name = "other"

    def voices(self) -> list[Voice]:
        return [Voice("bright", self.name, "bright", "en")]


def test_a_voice_on_another_engine_is_admitted_and_resampled_to_the_requests_rate():
    synthesizer = make_synthesizer(FakeEngine(sample_rate=16000))
    other = OtherEngine(sample_rate=24000)
    synthesizer.registry.register(other)
    request = SpeechRequest(input="<speak>Hi there. <voice name='bright'>And me.</voice></speak>")
    prepared = synthesizer.prepare(request)
    assert [(s.engine.name, s.voicing.sample_rate) for s in prepared.segments] == [
        ("fake", 16000), ("other", 16000),
    ]  # fmt: skip

    async def collect() -> int:
        return sum([len(chunk.samples) async for chunk in synthesizer.stream(prepared)])

    assert asyncio.run(collect()) > 0
    assert other.calls == ["And me."]
