"""Words for engines that time none: real Piper audio with its words withheld, aligned after each
segment, on the synthesizer, over HTTP (SSE, JSON with captions, Kokoro-FastAPI's captioned
speech route) and with the ``openai`` SDK unaffected."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace

import httpx
import openai
import pytest

from tests.conftest import running
from tests.e2e.test_server import sse_audio, sse_events
from tests.fakes import without_module
from voxserve.audio import decode_audio, decode_pcm16
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.config import Settings
from voxserve.engines.base import Capabilities, SynthesisOptions
from voxserve.engines.piper import PiperEngine
from voxserve.engines.registry import EngineRegistry
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.synthesis.word_alignment import interpolated, matched

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs far away, into the woods."
RATE = 22050


class WordlessPiper(PiperEngine):
    """Piper's real audio, its words withheld: an engine that times none."""

    name = "wordless"

    def describe(self) -> Capabilities:
        return replace(super().describe(), word_timings=False)

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        for chunk in super().synthesize(text, options):
            yield replace(chunk, words=())


@pytest.fixture(scope="module")
def synthesizer(settings: Settings) -> Synthesizer:
    settings = settings.model_copy(update={"default_engine": "wordless", "default_voice": "joe"})
    registry = EngineRegistry(settings)
    registry.register(WordlessPiper(data_dir=settings.data_path))
    return Synthesizer(settings, registry)


@pytest.fixture(scope="module")
def url(synthesizer: Synthesizer) -> Iterator[str]:
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url


def speak(url: str, path: str = "/v1/audio/speech", **fields) -> httpx.Response:
    body = {"input": TEXT, "response_format": "pcm", "sample_rate": RATE, **fields}
    return httpx.post(f"{url}{path}", json=body, timeout=60)


def check_words(words: list[dict], seconds: float, start: str = "start", end: str = "end"):
    """Every written word, in order, each inside the audio and none before the last."""
    assert [word["word"] for word in words] == TEXT.split()
    assert all(0 <= w[start] <= w[end] <= seconds + 0.002 for w in words)
    assert all(a[end] <= b[start] + 0.002 for a, b in zip(words, words[1:], strict=False))
    assert words[-1][start] > seconds / 2  # spread over the audio, not bunched at its start


# Matching heard words to written ones


def test_heard_words_match_the_written_ones_and_the_rest_are_interpolated():
    written = ["Das", "Wetter", "ist", "heute,", "sehr", "schön."]
    heard = [  # a word heard that was not written, where one was; a word not heard at all
        WordTiming("das", 0.1, 0.3), WordTiming("äh", 0.3, 0.4), WordTiming("Weter", 0.4, 0.7),
        WordTiming("ist", 0.7, 0.9), WordTiming("sehr", 1.5, 1.8), WordTiming("Schön!", 1.8, 2.2),
    ]  # fmt: skip
    spans = matched(written, heard)
    assert spans == [(0.1, 0.3), None, (0.7, 0.9), None, (1.5, 1.8), (1.8, 2.2)]
    words = interpolated(written, spans, duration=2.5)
    assert [word.text for word in words] == written
    assert (words[1].start, words[1].end) == (0.3, 0.7)  # between its neighbours
    assert (words[3].start, words[3].end) == (0.9, 1.5)
    assert all(a.end <= b.start for a, b in zip(words, words[1:], strict=False))
    assert matched(["colour"], [WordTiming("color", 0.0, 1.0)]) == [(0.0, 1.0)]  # spelt apart


def test_words_with_nothing_matched_spread_over_the_audio_by_length():
    words = interpolated(["a", "bbb"], [None, None], duration=2.0)
    assert [(w.start, w.end) for w in words] == [(0.0, 0.5), (0.5, 2.0)]


# The synthesizer


async def test_aligned_words_come_in_stream_time_only_when_asked(synthesizer: Synthesizer):
    asked = [c async for c in synthesizer.stream(SpeechRequest(input=TEXT, timestamps=True))]
    words = [word for chunk in asked for word in chunk.words]
    seconds = sum(chunk.duration for chunk in asked)
    check_words([word.to_dict() for word in words], seconds)
    # The second sentence is a segment of its own: its words were shifted past the first's.
    second = TEXT.split().index("Then")
    assert words[second].start > words[second - 1].end - 0.002
    plain = [c async for c in synthesizer.stream(SpeechRequest(input=TEXT))]
    assert not any(chunk.words for chunk in plain)  # nobody asked: nothing aligned


# HTTP


def test_sse_with_timestamps_sends_aligned_words_before_their_audio(url: str):
    response = speak(url, stream_format="sse", timestamps=True)
    assert response.status_code == 200, response.text
    events = sse_events(response)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "speech.audio.words" and kinds[-1] == "speech.audio.done"
    words = [w for e in events if e["type"] == "speech.audio.words" for w in e["words"]]
    check_words(words, decode_pcm16(sse_audio(events), RATE).duration)


def test_a_whole_answer_with_captions_is_json_with_a_vtt_of_the_words(url: str):
    response = speak(url, stream=False, captions="vtt")
    assert response.status_code == 200, response.text
    body = response.json()
    seconds = decode_pcm16(base64.b64decode(body["audio"]), RATE).duration
    check_words(body["timestamps"], seconds)
    assert body["captions_format"] == "vtt"
    vtt = body["captions"]
    assert vtt.startswith("WEBVTT\n\n")
    cues = vtt.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    assert len(cues) >= 2  # a cue per sentence at least
    assert " ".join(" ".join(cue.split("\n")[1:]) for cue in cues) == TEXT


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"stream": False, "captions": "ass"}, "captions"), ({"captions": "srt"}, "captions")],
)
def test_captions_are_checked(url: str, fields: dict, param: str):
    response = speak(url, **fields)  # a format of none, or a streamed answer
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_without_the_align_extra_timestamps_are_refused(url: str, monkeypatch):
    without_module(monkeypatch, "pocketsphinx")  # the server runs in this process
    response = speak(url, stream=False, timestamps=True)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("timestamps", "word_timings_not_supported")
    assert "voxserve[align]" in error["message"]


def test_captioned_speech_streams_lines_of_audio_and_words(url: str):
    with httpx.stream(
        "POST", f"{url}/dev/captioned_speech", timeout=60,
        json={"model": "wordless", "input": TEXT, "voice": "joe", "response_format": "pcm"},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) >= 2  # streamed: a line per piece of audio
    assert {line["audio_format"] for line in lines} == {"audio/pcm"}
    audio = b"".join(base64.b64decode(line["audio"]) for line in lines)
    words = [word for line in lines for word in line["timestamps"]]
    assert set(words[0]) == {"word", "start_time", "end_time"}
    seconds = decode_pcm16(audio, 24000).duration  # pcm: OpenAI's 24 kHz, as the speech route
    check_words(words, seconds, "start_time", "end_time")


def test_captioned_speech_whole_and_without_timestamps(url: str):
    fields = {"input": TEXT, "response_format": "wav", "stream": False}
    whole = httpx.post(f"{url}/dev/captioned_speech", json=fields, timeout=60).json()
    assert base64.b64decode(whole["audio"])[:4] == b"RIFF"
    assert whole["audio_format"] == "audio/wav"
    assert [w["word"] for w in whole["timestamps"]] == TEXT.split()
    bare = httpx.post(
        f"{url}/dev/captioned_speech", timeout=60,
        json={**fields, "return_timestamps": False, "normalization_options": {"normalize": False}},
    ).json()  # fmt: skip
    assert bare["timestamps"] == []


def test_the_openai_sdk_still_gets_plain_audio(url: str):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)
    assert decode_audio(speech.read()).duration > 2.0  # the whole text, as MP3


def test_a_dialogue_with_captions_has_every_turns_words_aligned(url: str):
    first, second = TEXT.split(". ")
    turns = [{"speaker": "Host", "text": first + "."}, {"speaker": "Guest", "text": second}]
    response = httpx.post(
        f"{url}/v1/audio/dialogue", timeout=60,
        json={"turns": turns, "stream": False, "captions": "srt", "response_format": "pcm",
              "sample_rate": RATE},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    seconds = decode_pcm16(base64.b64decode(body["audio"]), RATE).duration
    check_words(body["timestamps"], seconds)
    guest = TEXT.split().index("Then")  # the second turn's words come after the first's pause
    assert body["timestamps"][guest]["start"] >= body["timestamps"][guest - 1]["end"] + 0.3
    assert body["captions"].startswith("1\n00:00:00,")
