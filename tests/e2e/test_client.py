"""voxserve.client against the real server: HTTP and both WebSocket protocols, sync and async."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from tests.conftest import free_port, running
from voxserve.audio import AudioChunk, decode_audio, decode_pcm16
from voxserve.client import AsyncClient, Client, ClientError
from voxserve.client._protocol import ws_url

NATIVE_RATE = 22050
PCM_RATE = 24000  # pcm over HTTP is OpenAI's; the WebSocket protocols keep the engine's rate
SENTENCES = ["Hello there.", "How are you today?", "The weather is lovely."]
TEXT = " ".join(SENTENCES)
# Tokens as an LLM streams them: words with their leading space, punctuation on its own.
TOKENS = ["Hello", " there", ".", " How", " are", " you", " today", "?"]
TOKENS += [" The", " weather", " is", " lovely", "."]


@pytest.fixture(scope="module")
def client(server_url: str) -> Iterator[Client]:
    with Client(server_url) as client:
        yield client


@pytest.fixture(scope="module")
def text_seconds(client: Client) -> float:
    """How long the server speaks TEXT, measured over plain HTTP."""
    return decode_pcm16(client.speech(TEXT, response_format="pcm"), PCM_RATE).duration


def plausible(seconds: float, reference: float) -> bool:
    # Piper samples its phoneme durations, so one text varies by tens of ms per request.
    return abs(seconds - reference) < 0.15 * reference + 0.3


def joined(chunks: list[AudioChunk]) -> AudioChunk:
    rates = {chunk.sample_rate for chunk in chunks}
    assert len(rates) == 1
    return AudioChunk(np.concatenate([chunk.samples for chunk in chunks]), rates.pop())


# HTTP, sync


def test_speech_returns_a_complete_file(client: Client):
    audio = decode_audio(client.speech("Hello there.", response_format="wav", sample_rate=16000))
    assert audio.sample_rate == 16000
    assert 0.4 < audio.duration < 3.0
    assert np.abs(audio.samples).max() > 0.05  # speech, not silence


def test_speech_defaults_to_mp3(client: Client, text_seconds: float):
    audio = decode_audio(client.speech(TEXT))
    assert plausible(audio.duration, text_seconds)


def test_stream_speech_yields_audio_as_it_is_made(client: Client, text_seconds: float):
    parts = list(client.stream_speech(TEXT, response_format="pcm", voice="alloy"))
    assert len(parts) > 1
    assert plausible(decode_pcm16(b"".join(parts), PCM_RATE).duration, text_seconds)


def test_an_unknown_voice_is_a_client_error(client: Client):
    with pytest.raises(ClientError) as caught:
        client.speech("Hi.", voice="nobody")
    assert (caught.value.status, caught.value.param) == (400, "voice")
    assert caught.value.code == "voice_not_found"
    assert "nobody" in caught.value.message
    with pytest.raises(ClientError) as caught:
        next(client.stream_speech("Hi.", voice="nobody"))
    assert (caught.value.status, caught.value.param) == (400, "voice")


def test_bad_fields_name_themselves(client: Client):
    with pytest.raises(ClientError) as caught:
        client.speech("Hi.", speed=9.0)
    assert (caught.value.status, caught.value.param) == (400, "speed")


def test_models_voices_and_health(client: Client):
    models = client.models()
    assert "piper" in [model["id"] for model in models["data"]]
    voices = client.voices()
    assert "joe" in [voice["id"] for voice in voices["voices"]]
    assert voices["aliases"]["alloy"] == "joe"
    assert client.health()["status"] == "ok"


def test_network_failures_are_client_errors():
    dead = f"http://127.0.0.1:{free_port()}"
    with Client(dead, timeout=5) as client:
        with pytest.raises(ClientError) as caught:
            client.health()
        assert (caught.value.status, caught.value.code) == (None, "connection_error")
        assert isinstance(caught.value.__cause__, httpx.ConnectError)
        with pytest.raises(ClientError) as caught:
            client.get_server_info()
        assert (caught.value.status, caught.value.code) == (None, "connection_error")
        with pytest.raises(ClientError):
            next(iter(client.speak_stream(["Hi."])))


def test_api_key_is_sent_as_bearer_and_429_carries_retry_after():
    app = FastAPI()

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"authorization": request.headers.get("authorization")})

    @app.post("/v1/audio/speech")
    async def busy() -> JSONResponse:
        error = {"message": "busy", "type": "rate_limit_error", "param": None, "code": "overloaded"}
        return JSONResponse({"error": error}, status_code=429, headers={"Retry-After": "7"})

    @app.websocket("/ws/tts")
    async def info(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        authorization = websocket.headers.get("authorization")
        await websocket.send_json({"status": "success", "authorization": authorization})

    with running(app) as url, Client(url, api_key="sesame") as client:
        assert client.health() == {"authorization": "Bearer sesame"}
        assert client.get_server_info()["authorization"] == "Bearer sesame"
        with pytest.raises(ClientError) as caught:
            client.speech("Hi.")
        assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
            429,
            "overloaded",
            7,
        )


def test_websocket_urls_follow_the_base_url():
    assert ws_url("http://host:8880", "/ws/tts") == "ws://host:8880/ws/tts"
    assert ws_url("https://host/prefix/", "/ws/tts") == "wss://host/prefix/ws/tts"
    with pytest.raises(ValueError):
        Client("ftp://host")


# WebSocket text in, audio out, sync


def test_speak_stream_speaks_tokens(client: Client, text_seconds: float):
    with client.speak_stream(TOKENS, voice="joe") as stream:
        chunks = list(stream)
    assert stream.sample_rate == NATIVE_RATE
    assert all(isinstance(chunk, AudioChunk) for chunk in chunks)
    assert plausible(joined(chunks).duration, text_seconds)
    assert [segment.text for segment in stream.segments] == SENTENCES
    assert [segment.index for segment in stream.segments] == [0, 1, 2]
    ends = [0] + [segment.end_ms for segment in stream.segments]
    assert all(a <= b for a, b in zip(ends, ends[1:], strict=False))
    assert ends[-1] == pytest.approx(joined(chunks).duration * 1000, abs=50)


def test_speak_stream_resamples_to_the_announced_rate(client: Client):
    chunks = list(client.speak_stream("Hello there.", sample_rate=16000))
    assert {chunk.sample_rate for chunk in chunks} == {16000}
    assert 0.4 < joined(chunks).duration < 3.0


def test_speak_stream_plays_while_text_still_arrives(client: Client):
    first_audio = threading.Event()
    heard_early: list[bool] = []

    def tokens() -> Iterator[str]:
        yield "Hello there. How"  # the next sentence has begun, so the first one is complete
        heard_early.append(first_audio.wait(timeout=10))
        yield " are you?"

    stream = client.speak_stream(tokens())
    for _ in stream:
        first_audio.set()
    assert heard_early == [True]
    assert [segment.text for segment in stream.segments] == ["Hello there.", "How are you?"]


def test_speak_stream_encoded_formats_yield_bytes(client: Client):
    parts = list(client.speak_stream(["Hello", " there."], response_format="wav"))
    assert all(isinstance(part, bytes) for part in parts)
    assert 0.4 < decode_audio(b"".join(parts)).duration < 3.0


def test_speak_stream_errors_are_client_errors(client: Client):
    with pytest.raises(ClientError) as caught:
        list(client.speak_stream(["Hi."], voice="nobody"))
    assert (caught.value.status, caught.value.param) == (None, "voice")


def test_speak_stream_raises_what_the_text_source_raised(client: Client):
    def tokens() -> Iterator[str]:
        yield "Hello"
        raise RuntimeError("the model crashed")

    with pytest.raises(RuntimeError, match="the model crashed"):
        list(client.speak_stream(tokens()))


def test_speak_stream_can_stop_early(client: Client):
    def endless() -> Iterator[str]:  # a text source that never ends
        while True:
            time.sleep(0.01)
            yield "This sentence is spoken again and again. "

    with client.speak_stream(endless()) as stream:
        assert isinstance(next(stream), AudioChunk)
    deadline = time.monotonic() + 5
    while any(thread.name == "voxserve-text-sender" for thread in threading.enumerate()):
        assert time.monotonic() < deadline, "the sending thread outlived its stream"
        time.sleep(0.01)
    assert list(client.speak_stream("Still fine."))


def fake_speech_stream(answer_end: bool) -> FastAPI:
    """Starts the audio (1.5 samples, then 0.5), then answers ``end`` with a stop, or never."""
    app = FastAPI()

    @app.websocket("/v1/audio/speech/stream")
    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_json()
        start = {"type": "audio_stream_start", "sample_rate": 8000, "format": "pcm"}
        await websocket.send_json(start)
        await websocket.send_bytes(b"\x00\x40\x00")
        await websocket.send_bytes(b"\xc0")
        while (await websocket.receive_json())["type"] != "end":
            pass
        if answer_end:
            await websocket.send_json({"type": "audio_stream_stop", "cancelled": False})
        await websocket.receive()  # until the client goes

    return app


def test_speak_stream_times_out_only_once_all_text_is_sent():
    def slow_tokens() -> Iterator[str]:  # slower than the timeout: not the server's fault
        for token in ["Hello", " there."]:
            time.sleep(0.5)
            yield token

    with running(fake_speech_stream(answer_end=True)) as url, Client(url, timeout=0.3) as client:
        chunks = list(client.speak_stream(slow_tokens()))
    assert [chunk.samples.tolist() for chunk in chunks] == [[0.5], [-0.5]]  # halves joined

    with running(fake_speech_stream(answer_end=False)) as url, Client(url, timeout=0.3) as client:
        began = time.monotonic()
        with pytest.raises(ClientError) as caught:
            list(client.speak_stream(["Hello there."]))
        assert caught.value.code == "timeout"
        assert time.monotonic() - began < 2


# WebSocket TTS-provider protocol, sync


def test_get_server_info(client: Client):
    info = client.get_server_info()
    assert info["status"] == "success"
    assert "piper" in [model["name"] for model in info["available_models"]]
    assert info["speaker_mapping"]


def test_generate_speech_writes_a_wav(client: Client, tmp_path: Path):
    path = client.generate_speech("Hello there.", tmp_path / "hello.wav", sample_rate=24000)
    assert path == tmp_path / "hello.wav"
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 24000
        assert 0.4 < wav.getnframes() / 24000 < 3.0
    assert [entry.name for entry in tmp_path.iterdir()] == ["hello.wav"]


def test_generate_speech_in_an_unsupported_language_writes_nothing(client: Client, tmp_path: Path):
    with pytest.raises(ClientError) as caught:
        client.generate_speech("Guten Tag.", tmp_path / "hallo.wav", lang="de-DE")
    assert (caught.value.status, caught.value.code) == (None, "unsupported_language")
    assert list(tmp_path.iterdir()) == []


# Async


async def test_async_http(server_url: str, text_seconds: float):
    async with AsyncClient(server_url) as client:
        audio = decode_audio(await client.speech(TEXT, response_format="flac"))
        assert plausible(audio.duration, text_seconds)
        parts = [part async for part in client.stream_speech(TEXT, response_format="pcm")]
        assert len(parts) > 1
        assert plausible(decode_pcm16(b"".join(parts), PCM_RATE).duration, text_seconds)
        assert "piper" in [model["id"] for model in (await client.models())["data"]]
        assert (await client.voices())["aliases"]["alloy"] == "joe"
        assert (await client.health())["status"] == "ok"


async def test_async_errors(server_url: str):
    async with AsyncClient(server_url) as client:
        with pytest.raises(ClientError) as caught:
            await client.speech("Hi.", voice="nobody")
        assert (caught.value.status, caught.value.param) == (400, "voice")
        with pytest.raises(ClientError) as caught:
            await anext(client.stream_speech("Hi.", voice="nobody"))
        assert (caught.value.status, caught.value.param) == (400, "voice")
        with pytest.raises(ClientError) as caught:
            [chunk async for chunk in client.speak_stream(["Hi."], voice="nobody")]
        assert (caught.value.status, caught.value.param) == (None, "voice")
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(ClientError) as caught:
            await client.health()
        assert caught.value.code == "connection_error"
        with pytest.raises(ClientError) as caught:
            await client.get_server_info()
        assert caught.value.code == "connection_error"


async def test_async_speak_stream_from_an_async_source(server_url: str, text_seconds: float):
    first_audio = asyncio.Event()
    heard_early: list[bool] = []

    async def tokens() -> AsyncIterator[str]:
        for token in TOKENS[:4]:  # "Hello there. How"
            yield token
        try:
            async with asyncio.timeout(10):
                await first_audio.wait()
            heard_early.append(True)
        except TimeoutError:
            heard_early.append(False)
        for token in TOKENS[4:]:
            yield token

    async with AsyncClient(server_url) as client, client.speak_stream(tokens()) as stream:
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            first_audio.set()
    assert heard_early == [True]
    assert stream.sample_rate == NATIVE_RATE
    assert plausible(joined(chunks).duration, text_seconds)
    assert [segment.text for segment in stream.segments] == SENTENCES


async def test_async_speak_stream_can_stop_early(server_url: str):
    async def endless() -> AsyncIterator[str]:
        while True:
            await asyncio.sleep(0.01)
            yield "This sentence is spoken again and again. "

    async with AsyncClient(server_url) as client:
        async with client.speak_stream(endless()) as stream:
            assert isinstance(await anext(stream), AudioChunk)
        assert [chunk async for chunk in client.speak_stream("Still fine.")]


async def test_async_speak_stream_raises_what_the_text_source_raised(server_url: str):
    async def tokens() -> AsyncIterator[str]:
        yield "Hello"
        raise RuntimeError("the model crashed")

    async with AsyncClient(server_url) as client:
        with pytest.raises(RuntimeError, match="the model crashed"):
            [chunk async for chunk in client.speak_stream(tokens())]


async def test_async_tts_provider_protocol(server_url: str, tmp_path: Path):
    async with AsyncClient(server_url) as client:
        info = await client.get_server_info()
        assert "piper" in [model["name"] for model in info["available_models"]]
        assert info["speaker_mapping"]
        path = await client.generate_speech("Hello there.", tmp_path / "a.wav", sample_rate=16000)
        with wave.open(str(path)) as wav:
            assert wav.getframerate() == 16000
            assert 0.4 < wav.getnframes() / 16000 < 3.0
        with pytest.raises(ClientError) as caught:
            await client.generate_speech("Guten Tag.", tmp_path / "b.wav", lang="de-DE")
        assert caught.value.code == "unsupported_language"
    assert sorted(os.listdir(tmp_path)) == ["a.wav"]  # and no temporary file left behind
