"""The alltalk engine against AllTalk v2's API on loopback (tests/providers/alltalk_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.providers.alltalk_server import (  # noqa: F401 (a fixture)
    RATE,
    AllTalkServer,
    alltalk_service,
)
from voxserve.audio.decode import decode_pcm16
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.alltalk import OPENAI_VOICES, AllTalkEngine
from voxserve.engines.base import Engine, Segment, SynthesisOptions
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import EngineUnavailableError, InvalidRequestError, UpstreamError
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.synthesis.synthesizer import Synthesizer

TEXT = "The birds sing at dawn."
LONG_TEXT = (
    "The birds sing at dawn. The river runs to the sea. A cold wind blows from the north. "
    "The lamps are lit at dusk. We walk home along the shore. The night is calm and clear."
)
CLOSE_WITHIN = 0.2
"""Seconds from closing our stream to AllTalk seeing its connection closed."""


@pytest.fixture(autouse=True)
def fresh_service(alltalk_service: AllTalkServer) -> Iterator[AllTalkServer]:  # noqa: F811
    """The stand-in as it starts, and left so (session fixtures load engines on it first)."""
    alltalk_service.reset()
    yield alltalk_service
    alltalk_service.reset()


def alltalk(service: AllTalkServer, **settings: Any) -> AllTalkEngine:
    engine = AllTalkEngine({"base_url": service.url, "retry_backoff": 0, **settings})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def streaming(alltalk_service: AllTalkServer) -> AllTalkEngine:  # noqa: F811 (imported)
    return alltalk(alltalk_service)


@pytest.fixture(scope="session")
def openai_route(alltalk_service: AllTalkServer) -> AllTalkEngine:  # noqa: F811 (imported)
    return alltalk(alltalk_service, api="openai")


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("alltalk")


def synthesizer_for(engine: Engine, data_dir: Path, voice: str) -> Synthesizer:
    settings = Settings(data_dir=data_dir, default_engine=engine.name, default_voice=voice,
                        cache_mb=0)  # fmt: skip
    registry = EngineRegistry(settings)
    registry.register(engine)
    return Synthesizer(settings, registry)


async def segment(engine: Engine, work_dir: Path, text: str = TEXT, **fields: Any) -> Segment:
    voice = fields.setdefault("voice", engine.voices()[0].id)
    options = SpeechOptions(model=engine.name, **fields)
    resolver = synthesizer_for(engine, work_dir, voice).resolver
    return Segment(0, text, await resolver.resolve(options), 0.0)


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


def samples(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([chunk.samples for chunk in chunks])


# Loading and voices


def test_load_asks_if_ready_and_lists_its_voices(fresh_service):
    engine = alltalk(fresh_service, voice="male_01.wav", voices=["configured.wav"])
    assert [voice.id for voice in engine.voices()] == ["male_01.wav", "female_01.wav"]
    assert engine.find_voice("female_01.wav").name == "female_01"


async def test_a_voice_alltalk_lists_is_found_with_only_its_url_configured(fresh_service, work_dir):
    # Before it is loaded the engine knows no voice: naming it and one of AllTalk's loads it.
    settings = Settings(data_dir=work_dir, engines={"alltalk": {"base_url": fresh_service.url}})
    synthesizer = Synthesizer(settings)
    request = SpeechRequest(input=TEXT, model="alltalk", voice="male_01.wav")
    chunks = [chunk async for chunk in synthesizer.stream(request)]
    assert sum(len(chunk.samples) for chunk in chunks) > 0
    assert synthesizer.registry.is_loaded("alltalk")
    assert [call.fields["voice"] for call in fresh_service.calls] == ["male_01.wav"]
    with pytest.raises(InvalidRequestError) as refused:  # a voice it does not list
        synthesizer.prepare(SpeechRequest(input=TEXT, model="alltalk", voice="nobody.wav"))
    assert refused.value.param == "voice" and "male_01.wav" in refused.value.message


def test_an_engine_without_voices_falls_back_to_the_setting(fresh_service):
    fresh_service.voices = None  # AllTalk's {"status": "error"} for an engine with no voices
    engine = alltalk(fresh_service, voices=["configured.wav"])
    assert [voice.id for voice in engine.voices()] == ["configured.wav"]


def test_unreachable_it_builds_lists_without_calling_out_and_says_what_to_set():
    engine = AllTalkEngine({"base_url": "http://127.0.0.1:9"})
    assert engine.voices() == [] and engine.capabilities.streaming
    with pytest.raises(EngineUnavailableError) as unreachable:
        engine.load()
    assert "[engines.alltalk] base_url" in unreachable.value.message


async def test_a_password_in_base_url_goes_as_basic_auth_and_is_never_told(fresh_service, work_dir):
    secret = "s3cret-proxy-password"
    url = fresh_service.url.replace("http://", f"http://voxserve:{secret}@")
    engine = alltalk(fresh_service, base_url=url)
    await collect(engine.stream(await segment(engine, work_dir)))
    assert fresh_service.calls[0].headers["Authorization"].startswith("Basic ")
    with pytest.raises(EngineUnavailableError) as unreachable:
        AllTalkEngine({"base_url": f"http://voxserve:{secret}@127.0.0.1:9"}).load()
    assert secret not in unreachable.value.message


def test_an_engine_still_loading_is_not_used(fresh_service):
    fresh_service.ready = "Unloaded"
    with pytest.raises(EngineUnavailableError) as loading:
        alltalk(fresh_service)
    assert loading.value.code == "engine_loading" and "Unloaded" in loading.value.message


# The streaming route


async def test_the_wav_stream_comes_in_pieces_exactly_as_sent(streaming, fresh_service, work_dir):
    chunks = await collect(streaming.stream(await segment(streaming, work_dir, LONG_TEXT)))
    [call] = fresh_service.calls
    assert (call.method, call.path) == ("GET", "/api/tts-generate-streaming")
    assert call.fields == {"text": LONG_TEXT, "voice": "female_01.wav", "language": "en",
                           "output_file": "voxserve_stream"}  # fmt: skip
    assert len(chunks) > 1 and {chunk.sample_rate for chunk in chunks} == {RATE}
    # The header's sizes of 0 are not trusted, and pieces of odd sizes lose no sample.
    sent = decode_pcm16(fresh_service.speech(LONG_TEXT), RATE).samples
    assert np.array_equal(samples(chunks), sent)


async def test_the_requests_language_is_sent_as_alltalks_code(streaming, fresh_service, work_dir):
    await collect(streaming.stream(await segment(streaming, work_dir, language="zh-CN")))
    await collect(streaming.stream(await segment(streaming, work_dir, language="fr")))
    assert [call.fields["language"] for call in fresh_service.calls] == ["zh-cn", "fr"]


async def test_an_engine_that_cannot_stream_names_the_setting(streaming, fresh_service, work_dir):
    fresh_service.streaming = False
    with pytest.raises(EngineUnavailableError) as refused:
        await collect(streaming.stream(await segment(streaming, work_dir)))
    assert '[engines.alltalk] api = "openai"' in refused.value.message
    assert len(fresh_service.calls) == 1  # not tried again


async def test_a_server_error_before_audio_is_tried_again(streaming, fresh_service, work_dir):
    fresh_service.failures = [500]
    assert len(samples(await collect(streaming.stream(await segment(streaming, work_dir)))))
    assert len(fresh_service.calls) == 2
    fresh_service.reset()
    fresh_service.failures = [500, 500]
    with pytest.raises(UpstreamError) as failed:
        await collect(streaming.stream(await segment(streaming, work_dir)))
    assert failed.value.retryable and len(fresh_service.calls) == 2


async def test_a_stream_cut_before_its_header_is_tried_again(streaming, fresh_service, work_dir):
    # AllTalk fails inside its generator (here: a voice it has no file for) after its 200.
    fresh_service.voices = ["male_01.wav"]
    with pytest.raises(UpstreamError) as failed:
        await collect(streaming.stream(await segment(streaming, work_dir, voice="female_01.wav")))
    assert failed.value.retryable and len(fresh_service.calls) == 2


async def test_a_stream_cut_after_audio_is_not_tried_again(streaming, fresh_service, work_dir):
    fresh_service.cut_after = 2
    heard: list[AudioChunk] = []
    with pytest.raises(UpstreamError):
        async with contextlib.aclosing(streaming.stream(await segment(streaming, work_dir))) as s:
            async for chunk in s:
                heard.append(chunk)
    assert heard and len(fresh_service.calls) == 1


async def test_a_field_alltalk_refuses_is_named_as_ours(streaming, fresh_service, work_dir):
    # FastAPI's 422 for a query parameter, as AllTalk answers one it is missing.
    fresh_service.refusal = (422, {"detail": [
        {"type": "missing", "loc": ["query", "voice"], "msg": "Field required", "input": None}
    ]})  # fmt: skip
    with pytest.raises(InvalidRequestError) as refused:
        await collect(streaming.stream(await segment(streaming, work_dir)))
    assert refused.value.param == "voice" and "Field required" in refused.value.message


async def test_closing_the_stream_closes_alltalks_connection(streaming, fresh_service, work_dir):
    fresh_service.pace = 0.02
    stream = streaming.stream(await segment(streaming, work_dir, LONG_TEXT))
    assert len((await anext(stream)).samples)
    closed_at = time.monotonic()
    await stream.aclose()
    [call] = fresh_service.calls
    assert await asyncio.to_thread(call.closed.wait, 2)
    assert call.closed_at - closed_at < CLOSE_WITHIN


# The OpenAI-shaped route


async def test_the_openai_route_takes_its_six_voices_and_a_speed(
    openai_route, fresh_service, work_dir
):
    assert [voice.id for voice in openai_route.voices()] == list(OPENAI_VOICES)
    assert openai_route.capabilities.speed_range == (0.25, 4.0)
    chunks = await collect(openai_route.stream(await segment(openai_route, work_dir, speed=1.5)))
    [call] = fresh_service.calls
    assert (call.method, call.path) == ("POST", "/v1/audio/speech")
    assert call.fields == {"model": "tts-1", "input": TEXT, "voice": "alloy",
                           "response_format": "wav", "speed": 1.5}  # fmt: skip
    sent = decode_pcm16(fresh_service.speech(TEXT, 1.5), RATE).samples
    assert np.array_equal(samples(chunks), sent)
    synthesizer = synthesizer_for(openai_route, work_dir, "alloy")
    request = SpeechRequest(input=TEXT, model="alltalk", voice="female_01.wav")
    with pytest.raises(InvalidRequestError) as refused:  # before anything is sent
        await asyncio.to_thread(synthesizer.prepare, request)
    assert refused.value.param == "voice" and len(fresh_service.calls) == 1


async def test_the_streaming_route_takes_no_speed(streaming, work_dir):
    synthesizer = synthesizer_for(streaming, work_dir, "female_01.wav")
    request = SpeechRequest(input=TEXT, model="alltalk", voice="female_01.wav", speed=1.5)
    with pytest.raises(InvalidRequestError) as refused:
        await asyncio.to_thread(synthesizer.prepare, request)
    assert refused.value.param == "speed"


def test_it_is_free(streaming):
    assert streaming.cost(LONG_TEXT, SynthesisOptions("female_01.wav")) is None
