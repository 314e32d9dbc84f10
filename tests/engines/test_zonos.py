"""The zonos engine against Zyphra's API on loopback (tests/providers/zonos_server.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from tests.conftest import running
from tests.providers.zonos_server import KEY, RATE, ZonosServer, zonos_service  # noqa: F401
from voxserve.audio.decode import decode_audio
from voxserve.audio.encode import create_encoder
from voxserve.audio.frames import AudioChunk
from voxserve.audio.wav import fix_wav_header
from voxserve.config import Settings
from voxserve.engines.base import Engine, Segment, SynthesisOptions
from voxserve.engines.registry import EngineRegistry
from voxserve.engines.zonos import ZonosEngine, ZonosOptions
from voxserve.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
)
from voxserve.request import SpeechOptions, SpeechRequest
from voxserve.server.app import create_app
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.resolution import CloneReference

TEXT = "The birds sing at dawn."
LONG_TEXT = (
    "The birds sing at dawn. The river runs to the sea. A cold wind blows from the north. "
    "The lamps are lit at dusk. We walk home along the shore. The night is calm and clear."
)
CLOSE_WITHIN = 0.2
"""Seconds from cancelling our call to Zyphra seeing its connection closed."""


@pytest.fixture(autouse=True)
def fresh_service(zonos_service: ZonosServer) -> Iterator[ZonosServer]:  # noqa: F811
    """The stand-in as it starts, and left so."""
    zonos_service.reset()
    yield zonos_service
    zonos_service.reset()


@pytest.fixture(scope="session")
def zonos(zonos_service: ZonosServer) -> ZonosEngine:  # noqa: F811 (imported)
    engine = ZonosEngine({"api_key": KEY, "base_url": zonos_service.url, "retry_backoff": 0})
    engine.load()
    return engine


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zonos")


def synthesizer_for(engine: Engine, data_dir: Path, **settings: Any) -> Synthesizer:
    settings = Settings(data_dir=data_dir, default_engine=engine.name,
                        default_voice="american_female", cache_mb=0, **settings)  # fmt: skip
    registry = EngineRegistry(settings)
    registry.register(engine)
    return Synthesizer(settings, registry)


async def segment(
    engine: Engine, work_dir: Path, text: str = TEXT, reference: CloneReference | None = None,
    **fields: Any,
) -> Segment:  # fmt: skip
    options = SpeechOptions(model=engine.name, **fields)
    voicing = await synthesizer_for(engine, work_dir).resolver.resolve(options, reference)
    return Segment(0, text, voicing, 0.0)


async def collect(stream: AsyncIterator[AudioChunk]) -> list[AudioChunk]:
    async with contextlib.aclosing(stream) as chunks:
        return [chunk async for chunk in chunks]


def spoken(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([chunk.samples for chunk in chunks])


def tone_wav(pitch: float) -> bytes:
    """Four seconds of a voiced-like tone: a clip the reference checks accept."""
    t = np.arange(4 * 24000) / 24000
    tone = 0.3 * np.sin(2 * np.pi * pitch * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    encoder = create_encoder("wav", 24000)
    return fix_wav_header(encoder.encode(tone.astype(np.float32)) + encoder.finish())


# The request, as the zyphra client sends it


async def test_the_request_is_the_clients_and_the_wav_is_decoded(zonos, fresh_service, work_dir):
    chunks = await collect(zonos.stream(await segment(zonos, work_dir)))
    [call] = fresh_service.calls
    assert call.headers["X-API-Key"] == KEY and call.path == "/v1/audio/text-to-speech"
    assert call.fields == {
        "text": TEXT, "speaking_rate": 15.0, "language_iso_code": "en-us",
        "mime_type": "audio/wav", "model": "zonos-v0.1-transformer",
        "default_voice_name": "american_female",
    }  # fmt: skip
    assert {chunk.sample_rate for chunk in chunks} == {RATE}
    assert np.array_equal(spoken(chunks), decode_audio(fresh_service.speech(TEXT, 15.0)).samples)


async def test_speed_and_language_become_rate_and_iso_code(zonos, fresh_service, work_dir):
    await collect(zonos.stream(await segment(zonos, work_dir, speed=2.0, language="ja")))
    await collect(zonos.stream(await segment(zonos, work_dir, language="zh")))
    first, second = (call.fields for call in fresh_service.calls)
    assert (first["speaking_rate"], first["language_iso_code"]) == (30.0, "ja")
    assert second["language_iso_code"] == "cmn"


async def test_a_clip_is_cloned_as_speaker_audio(zonos, fresh_service, work_dir, reference_wav):
    reference = CloneReference(reference_wav, "A clip to clone.")
    chunks = await collect(zonos.stream(await segment(zonos, work_dir, reference=reference)))
    [call] = fresh_service.calls
    assert base64.b64decode(call.fields["speaker_audio"]) == reference_wav.read_bytes()
    assert "default_voice_name" not in call.fields and len(spoken(chunks))


# Engine options


async def test_engine_options_are_sent_and_speed_scales_their_rate(zonos, fresh_service, work_dir):
    given = {"speaking_rate": 12, "emotion": {"happiness": 0.9, "sadness": 0.1},
             "vqscore": 0.7, "pitch_std": 60}  # fmt: skip
    piece = await segment(zonos, work_dir, speed=1.5, engine_options=given)
    assert isinstance(piece.voicing.options.engine_options, ZonosOptions)
    await collect(zonos.stream(piece))
    sent = fresh_service.calls[0].fields
    assert sent["speaking_rate"] == 18.0  # 12, faster by 1.5
    assert sent["emotion"] == {"happiness": 0.9, "sadness": 0.1}  # the rest: Zyphra's defaults
    assert (sent["vqscore"], sent["pitch_std"]) == (0.7, 60)


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ({"emotion": {"happiness": 2}}, "engine_options.emotion.happiness"),
        ({"vqscore": 0.9}, "engine_options.vqscore"),
        ({"temperature": 1}, "engine_options.temperature"),
    ],
)
async def test_a_bad_engine_option_is_a_400_naming_it(zonos, fresh_service, work_dir, given, param):
    synthesizer = synthesizer_for(zonos, work_dir)
    request = SpeechRequest(input=TEXT, model="zonos", engine_options=given)
    with pytest.raises(InvalidRequestError) as refused:
        await asyncio.to_thread(synthesizer.prepare, request)
    assert refused.value.param == param and fresh_service.calls == []


async def test_a_rate_past_zyphras_is_refused_naming_speed(zonos, fresh_service, work_dir):
    piece = await segment(zonos, work_dir, speed=2.0, engine_options={"speaking_rate": 30})
    with pytest.raises(InvalidRequestError) as refused:
        await collect(zonos.stream(piece))
    assert refused.value.param == "speed" and fresh_service.calls == []


async def test_a_profiles_engine_options_reach_zyphra(zonos, fresh_service, work_dir):
    synthesizer = synthesizer_for(zonos, work_dir / "profiles")
    profile = VoiceProfile(id="calm", display_name="Calm", engine="zonos",
                           voice="british_male", engine_options={"fmax": 16000})  # fmt: skip
    synthesizer.resolver.voices.create(profile)
    request = SpeechRequest(input=TEXT, model="zonos", voice="calm")
    await collect(synthesizer.stream(await asyncio.to_thread(synthesizer.prepare, request)))
    sent = fresh_service.calls[0].fields
    assert (sent["fmax"], sent["default_voice_name"]) == (16000, "british_male")


# Speaker roles


def test_speaker_roles_are_the_profiles_the_speakers_setting_names(zonos, fresh_service, work_dir):
    """As the TTS-provider server's Zonos spoke 0.wav, 1.wav...: each role a profile's clip."""
    roles = ["alice", "bob", "alice", "bob", "eve"]  # 0-3, and a fifth speaker id
    engine = ZonosEngine(zonos.settings)  # its own: the app unloads it when it stops
    engine.load()
    synthesizer = synthesizer_for(engine, work_dir / "roles", speakers={"zonos": roles})
    clips = {"alice": tone_wav(220), "bob": tone_wav(110), "eve": tone_wav(330)}
    for name, clip in clips.items():
        profile = VoiceProfile(id=name, display_name=name, engine="zonos", transcript="Hello.")
        synthesizer.resolver.voices.create(profile, clip)
    with running(create_app(synthesizer=synthesizer)) as url:
        with connect(url.replace("http://", "ws://") + "/ws/tts") as ws:
            for speaker in (1, 4, 5):
                ws.send(json.dumps({"text": TEXT, "speaker": speaker, "model": "zonos"}))
                status = json.loads(ws.recv(timeout=30))
                assert status["status"] == "success", status
                received = 0
                while received < status["length_bytes"]:
                    received += len(ws.recv(timeout=30))
    bob, eve, sixth = (call.fields for call in fresh_service.calls)
    assert base64.b64decode(bob["speaker_audio"]) == clips["bob"]
    assert base64.b64decode(eve["speaker_audio"]) == clips["eve"]
    # Past the named roles, the engine's own voices, in order.
    assert "speaker_audio" not in sixth and sixth["default_voice_name"] == "american_female"


# Failures


async def test_a_rate_limit_is_tried_again_after_its_retry_after(zonos, fresh_service, work_dir):
    fresh_service.failures = [429]
    fresh_service.retry_after = "0.3"
    assert len(spoken(await collect(zonos.stream(await segment(zonos, work_dir)))))
    first, second = fresh_service.calls
    assert second.at - first.at >= 0.3  # retry_backoff is 0: only Retry-After made it wait


async def test_a_rate_limit_on_every_try_reaches_the_client(zonos, fresh_service, work_dir):
    fresh_service.failures = [429, 429]
    fresh_service.retry_after = "0.01"
    with pytest.raises(UpstreamRateLimitedError) as limited:
        await collect(zonos.stream(await segment(zonos, work_dir)))
    assert limited.value.retry_after == pytest.approx(0.01)


async def test_server_errors_and_cut_answers_are_tried_again(zonos, fresh_service, work_dir):
    fresh_service.failures = [500]
    assert len(spoken(await collect(zonos.stream(await segment(zonos, work_dir)))))
    assert len(fresh_service.calls) == 2
    fresh_service.reset()
    # A file cut mid-answer: none of its audio went out (it is decoded whole), so tried again.
    fresh_service.cut_after = 1
    with pytest.raises(UpstreamError) as failed:
        await collect(zonos.stream(await segment(zonos, work_dir)))
    assert failed.value.retryable and len(fresh_service.calls) == 2


async def test_a_refused_key_names_its_setting_and_never_the_key(fresh_service, work_dir, caplog):
    wrong = "zsk-wrong0123456789abcdef0123456789abcdefWRONG"
    engine = ZonosEngine({"api_key": wrong, "base_url": fresh_service.url})
    engine.load()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(EngineUnavailableError) as refused:
        await collect(engine.stream(await segment(engine, work_dir)))
    assert "[engines.zonos] api_key or ZYPHRA_API_KEY" in refused.value.message
    assert len(fresh_service.calls) == 1  # a refused key is not tried again
    assert wrong not in str(refused.value)
    assert all(wrong not in record.getMessage() for record in caplog.records)


def test_a_missing_key_names_both_places(monkeypatch):
    monkeypatch.delenv("ZYPHRA_API_KEY", raising=False)
    with pytest.raises(EngineUnavailableError) as missing:
        ZonosEngine().load()
    assert "[engines.zonos] api_key" in missing.value.message
    assert "ZYPHRA_API_KEY" in missing.value.message


async def test_a_field_zyphra_refuses_is_named_as_ours(zonos, fresh_service, work_dir, tmp_path):
    not_audio = tmp_path / "clip.wav"
    not_audio.write_bytes(b"not audio at all" * 8)  # base64 of it is fine; Zyphra's 422 on it
    piece = await segment(zonos, work_dir)
    options = replace(piece.voicing.options, reference_audio=str(not_audio))
    piece = replace(piece, voicing=replace(piece.voicing, options=options))
    with pytest.raises(InvalidRequestError) as refused:
        await collect(zonos.stream(piece))
    assert refused.value.param == "voice" and "speaker_audio" in refused.value.message


# Closing


async def test_cancelling_closes_zyphras_connection(zonos, fresh_service, work_dir):
    fresh_service.pace = 0.02
    stream = zonos.stream(await segment(zonos, work_dir, LONG_TEXT))
    first = asyncio.ensure_future(anext(stream))
    assert await asyncio.to_thread(sending, fresh_service)  # the file is coming
    cancelled_at = time.monotonic()
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    await stream.aclose()
    [call] = fresh_service.calls
    assert await asyncio.to_thread(call.closed.wait, 2)
    assert call.closed_at - cancelled_at < CLOSE_WITHIN


def sending(service: ZonosServer, within: float = 5.0) -> bool:
    """Whether the stand-in starts sending its answer to the first call ``within`` seconds."""
    deadline = time.monotonic() + within
    while not (service.calls and service.calls[0].pieces):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# Cost


async def test_the_estimate_is_within_a_tenth_of_the_bill(zonos, fresh_service, work_dir):
    synthesizer = synthesizer_for(zonos, work_dir)
    text = " ".join([LONG_TEXT, LONG_TEXT.replace("The", "A"), LONG_TEXT.replace("The", "Our")])
    request = SpeechRequest(input=text, model="zonos")
    prepared = await asyncio.to_thread(synthesizer.prepare, request)
    await collect(synthesizer.stream(prepared))
    assert len(fresh_service.calls) > 1  # cut into segments, each a call billed on its own
    price = zonos.settings.prices[zonos.settings.model].per_minute
    options = SynthesisOptions("american_female")
    estimate = sum(zonos.cost(call.fields["text"], options).usd for call in fresh_service.calls)
    billed = sum(bill.seconds for bill in fresh_service.bills) / 60 * price
    assert abs(estimate - billed) <= 0.1 * billed, (estimate, billed)


def test_a_price_overridden_changes_that_model_alone():
    prices = {"zonos-v0.1-hybrid": {"per_minute": 0.06}}
    options = SynthesisOptions("american_female")
    hybrid = ZonosEngine({"model": "zonos-v0.1-hybrid", "prices": prices})
    transformer = ZonosEngine({"prices": prices})
    seconds = 175 / 17.55  # 175 characters at 15 phonemes a second
    assert hybrid.cost("x" * 175, options).usd == pytest.approx(seconds / 60 * 0.06, rel=1e-3)
    assert transformer.cost("x" * 175, options).usd < hybrid.cost("x" * 175, options).usd
    # Twice as fast, half the speech billed; a faster base rate likewise.
    faster = SynthesisOptions("american_female", speed=2.0)
    assert hybrid.cost("x" * 175, faster).usd == pytest.approx(seconds / 120 * 0.06, rel=1e-3)
    rate_30 = replace(options, engine_options=ZonosOptions(speaking_rate=30))
    assert hybrid.cost("x" * 175, rate_30) == hybrid.cost("x" * 175, faster)


# Secrets


async def test_the_key_is_in_no_log_metric_or_listing(fresh_service, work_dir, caplog):
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        data_dir=work_dir / "app", default_engine="zonos", default_voice="american_female",
        engines={"zonos": {"api_key": KEY, "base_url": fresh_service.url, "retry_backoff": 0}},
    )  # fmt: skip
    fresh_service.failures = [429, 500]
    with running(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            for _ in range(2):
                await client.post("/v1/audio/speech", json={"input": TEXT})
            said = [(await client.get(path)).text for path in ("/metrics", "/v1/models",
                                                               "/v1/audio/voices")]  # fmt: skip
    assert len(fresh_service.calls) >= 3  # the key was used
    assert all(KEY not in text for text in said)
    assert all(KEY not in record.getMessage() for record in caplog.records)
