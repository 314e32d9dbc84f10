"""The openai and openai_compatible engines against OpenAI's speech API on loopback
(tests/providers/openai_server.py), and openai_compatible against our own server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import running
from tests.providers.openai_server import KEY, OpenAIServer, openai_service  # noqa: F401
from voxserve.audio.decode import decode_pcm16
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import Cost, Engine, Segment, SynthesisOptions
from voxserve.engines.openai_speech import OpenAICompatibleEngine, OpenAIEngine
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
)
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer

TEXT = "The birds sing at dawn."
LONG_TEXT = (
    "The birds sing at dawn. The river runs to the sea. A cold wind blows from the north. "
    "The lamps are lit at dusk. We walk home along the shore. The night is calm and clear."
)
OPTIONS = SynthesisOptions("alloy")
CLOSE_WITHIN = 0.2
"""Seconds from closing our stream to the provider seeing its connection closed."""


def synthesizer_for(engine: Engine, data_dir: Path, voice: str) -> Synthesizer:
    settings = Settings(data_dir=data_dir, default_engine=engine.name, default_voice=voice,
                        cache_mb=0)  # fmt: skip
    registry = EngineRegistry(settings)
    registry.register(engine)
    return Synthesizer(settings, registry)


def openai(service: OpenAIServer, **settings: Any) -> OpenAIEngine:
    engine = OpenAIEngine({"api_key": KEY, "base_url": service.url, "retry_backoff": 0, **settings})
    engine.load()
    return engine


@pytest.fixture(autouse=True)
def fresh_service(openai_service: OpenAIServer) -> OpenAIServer:  # noqa: F811 (imported)
    """The stand-in, as it starts: no failure queued, nothing recorded."""
    openai_service.reset()
    return openai_service


@pytest.fixture(scope="session")
def mini(openai_service: OpenAIServer) -> OpenAIEngine:  # noqa: F811 (imported)
    """gpt-4o-mini-tts, streaming server-sent events (its default)."""
    return openai(openai_service)


@pytest.fixture(scope="session")
def tts1(openai_service: OpenAIServer) -> OpenAIEngine:  # noqa: F811 (imported)
    """tts-1, streaming raw audio (the only way it streams)."""
    return openai(openai_service, model="tts-1")


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openai-speech")


async def segment(engine: Engine, work_dir: Path, text: str = TEXT, **fields: Any) -> Segment:
    synthesizer = synthesizer_for(engine, work_dir, fields.get("voice", "alloy"))
    options = SpeechOptions(model=engine.name, **{"voice": "alloy", **fields})
    return Segment(0, text, await synthesizer.resolver.resolve(options), 0.0)


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


def samples(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([chunk.samples for chunk in chunks])


# Streaming


@pytest.mark.parametrize("model", ["tts-1", "gpt-4o-mini-tts"])
async def test_audio_streams_in_pieces_exactly_as_sent(model, mini, tts1, fresh_service, work_dir):
    engine = tts1 if model == "tts-1" else mini
    chunks = await collect(engine.stream(await segment(engine, work_dir, LONG_TEXT)))
    [call] = fresh_service.calls
    sent = fresh_service.spoken(LONG_TEXT, 1.0)
    assert len(chunks) > 1 and {chunk.sample_rate for chunk in chunks} == {24000}
    # Pieces of an odd number of bytes: a sample cut in two is joined, not lost or shifted.
    assert np.array_equal(samples(chunks), decode_pcm16(sent, 24000).samples)
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    body = {"model": model, "input": LONG_TEXT, "voice": "alloy", "response_format": "pcm"}
    if model == "gpt-4o-mini-tts":
        body["stream_format"] = "sse"
    assert call.body == body


async def test_speed_and_instructions_are_sent_where_the_model_takes_them(
    mini, tts1, fresh_service, work_dir
):
    instructions = "Speak like a lighthouse keeper."
    await collect(mini.stream(await segment(mini, work_dir, speed=1.5, instructions=instructions)))
    assert fresh_service.calls[0].body["speed"] == 1.5
    assert fresh_service.calls[0].body["instructions"] == instructions
    synthesizer = synthesizer_for(tts1, work_dir, "alloy")
    request = SpeechRequest(input=TEXT, model="openai", voice="alloy", instructions=instructions)
    prepared = await asyncio.to_thread(synthesizer.prepare, request)
    assert prepared.ignored == ("instructions",)
    await collect(synthesizer.stream(prepared))
    assert "instructions" not in fresh_service.calls[1].body


async def test_tts1_refuses_the_newer_voices_before_any_request(
    mini, tts1, fresh_service, work_dir
):
    request = SpeechRequest(input=TEXT, model="openai", voice="marin")
    with pytest.raises(InvalidRequestError) as refused:
        await asyncio.to_thread(synthesizer_for(tts1, work_dir, "alloy").prepare, request)
    assert refused.value.param == "voice"
    assert fresh_service.calls == []
    assert {voice.id for voice in mini.voices()} - {voice.id for voice in tts1.voices()} == {
        "ballad", "verse", "marin", "cedar"
    }  # fmt: skip


# Failures


async def test_a_rate_limit_is_tried_again_after_its_retry_after(mini, fresh_service, work_dir):
    fresh_service.failures = [429]
    fresh_service.retry_after = "0.3"
    chunks = await collect(mini.stream(await segment(mini, work_dir)))
    assert len(samples(chunks)) > 0
    first, second = fresh_service.calls
    assert second.at - first.at >= 0.3  # retry_backoff is 0: only Retry-After made it wait


async def test_a_server_error_is_tried_again_and_the_sdk_does_not_retry(
    mini, fresh_service, work_dir
):
    fresh_service.failures = [500]
    assert len(samples(await collect(mini.stream(await segment(mini, work_dir))))) > 0
    assert len(fresh_service.calls) == 2
    fresh_service.reset()
    fresh_service.failures = [503, 503]  # retries = 1: two tries, the SDK adding none
    with pytest.raises(UpstreamError) as failed:
        await collect(mini.stream(await segment(mini, work_dir)))
    assert failed.value.retryable and len(fresh_service.calls) == 2


async def test_a_rate_limit_on_every_try_reaches_the_client_with_its_wait(
    mini, fresh_service, work_dir
):
    fresh_service.failures = [429, 429]
    fresh_service.retry_after = "0.01"
    with pytest.raises(UpstreamRateLimitedError) as limited:
        await collect(mini.stream(await segment(mini, work_dir)))
    assert limited.value.retry_after == pytest.approx(0.01)


@pytest.mark.parametrize("model", ["tts-1", "gpt-4o-mini-tts"])
async def test_a_failure_after_audio_is_not_tried_again(model, mini, tts1, fresh_service, work_dir):
    engine = tts1 if model == "tts-1" else mini
    fresh_service.cut_after = 2
    heard: list[AudioChunk] = []
    with pytest.raises(UpstreamError):
        async with contextlib.aclosing(engine.stream(await segment(engine, work_dir))) as chunks:
            async for chunk in chunks:
                heard.append(chunk)
    assert heard and len(fresh_service.calls) == 1


async def test_a_refused_key_names_its_setting_and_never_the_key(fresh_service, work_dir, caplog):
    wrong = "sk-proj-wrong0123456789abcdefWRONG"
    engine = OpenAIEngine({"api_key": wrong, "base_url": fresh_service.url})
    engine.load()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EngineUnavailableError) as refused:
        await collect(engine.stream(await segment(engine, work_dir)))
    assert "[engines.openai] api_key or OPENAI_API_KEY" in refused.value.message
    assert len(fresh_service.calls) == 1  # refused keys are not tried again
    assert wrong not in str(refused.value) and wrong not in repr(refused.value.__cause__)
    assert all(wrong not in record.getMessage() for record in caplog.records)


async def test_a_field_the_provider_refuses_is_named_as_ours(fresh_service, work_dir):
    # A server the engine cannot know the voices of: tts-1 refuses marin itself.
    engine = OpenAICompatibleEngine({
        "base_url": fresh_service.url, "api_key": KEY, "model": "tts-1", "voices": ["marin"],
    })  # fmt: skip
    engine.load()
    with pytest.raises(InvalidRequestError) as refused:
        await collect(engine.stream(await segment(engine, work_dir, voice="marin")))
    assert refused.value.param == "voice"
    assert "Invalid value for 'voice'" in refused.value.message


async def test_no_server_is_a_passing_failure(work_dir):
    engine = OpenAIEngine({"api_key": KEY, "base_url": "http://127.0.0.1:9/v1", "retries": 0})
    engine.load()
    with pytest.raises(UpstreamError) as failed:
        await collect(engine.stream(await segment(engine, work_dir)))
    assert failed.value.retryable and KEY not in failed.value.message


def test_a_missing_key_names_both_places(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(EngineUnavailableError) as missing:
        OpenAIEngine().load()
    assert "[engines.openai] api_key" in missing.value.message
    assert "OPENAI_API_KEY" in missing.value.message


# Closing


async def test_closing_the_stream_closes_the_providers_connection(mini, fresh_service, work_dir):
    fresh_service.pace = 0.02
    stream = mini.stream(await segment(mini, work_dir, LONG_TEXT))
    assert len((await anext(stream)).samples)
    closed_at = time.monotonic()
    await stream.aclose()
    [call] = fresh_service.calls
    assert await asyncio.to_thread(call.closed.wait, 2)
    assert call.closed_at - closed_at < CLOSE_WITHIN


# Cost


@pytest.mark.parametrize("model", ["tts-1", "gpt-4o-mini-tts"])
async def test_the_estimate_is_within_a_tenth_of_the_bill(
    model, mini, tts1, fresh_service, work_dir
):
    engine = tts1 if model == "tts-1" else mini
    synthesizer = synthesizer_for(engine, work_dir, "alloy")
    text = LONG_TEXT + " " + LONG_TEXT.replace("The", "A")
    request = SpeechRequest(input=text, model="openai", voice="alloy")
    await collect(synthesizer.stream(await asyncio.to_thread(synthesizer.prepare, request)))
    assert len(fresh_service.calls) > 1  # cut into segments, each a call billed on its own
    # What the request is estimated at: one engine call's cost a segment sent.
    estimate = sum(engine.cost(call.body["input"], OPTIONS).usd for call in fresh_service.calls)
    price = engine.settings.prices[model]
    if model == "tts-1":
        billed = sum(bill.characters for bill in fresh_service.bills) * price.characters / 1e6
    else:
        billed = (
            sum(
                bill.input_tokens * price.input_tokens + bill.output_tokens * price.audio_tokens
                for bill in fresh_service.bills
            )
            / 1e6
        )
    assert abs(estimate - billed) <= 0.1 * billed, (estimate, billed)


def test_a_price_overridden_changes_that_model_alone():
    prices = {"tts-1-hd": {"characters": 20.0}}
    engine = OpenAIEngine({"model": "tts-1-hd", "prices": prices})
    assert engine.cost("Hello.", OPTIONS) == Cost(6, "characters", 6 * 20.0 / 1e6)
    engine = OpenAIEngine({"model": "tts-1", "prices": prices})
    assert engine.cost("Hello.", OPTIONS) == Cost(6, "characters", 6 * 15.0 / 1e6)
    free = OpenAICompatibleEngine({"base_url": "http://127.0.0.1:9/v1", "voices": ["a"]})
    assert free.cost("Hello.", OPTIONS) is None  # a server of one's own bills nothing


def test_sse_is_refused_for_a_model_without_it():
    with pytest.raises(EngineUnavailableError) as refused:
        OpenAIEngine({"model": "tts-1", "stream_format": "sse"})
    assert "engines.openai" in refused.value.message and "stream_format" in refused.value.message


# openai_compatible


def test_unconfigured_it_offers_nothing_and_says_what_to_set():
    engine = OpenAICompatibleEngine()
    assert engine.voices() == []
    with pytest.raises(EngineUnavailableError) as missing:
        engine.load()
    assert "[engines.openai_compatible] base_url" in missing.value.message


def test_it_lists_a_servers_voices_or_falls_back_to_its_setting(fresh_service):
    settings = {"base_url": fresh_service.url, "voices": ["alloy"]}
    engine = OpenAICompatibleEngine(settings)
    engine.load()  # OpenAI has no voice list (404): the setting's
    assert [voice.id for voice in engine.voices()] == ["alloy"]
    fresh_service.voices_listed = ["af_bella", "am_adam"]  # Kokoro-FastAPI's shape
    engine.load()
    assert [voice.id for voice in engine.voices()] == ["af_bella", "am_adam"]


async def test_it_never_sends_openais_key_to_another_server(fresh_service, work_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    engine = OpenAICompatibleEngine({"base_url": fresh_service.url, "voices": ["alloy"]})
    engine.load()
    with pytest.raises(EngineUnavailableError) as refused:
        await collect(engine.stream(await segment(engine, work_dir)))
    assert "Authorization" not in fresh_service.calls[0].headers
    assert "[engines.openai_compatible] api_key" in refused.value.message


@pytest.fixture(scope="module")
def voxserve_upstream(piper_synthesizer) -> str:
    with running(create_app(synthesizer=piper_synthesizer)) as url:
        yield url


async def test_our_own_server_is_an_openai_compatible_upstream(voxserve_upstream, work_dir):
    engine = OpenAICompatibleEngine({"base_url": f"{voxserve_upstream}/v1", "model": "piper"})
    await asyncio.to_thread(engine.load)
    voices = {voice.id for voice in engine.voices()}
    assert "joe" in voices  # voxserve's own listing, its piper voices
    synthesizer = synthesizer_for(engine, work_dir, "joe")
    request = SpeechRequest(input=LONG_TEXT, model="openai_compatible", voice="joe")
    prepared = await asyncio.to_thread(synthesizer.prepare, request)
    duration = sum(chunk.duration for chunk in await collect(synthesizer.stream(prepared)))
    assert duration > 3  # six sentences of Piper's speech came through
    assert engine.cost(LONG_TEXT, OPTIONS) is None  # free unless prices say otherwise


# Secrets


async def test_the_key_is_in_no_log_metric_or_listing(mini, fresh_service, work_dir, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        data_dir=work_dir / "app",
        default_engine="openai",
        default_voice="alloy",
        engines={"openai": {"api_key": KEY, "base_url": fresh_service.url}},
    )
    fresh_service.failures = [429, 500]  # fmt: skip
    with running(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(2):
                await client.post("/v1/audio/speech", json={"input": TEXT, "voice": "alloy"})
            said = [(await client.get(path)).text for path in ("/metrics", "/v1/models",
                                                               "/v1/audio/voices")]  # fmt: skip
    assert fresh_service.calls  # the key was used
    assert all(KEY not in text for text in said)
    assert all(KEY not in record.getMessage() for record in caplog.records)
