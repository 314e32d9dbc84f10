"""Streaming speech to text: the embedded voice speaks into a Listener in 20 ms frames."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from voxserve.audio import StreamResampler
from voxserve.audio.transcribe import Transcriber, _ends_repeating
from voxserve.chat.stt import SAMPLE_RATE, Listener, TranscriptEvent
from voxserve.errors import EngineError
from voxserve.request import SpeechRequest

SENTENCE = "Please remember to bring your umbrella tomorrow morning."
FRAME = SAMPLE_RATE * 20 // 1000  # samples in a 20 ms frame


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))  # edit distances to the hypothesis' prefixes
    for i, ref_word in enumerate(ref, 1):
        diagonal, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            substitution = diagonal + (ref_word != hyp_word)
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, substitution)
    return row[-1] / len(ref)


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


class Speech:
    """SENTENCE at 16 kHz, and where its sound ends (Piper leaves a little silence after it)."""

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
        loud = np.nonzero(np.abs(samples) > 0.01)[0]
        self.sound_end = loud[-1] / SAMPLE_RATE


@pytest.fixture(scope="module")
async def speech(piper_synthesizer) -> Speech:
    chunks = [chunk async for chunk in piper_synthesizer.stream(SpeechRequest(input=SENTENCE))]
    audio = np.concatenate([chunk.samples for chunk in chunks])
    return Speech(StreamResampler(chunks[0].sample_rate, SAMPLE_RATE).process(audio, last=True))


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    transcriber = Transcriber()
    transcriber.load()
    return transcriber


class FakeTranscriber:
    """Says the same words for any audio, and remembers how much audio it was given."""

    def __init__(self, text: str = "hello there") -> None:
        self.text = text
        self.heard: list[int] = []
        self.windows: list[float] = []
        self.beams: list[int] = []

    def load(self) -> None:
        pass

    def transcribe_samples(
        self, samples: np.ndarray, *, beam_size: int = 5, window_s: float = 30.0
    ) -> str:
        self.heard.append(len(samples))
        self.windows.append(window_s)
        self.beams.append(beam_size)
        return self.text


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


async def feed(
    listener: Listener, samples: np.ndarray, pace: float = 0.0, settle_partials: bool = False
) -> list[tuple[float, TranscriptEvent]]:
    """Push `samples` in 20 ms frames; returns each event with the stream time it came back at.

    `pace` seconds of wall time pass per frame, so background partials can finish (a
    microphone sends a frame every 20 ms; 0.01 runs the stream at twice real time).
    `settle_partials` waits after each frame for a partial in flight to finish, as on a machine
    fast enough for them: on a busy one a partial may not finish before the utterance does,
    and then none is sent, rightly.
    """
    data = pcm(samples)
    heard: list[tuple[float, TranscriptEvent]] = []
    pushed = 0
    for offset in range(0, len(data), 2 * FRAME):
        frame = data[offset : offset + 2 * FRAME]
        events = await listener.push(frame)
        pushed += len(frame) // 2
        heard += [(pushed / SAMPLE_RATE, event) for event in events]
        if pace:
            await asyncio.sleep(pace)
        if settle_partials and listener._partial:
            await asyncio.wait([listener._partial[1]])  # done, its result left for the listener
    return heard


async def test_an_utterance_gives_speech_started_partials_and_a_final(speech, transcriber):
    listener = Listener(transcriber)
    stream = np.concatenate([silence(1), speech.samples, silence(1)])
    heard = await feed(listener, stream, pace=0.01, settle_partials=True)

    kinds = [event.kind for _, event in heard]
    assert kinds[0] == "speech_started"
    assert kinds[-1] == "final"
    assert "partial" in kinds
    # A tentative transcript comes just before the final if it was heard before the pause ended.
    assert set(kinds[1:-1]) <= {"partial", "tentative"} and "tentative" not in kinds[1:-2], kinds
    speech_end = 1 + speech.sound_end
    started = heard[0][1]
    assert 0.9 <= started.start <= 1.2
    for _, partial in heard[1:-1]:
        assert partial.start == started.start
        assert partial.text and partial.end <= speech_end + 0.1
    emitted_at, final = heard[-1]
    assert word_error_rate(SENTENCE, final.text) <= 0.2, final.text
    if kinds[-2] == "tentative":
        assert (heard[-2][1].text, heard[-2][1].end) == (final.text, final.end)
    assert final.start == started.start
    assert abs(final.end - speech_end) <= 0.3
    assert emitted_at - speech_end <= (500 + 150) / 1000
    assert not listener.speaking


async def test_two_utterances_give_two_finals(speech, transcriber):
    listener = Listener(transcriber)
    stream = np.concatenate([silence(0.5), speech.samples, silence(1), speech.samples, silence(1)])
    heard = await feed(listener, stream)

    finals = [event for _, event in heard if event.kind == "final"]
    assert [event.kind for _, event in heard if event.kind not in ("partial", "tentative")] == [
        "speech_started",
        "final",
        "speech_started",
        "final",
    ]
    for final in finals:
        assert word_error_rate(SENTENCE, final.text) <= 0.2, final.text
    second_start = 0.5 + len(speech.samples) / SAMPLE_RATE + 1
    assert finals[0].end < second_start < finals[1].start + 0.2


QUESTIONS = [
    "What time does the library open?",
    "Can you help me plan a trip?",
    "Tell me something interesting about the ocean.",
    "Good morning!",
]


@pytest.fixture(scope="module")
async def questions(piper_synthesizer) -> list[tuple[str, np.ndarray]]:
    """Each of QUESTIONS at 16 kHz, as the Listener hands an utterance over."""
    spoken = []
    for text in QUESTIONS:
        request = SpeechRequest(input=text)
        chunks = [chunk async for chunk in piper_synthesizer.stream(request)]
        audio = np.concatenate([chunk.samples for chunk in chunks])
        resampled = StreamResampler(chunks[0].sample_rate, SAMPLE_RATE).process(audio, last=True)
        spoken.append((text, np.concatenate([silence(0.3), resampled, silence(0.2)])))
    return spoken


def test_a_short_window_hears_questions_as_well_as_whisper_s_own(questions, transcriber):
    for text, samples in questions:
        short = transcriber.transcribe_samples(samples, window_s=10)
        full = transcriber.transcribe_samples(samples)
        assert word_error_rate(text, short) <= max(word_error_rate(text, full), 0.2), (short, full)


async def test_a_transcript_that_loops_in_a_short_window_is_heard_again_in_whisper_s(
    piper_synthesizer, transcriber
):
    chunks = [chunk async for chunk in piper_synthesizer.stream(SpeechRequest(input="Yes."))]
    audio = np.concatenate([chunk.samples for chunk in chunks])
    yes = StreamResampler(chunks[0].sample_rate, SAMPLE_RATE).process(audio, last=True)
    # In a 5 s window tiny.en hears "Yes." as "Yes. Yes.": the short window gives up on it...
    assert transcriber._transcribe_short(yes, 5, 5.0) is None
    # ...and the clip is heard again in the full window.
    assert transcriber.transcribe_samples(yes, window_s=5) == "Yes."


def test_silence_in_a_short_window_has_no_words(transcriber):
    assert transcriber.transcribe_samples(silence(1.5), window_s=10) == ""


def test_a_transcript_ending_in_a_repeat_is_a_loop():
    assert _ends_repeating([7, 1, 2, 1, 2])
    assert _ends_repeating([5, 6, 7, 5, 6, 7])
    assert not _ends_repeating([3, 3])  # "very very": one token said twice is speech
    assert not _ends_repeating([1, 2, 3, 1, 2])
    assert not _ends_repeating([])


async def test_the_listener_hears_in_its_window_and_beam(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber, window_s=12, beam_size=3, partial_interval_ms=10_000)
    await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]))
    assert transcriber.windows and set(transcriber.windows) == {12}
    assert set(transcriber.beams) == {3}  # no drafts here: they are greedy whatever the beam


def test_warming_up_hears_a_second_in_the_listener_s_window_and_beam():
    transcriber = FakeTranscriber()
    Listener(transcriber, window_s=12, beam_size=3).warm_up()
    assert (transcriber.heard, transcriber.windows, transcriber.beams) == ([SAMPLE_RATE], [12], [3])


async def test_silence_and_low_noise_give_no_events():
    transcriber = FakeTranscriber()
    listener = Listener(transcriber)
    noise = np.random.default_rng(3).normal(0, 10 ** (-50 / 20), 2 * SAMPLE_RATE)
    assert await feed(listener, np.concatenate([silence(2), noise, silence(1)])) == []
    assert transcriber.heard == []


async def test_an_utterance_heard_as_empty_text_emits_no_final(speech):
    listener = Listener(FakeTranscriber(text=""))
    heard = await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]))
    assert [event.kind for _, event in heard] == ["speech_started"]


async def test_a_long_utterance_is_cut_at_the_cap(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber, max_utterance_s=1.0, partial_interval_ms=10_000)
    heard = await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]))

    kinds = [event.kind for _, event in heard]
    assert kinds[:3] == ["speech_started", "final", "speech_started"]
    assert kinds.count("final") >= 2
    # Each final hears at most the cap, plus the pre-roll and tail kept around speech.
    assert max(transcriber.heard) <= 1.6 * SAMPLE_RATE


async def test_reset_drops_a_half_heard_utterance(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber)
    half = speech.samples[: len(speech.samples) // 2]
    heard = await feed(listener, np.concatenate([silence(0.5), half]))
    assert [event.kind for _, event in heard] == ["speech_started"]
    assert listener.speaking

    listener.reset()
    assert not listener.speaking
    assert await feed(listener, silence(1)) == []
    assert transcriber.heard == []


async def test_the_final_is_the_tentative_transcript_heard_once(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber, partial_interval_ms=10_000)
    heard = await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]), 0.002)

    kinds = [event.kind for _, event in heard]
    assert kinds == ["speech_started", "tentative", "final"]
    tentative_at, final_at = heard[1][0], heard[2][0]
    # Heard after a short pause, long before the end of speech is certain.
    assert final_at - tentative_at >= 0.25
    assert len(transcriber.heard) == 1  # the final reuses the tentative transcription


async def test_speech_after_a_short_pause_withdraws_the_tentative_transcript(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber, partial_interval_ms=10_000, end_of_speech_ms=800)
    pause = silence(0.4)  # longer than speculate_after_ms, shorter than the end of speech
    stream = np.concatenate([silence(0.5), speech.samples, pause, speech.samples, silence(1.2)])
    heard = await feed(listener, stream, 0.002)

    kinds = [event.kind for _, event in heard]
    assert kinds == ["speech_started", "tentative", "speech_resumed", "tentative", "final"]
    final = heard[-1][1]
    assert final.end > 0.5 + 2 * len(speech.samples) / SAMPLE_RATE  # the whole utterance
    assert max(transcriber.heard) > 2 * len(speech.samples)


async def test_no_tentative_transcripts_when_speculation_is_off(speech):
    transcriber = FakeTranscriber()
    listener = Listener(transcriber, partial_interval_ms=10_000, speculate_after_ms=None)
    heard = await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]), 0.002)
    assert [event.kind for _, event in heard] == ["speech_started", "final"]


class FailingTranscriber(FakeTranscriber):
    """Fails its first `failures` calls, like a transcription that runs out of memory."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def transcribe_samples(
        self, samples: np.ndarray, *, beam_size: int = 5, window_s: float = 30.0
    ) -> str:
        self.heard.append(len(samples))
        if len(self.heard) <= self.failures:
            raise EngineError("transcription failed", code="stt_failed")
        return self.text


async def test_a_failed_tentative_transcription_is_heard_again_for_the_final(speech):
    transcriber = FailingTranscriber(failures=1)
    listener = Listener(transcriber, partial_interval_ms=10_000)
    heard = await feed(listener, np.concatenate([silence(0.5), speech.samples, silence(1)]), 0.002)
    assert [event.kind for _, event in heard] == ["speech_started", "final"]
    assert heard[-1][1].text == "hello there"
    assert len(transcriber.heard) == 2


async def test_a_failed_final_transcription_raises_and_the_listener_goes_on(speech):
    listener = Listener(FailingTranscriber(failures=2), partial_interval_ms=10_000)
    utterance = np.concatenate([silence(0.5), speech.samples, silence(1)])
    with pytest.raises(EngineError, match="transcription failed"):
        await feed(listener, utterance, 0.002)
    assert not listener.speaking
    heard = await feed(listener, utterance, 0.002)
    assert [event.kind for _, event in heard][-1] == "final"


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"\x00\x01\x02", "even number of bytes"),
        (bytes(2 * SAMPLE_RATE + 2), "at most 1 s"),
        ("not bytes", "must be bytes"),
    ],
)
async def test_a_malformed_frame_is_refused(frame, message):
    listener = Listener(FakeTranscriber())
    with pytest.raises(ValueError, match=message):
        await listener.push(frame)


async def test_speech_sent_as_float32_is_refused_as_the_wrong_sample_format(speech):
    listener = Listener(FakeTranscriber())
    float_frames = speech.samples.astype("<f4").tobytes()
    for offset in range(0, len(float_frames) - 4 * FRAME + 1, 4 * FRAME):  # whole 20 ms frames
        frame = float_frames[offset : offset + 4 * FRAME]
        if np.any(np.frombuffer(frame, "<f4")):  # silence reads the same in any format
            with pytest.raises(ValueError, match="32-bit float.*16-bit"):
                await listener.push(frame)


async def test_real_16_bit_speech_and_noise_are_never_taken_for_float32(speech):
    noise = np.random.default_rng(3).normal(0, 10 ** (-50 / 20), SAMPLE_RATE)
    for samples in (speech.samples, noise, np.abs(speech.samples)):  # rectified: no negatives
        await feed(Listener(FakeTranscriber()), samples)  # no ValueError


async def test_an_empty_frame_is_harmless():
    assert await Listener(FakeTranscriber()).push(b"") == []
