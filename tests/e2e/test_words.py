"""Word timings on every transport, and the X-Ignored-Fields header, on a real server.

Most words come from a synthesizer that puts one on each chunk it yields, spanning the chunk:
then every word is inside the audio, in order, and the last one ends where the audio does,
whatever the transport. Piper's own words are checked over SSE and in JSON.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import wave
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import logged_with_traceback, running
from tests.e2e.test_server import sse_audio, sse_events
from tests.fakes import FakeEngine, FaultySynthesizer, make_synthesizer, without_module
from voxserve.audio import decode_pcm16
from voxserve.audio.frames import AudioChunk, WordTiming
from voxserve.engines.base import Capabilities
from voxserve.runpod_worker import RunpodWorker
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer

TEXT = "One sentence here. And a second one, a little longer than the first."
RATE = 16000


class TimedEngine(FakeEngine):
    """The fake engine, declaring that it times its words (the synthesizer below gives them)."""

    def describe(self) -> Capabilities:
        return replace(super().describe(), word_timings=True)


class WordSynthesizer(Synthesizer):
    """The real synthesizer, with a word on each chunk of audio it yields (``w0``, ``w1``...),
    spanning that chunk in the stream's time."""

    async def render(self, *args, **kwargs) -> AsyncIterator:
        position, count = 0.0, 0
        async with contextlib.aclosing(super().render(*args, **kwargs)) as items:
            async for item in items:
                if isinstance(item, AudioChunk) and len(item.samples):
                    word = WordTiming(f"w{count}", position, position + item.duration)
                    position, count = word.end, count + 1
                    item = replace(item, words=(word,))
                yield item


class FaultyWordSynthesizer(WordSynthesizer, FaultySynthesizer):
    """Words too, and a bug once it has spoken "boom"."""


@pytest.fixture(scope="module")
def synthesizer() -> Synthesizer:
    return make_synthesizer(TimedEngine(sample_rate=RATE, chunks=3), WordSynthesizer)


@pytest.fixture(scope="module")
def url(synthesizer: Synthesizer):
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url


def speak(url: str, **fields) -> httpx.Response:
    body = {"input": TEXT, "response_format": "pcm", "sample_rate": RATE, **fields}
    return httpx.post(f"{url}/v1/audio/speech", json=body, timeout=30)


def check_words(words: list[dict], audio_seconds: float) -> None:
    """In order, each starting where the one before ended, the last ending with the audio."""
    assert len(words) >= 2
    assert [word["word"] for word in words] == [f"w{n}" for n in range(len(words))]
    assert words[0]["start"] == 0.0
    assert all(
        a["end"] == pytest.approx(b["start"], abs=0.002)
        for a, b in zip(words, words[1:], strict=False)
    )
    assert words[-1]["end"] == pytest.approx(audio_seconds, abs=0.002)


@pytest.mark.parametrize("stream", [True, False])
def test_sse_sends_each_chunks_words_before_its_audio(url: str, stream: bool):
    response = speak(url, stream_format="sse", stream=stream)
    assert response.status_code == 200, response.text
    events = sse_events(response)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "speech.audio.words" and kinds[-1] == "speech.audio.done"
    if stream:  # streamed, a pcm chunk is one delta, right after its words
        assert kinds[:-1] == ["speech.audio.words", "speech.audio.delta"] * (len(kinds) // 2)
    words = [word for event in events if event["type"] == "speech.audio.words"
             for word in event["words"]]  # fmt: skip
    check_words(words, decode_pcm16(sse_audio(events), RATE).duration)


def test_a_whole_answer_with_timestamps_is_json_with_the_audio_and_its_words(url: str):
    response = speak(url, stream=False, timestamps=True, response_format="wav")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["format"], body["sample_rate"]) == ("wav", RATE)
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as wav:  # real sizes: whole
        seconds = wav.getnframes() / wav.getframerate()
    check_words(body["timestamps"], seconds)


def test_timestamps_cannot_come_with_a_streamed_audio_body(url: str):
    response = speak(url, timestamps=True)  # stream defaults to true
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "timestamps"
    assert response.headers["x-should-retry"] == "false"


async def test_timestamps_are_refused_for_an_engine_that_cannot_time_its_words(monkeypatch):
    # An engine that times no words has them aligned, unless the align extra is missing.
    without_module(monkeypatch, "pocketsphinx")
    untimed = make_synthesizer(FakeEngine(sample_rate=RATE))
    with running(create_app(synthesizer=untimed)) as url:
        response = speak(url, stream=False, timestamps=True)
        assert response.status_code == 400
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("timestamps", "word_timings_not_supported")
        assert speak(url, stream_format="sse").status_code == 200  # SSE: no words, no refusal
    job = {"id": "untimed", "input": {"prompt": TEXT, "timestamps": True}}
    output = await RunpodWorker(untimed).handle(job)
    assert output["error"].startswith("timestamps: engine 'fake' does not time its words, and")


def test_without_timestamps_a_whole_answer_is_plain_audio(url: str):
    response = speak(url, stream=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("audio/pcm")


def test_the_text_websocket_sends_words_before_their_audio(url: str):
    ws_url = url.replace("http://", "ws://") + "/v1/audio/speech/stream"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "start", "response_format": "pcm"}))
        ws.send(json.dumps({"type": "text", "text": TEXT}))
        ws.send(json.dumps({"type": "end"}))
        messages: list = []
        while True:
            message = ws.recv(timeout=30)
            messages.append(message if isinstance(message, bytes) else json.loads(message))
            if isinstance(messages[-1], dict) and messages[-1]["type"] == "audio_stream_stop":
                break
    kinds = ["audio" if isinstance(m, bytes) else m["type"] for m in messages]
    assert kinds[0] == "audio_stream_start" and kinds[-1] == "audio_stream_stop"
    first_audio = kinds.index("audio")
    assert kinds[first_audio - 1] == "words"  # the first audio's words just before it
    words = [word for m in messages if isinstance(m, dict) and m["type"] == "words"
             for word in m["words"]]  # fmt: skip
    audio = b"".join(m for m in messages if isinstance(m, bytes))
    check_words(words, decode_pcm16(audio, RATE).duration)


async def test_a_runpod_job_gets_its_timestamps_when_it_asks(synthesizer: Synthesizer):
    worker = RunpodWorker(synthesizer)
    asked = await worker.handle({"id": "words", "input": {"prompt": TEXT, "timestamps": True}})
    check_words(asked["timestamps"], asked["duration"])
    plain = await worker.handle({"id": "plain", "input": {"prompt": TEXT}})
    assert "timestamps" not in plain and plain["duration"] == asked["duration"]


PLAIN = "Good morning. This is a test of the speech server."


def test_piper_times_the_words_it_speaks_over_sse_and_in_json(server_url: str):
    def check_spoken(words: list[dict], seconds: float) -> None:
        assert [word["word"] for word in words] == PLAIN.split()
        assert all(0 <= word["start"] < word["end"] <= seconds + 0.01 for word in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:], strict=False))

    body = {"input": PLAIN, "voice": "joe", "response_format": "pcm", "sample_rate": 24000}
    url = f"{server_url}/v1/audio/speech"
    events = sse_events(httpx.post(url, json={**body, "stream_format": "sse"}, timeout=60))
    words = [word for event in events if event["type"] == "speech.audio.words"
             for word in event["words"]]  # fmt: skip
    check_spoken(words, decode_pcm16(sse_audio(events), 24000).duration)
    whole = httpx.post(url, json={**body, "stream": False, "timestamps": True}, timeout=60).json()
    check_spoken(
        whole["timestamps"], decode_pcm16(base64.b64decode(whole["audio"]), 24000).duration
    )


@pytest.mark.parametrize("stream", [True, False])
def test_fields_an_engine_ignores_are_named_in_a_header(url: str, stream: bool):
    ignored = speak(url, instructions="Speak cheerfully.", stream=stream)
    assert ignored.status_code == 200
    assert ignored.headers["x-ignored-fields"] == "instructions"
    assert "x-ignored-fields" not in speak(url, stream=stream).headers


def test_a_bug_mid_sse_stream_ends_it_with_an_internal_error_event(caplog):
    synthesizer = make_synthesizer(TimedEngine(sample_rate=RATE), FaultyWordSynthesizer)
    with running(create_app(synthesizer=synthesizer)) as url:
        response = speak(url, input="It goes boom here. This is never spoken.", stream_format="sse")
    assert response.status_code == 200  # the first sentence's audio had gone out
    events = sse_events(response)
    assert events[-1]["type"] == "error"
    assert events[-1]["error"]["code"] == "internal_error"
    assert "speech.audio.delta" in {event["type"] for event in events}
    assert logged_with_traceback(caplog, RuntimeError)


def test_a_dialogue_takes_timestamps_and_names_the_fields_its_engine_ignores(url: str):
    # The dialogue route had no stream or timestamps field, and no X-Ignored-Fields
    body = {
        "turns": [{"speaker": "A", "text": "Hello there."}, {"speaker": "B", "text": "Hi."}],
        "response_format": "wav",
        "sample_rate": RATE,
        "instructions": "Speak cheerfully.",
    }
    whole_body = {**body, "stream": False, "timestamps": True}
    whole = httpx.post(f"{url}/v1/audio/dialogue", json=whole_body, timeout=30)
    assert whole.status_code == 200, whole.text
    assert whole.headers["x-ignored-fields"] == "instructions"
    with wave.open(io.BytesIO(base64.b64decode(whole.json()["audio"]))) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    words = whole.json()["timestamps"]
    assert words and words[-1]["end"] <= seconds + 1e-3
    streamed = httpx.post(f"{url}/v1/audio/dialogue", json={**body, "timestamps": True}, timeout=30)
    assert (streamed.status_code, streamed.json()["error"]["param"]) == (400, "timestamps")
