"""voxserve.client against the real server: HTTP and both WebSocket protocols, sync and async."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time
import uuid
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from tests.conftest import free_port, running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.audio import AudioChunk, decode_audio, decode_pcm16
from voxserve.client import (
    AsyncClient,
    Client,
    ClientError,
    DialogueRequest,
    DialogueTurn,
    SpeechOptions,
    SpeechRequest,
)
from voxserve.client._protocol import ws_url
from voxserve.server.app import create_app

NATIVE_RATE = 22050
PCM_RATE = 24000  # pcm over HTTP is OpenAI's; the WebSocket protocols keep the engine's rate
SENTENCES = ["Hello there.", "How are you today?", "The weather is lovely."]
TEXT = " ".join(SENTENCES)
# Tokens as an LLM streams them: words with their leading space, punctuation on its own.
TOKENS = ["Hello", " there", ".", " How", " are", " you", " today", "?"]
TOKENS += [" The", " weather", " is", " lovely", "."]
CLIP_TEXT = "The quick brown fox jumps over the lazy dog. Please remember to bring your umbrella."


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


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"speed": 9.0}, "speed"),
        ({"sampling": {"temperature": 5}}, "sampling.temperature"),
        ({"language": "not a tag"}, "language"),
        ({"response_format": "ogg"}, "response_format"),
        ({"input": " \x00 "}, "input"),
    ],
)
def test_a_bad_value_fails_in_the_client_as_the_server_would_say_it(server_url, fields, param):
    told = httpx.post(f"{server_url}/v1/audio/speech", json={"input": "Hi.", **fields}).json()
    with Client(f"http://127.0.0.1:{free_port()}") as offline:  # nothing is sent: no server
        with pytest.raises(ClientError) as caught:
            offline.speech(fields.pop("input", "Hi."), **fields)
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        None,
        "invalid_request",
        param,
    )
    assert (caught.value.message, told["error"]["param"]) == (told["error"]["message"], param)


def test_every_call_checks_its_request_before_sending():
    with Client(f"http://127.0.0.1:{free_port()}") as offline:
        calls = [
            lambda: next(offline.stream_speech("Hi.", sample_rate=100)),
            lambda: offline.speak_stream(["Hi."], speed=0),
            lambda: offline.dialogue([]),
            lambda: offline.dialogue([{"speaker": "A", "text": "Hi."}], pause_between_turns=9),
            lambda: offline.dialogue([{"speaker": "A", "text": "..."}]),
        ]
        params = []
        for call in calls:
            with pytest.raises(ClientError) as caught:
                call()
            assert caught.value.code == "invalid_request"
            params.append(caught.value.param)
        assert params == ["sample_rate", "speed", "turns", "pause_between_turns", "turns.0.text"]
        with pytest.raises(TypeError, match="vocie"):  # a misspelt field is never ignored
            offline.speech("Hi.", vocie="joe")
        with pytest.raises(TypeError, match="stream"):  # speech or stream_speech says it
            offline.speech("Hi.", stream=True)


def test_speech_takes_the_servers_request_model(client: Client):
    request = SpeechRequest(input="Hello there.", response_format="wav", sample_rate=16000)
    assert decode_audio(client.speech(request)).sample_rate == 16000
    parts = list(client.stream_speech(request, sample_rate=8000))  # keywords over the model's
    assert decode_audio(b"".join(parts)).sample_rate == 8000
    assert decode_audio(client.speech(request, voice=None)).sample_rate == 16000  # None: unset
    with pytest.raises(ClientError) as caught:  # a field the old client did not have
        client.speech("Guten Tag.", language="de")
    assert (caught.value.status, caught.value.param) == (400, "language")


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


# Dialogue and voices, sync


def test_dialogue_takes_turns_or_a_whole_request(client: Client, tmp_path: Path):
    turns = [
        {"speaker": "Host", "text": "Welcome to the show."},
        DialogueTurn(speaker="Guest", text="Thanks for having me."),
    ]
    paused = decode_audio(
        client.dialogue(turns, voices={"guest": "deep_male"}, pause_between_turns=2.0)
    )
    request = DialogueRequest(turns=turns, pause_between_turns=0.0)
    path = client.dialogue_to_file(request, tmp_path / "show.flac")  # the format of its name
    assert path.read_bytes()[:4] == b"fLaC"
    assert paused.duration - decode_audio(path.read_bytes()).duration > 1.5
    assert [entry.name for entry in tmp_path.iterdir()] == ["show.flac"]
    with pytest.raises(ClientError) as caught:
        client.dialogue([{"speaker": "A", "text": "Hi."}], voices={"a": "nobody"})
    assert (caught.value.status, caught.value.param) == (400, "turns.0.voice")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_voice_profile_from_fields_to_deletion(client: Client):
    name = unique("quick")
    created = client.create_voice(
        name, voice="joe", defaults={"speed": 1.6}, tags=["Fast", "clients"], description="Fast."
    )
    assert (created["id"], created["tags"], created["defaults"]["speed"]) == (
        name,
        ["fast", "clients"],
        1.6,
    )
    assert client.voice(name)["description"] == "Fast."
    assert name in [voice["id"] for voice in client.voices(tag="clients")["voices"]]
    text = "This sentence is spoken by a profile."
    quick = client.speech(text, voice=name, response_format="pcm")
    assert len(quick) < 0.8 * len(client.speech(text, voice="joe", response_format="pcm"))

    assert client.update_voice(name, tags=["Slow"], language="en")["tags"] == ["slow"]
    assert client.update_voice(name, language=None)["language"] is None  # None clears a field
    assert client.delete_voice(name) == {"id": name, "object": "voice", "deleted": True}
    with pytest.raises(ClientError) as caught:
        client.voice(name)
    assert (caught.value.status, caught.value.code) == (404, "voice_not_found")
    with pytest.raises(ClientError) as caught:
        client.create_voice("bad/name")
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        400,
        "invalid_name",
        "name",
    )
    with pytest.raises(TypeError, match="colour"):
        client.create_voice(unique("odd"), colour="blue")


@pytest.fixture(scope="module")
def speech_clip(client: Client) -> bytes:
    """About five seconds of real speech, as a WAV file."""
    return client.speech(CLIP_TEXT, response_format="wav")


def test_a_clip_uploaded_from_a_file_becomes_a_profile(
    client: Client, speech_clip: bytes, tmp_path: Path
):
    path = tmp_path / "clip.wav"
    path.write_bytes(speech_clip)
    name = unique("narrator")
    profile = client.create_voice(
        name, audio=path, transcript=CLIP_TEXT, display_name="The Narrator", tags=["books"]
    )
    assert (profile["has_reference"], profile["display_name"], profile["transcript"]) == (
        True,
        "The Narrator",
        CLIP_TEXT,
    )
    with wave.open(io.BytesIO(client.voice_sample(name))) as sample:  # the prepared reference
        assert sample.getframerate() == 24000 and 3.0 < sample.getnframes() / 24000 < 8.0
    with pytest.raises(ClientError) as caught:  # Piper cannot clone
        client.speech("Hi.", voice=name)
    assert (caught.value.status, caught.value.code) == (400, "cloning_not_supported")
    client.delete_voice(name)


@pytest.fixture(scope="module")
def cloning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeEngine]]:
    engine = FakeEngine(cloning=True)
    synthesizer = make_synthesizer(engine, data_dir=tmp_path_factory.mktemp("cloning"))
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url, engine


def test_speech_with_a_clip_to_clone(cloning_server, speech_clip: bytes, tmp_path: Path):
    url, engine = cloning_server
    path = tmp_path / "clip.wav"
    path.write_bytes(speech_clip)
    with Client(url) as client:
        audio = client.speech(
            "Speak like the clip.", clip=path, reference_text="Hi.", response_format="wav",
            sample_rate=8000, normalize=False,
        )  # fmt: skip
        assert decode_audio(audio).sample_rate == 8000  # the fields came with the form
        assert engine.options[-1].reference_text == "Hi."
        with wave.open(engine.options[-1].reference_audio) as reference:  # cleaned, 24 kHz
            assert reference.getframerate() == 24000 and reference.getnframes() > 24000 * 3
        with pytest.raises(ValueError, match="voice or clip"):
            client.speech("Hi.", clip=path, voice="tone")
        with pytest.raises(ClientError) as caught:
            client.speech("Hi.", clip=b"not audio at all" * 100, reference_text="Hi.")
        assert (caught.value.status, caught.value.code, caught.value.param) == (
            400,
            "invalid_audio",
            "voice",
        )


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
    # Piper times its words: the client hands them on, in order, inside the audio
    assert [word.text.strip(".?") for word in stream.words] == [t.strip(" .?") for t in TOKENS
                                                                  if t.strip(" .?")]  # fmt: skip
    starts = [word.start for word in stream.words]
    assert starts == sorted(starts) and stream.words[-1].end <= joined(chunks).duration + 0.05


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


async def test_async_requests_are_checked_before_sending():
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as offline:
        with pytest.raises(ClientError) as caught:
            await offline.speech("Hi.", sampling={"top_p": 2})
        assert (caught.value.code, caught.value.param) == ("invalid_request", "sampling.top_p")
        with pytest.raises(ClientError) as caught:
            await anext(offline.stream_speech(SpeechRequest(input="Hi."), speed=9))
        assert caught.value.param == "speed"
        with pytest.raises(ClientError) as caught:
            offline.speak_stream(["Hi."], SpeechOptions(voice="joe"), response_format="ogg")
        assert caught.value.param == "response_format"
        with pytest.raises(ClientError) as caught:
            await offline.dialogue(DialogueRequest(turns=[{"text": "Hi."}]), voices=["joe"])
        assert caught.value.param == "voices"


async def test_async_dialogue_and_voices(server_url: str, speech_clip: bytes, tmp_path: Path):
    async with AsyncClient(server_url) as client:
        turns = [{"speaker": "Ann", "text": "Hello Bob."}, {"speaker": "Bob", "text": "Hi Ann."}]
        path = await client.dialogue_to_file(turns, tmp_path / "chat.wav")
        with wave.open(str(path)) as wav:
            assert 0.8 < wav.getnframes() / wav.getframerate() < 6.0
        spoken = decode_audio(await client.dialogue(turns, response_format="flac"))
        assert spoken.duration == pytest.approx(wav.getnframes() / wav.getframerate(), abs=0.5)

        name = unique("async")
        created = await client.create_voice(name, audio=speech_clip, transcript=CLIP_TEXT)
        assert created["has_reference"] and created["transcript"] == CLIP_TEXT
        updated = await client.update_voice(
            name, audio=speech_clip, transcript="New words.", tags=["new"]
        )
        assert (updated["transcript"], updated["tags"]) == ("New words.", ["new"])
        assert (await client.voice(name))["transcript"] == "New words."
        assert name in [voice["id"] for voice in (await client.voices(tag="new"))["voices"]]
        with wave.open(io.BytesIO(await client.voice_sample(name))) as sample:
            assert sample.getframerate() == 24000
        assert (await client.delete_voice(name))["deleted"] is True
        with pytest.raises(ClientError) as caught:
            await client.delete_voice(name)
        assert caught.value.status == 404


async def test_async_speech_with_a_clip_to_clone(cloning_server, speech_clip: bytes):
    url, engine = cloning_server
    async with AsyncClient(url) as client:
        parts = [
            part
            async for part in client.stream_speech(
                "Streamed like the clip.", clip=speech_clip, reference_text="Hello.",
                response_format="pcm", sample_rate=16000,
            )
        ]  # fmt: skip
        assert decode_pcm16(b"".join(parts), 16000).duration > 0.1
        assert engine.options[-1].reference_text == "Hello."
        with pytest.raises(ValueError, match="sampling"):
            await client.speech("Hi.", clip=speech_clip, sampling={"temperature": 0.5})
