"""The edge engine against Microsoft Edge's read-aloud protocol served on loopback
(tests/providers/edge_server.py): edge-tts itself speaks to it, Piper's MP3 comes back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import edge_tts.communicate
import numpy as np
import pytest
from edge_tts.drm import DRM

from tests.audio.signals import rms
from tests.conftest import free_port
from tests.providers.edge_server import VOICE_LIST, EdgeServer, edge_service  # noqa: F401
from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import Segment, SynthesisOptions, Voicing
from voxserve.engines.edge import FALLBACK_VOICES, EdgeEngine
from voxserve.errors import (
    EngineUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
)
from voxserve.request import SpeechRequest
from voxserve.server.ws_tts import speaker_table
from voxserve.synthesis.synthesizer import Synthesizer

TEXT = "The quick brown fox jumps over the lazy dog. Please bring your umbrella tomorrow."
LONG_TEXT = " ".join(["The birds sing at dawn, and the river runs on to the sea far away."] * 6)
ROLES = ["en-US-GuyNeural", "en-US-JennyNeural", "en-US-DavisNeural", "en-GB-SoniaNeural"]
SERVED_ONLY = "ja-JP-KeitaNeural"
"""A voice the service lists and the built-in list lacks."""


@pytest.fixture
def service(edge_service: EdgeServer) -> Iterator[EdgeServer]:  # noqa: F811 (the fixture)
    edge_service.reset()
    yield edge_service
    problems = list(edge_service.problems)
    edge_service.reset()
    assert problems == []  # everything edge-tts sent is what the real service takes


@pytest.fixture
def engine(service: EdgeServer, tmp_path: Path) -> EdgeEngine:
    engine = EdgeEngine({"retry_backoff": 0.01}, data_dir=tmp_path)
    engine.load()
    return engine


def segment(engine: EdgeEngine, text: str, voice: str = "en-US-GuyNeural", **options) -> Segment:
    found = engine.find_voice(voice)
    assert found is not None, voice
    return Segment(0, text, Voicing(engine, found, 24000, SynthesisOptions(voice, **options)), 0.0)


async def speak(engine: EdgeEngine, text: str = TEXT, **options) -> list[AudioChunk]:
    return [chunk async for chunk in engine.stream(segment(engine, text, **options))]


async def test_speech_streams_in_pieces_each_with_its_words(service, engine):
    chunks = await speak(engine)
    assert len(chunks) > 2 and {chunk.sample_rate for chunk in chunks} == {24000}
    samples = np.concatenate([chunk.samples for chunk in chunks])
    assert rms(samples) > 0.02
    assert 8 < len(TEXT) / (len(samples) / 24000) < 25  # speech, not a blip or a stall
    (connection,) = service.connections
    assert (connection.voice, connection.rate) == ("en-US-GuyNeural", "+0%")
    # Every word the service timed, in the chunk its audio starts in, from that chunk's start.
    spoken = service.spoken(TEXT, 1.0).words
    words, offset = [], 0.0
    for chunk in chunks:
        for word in chunk.words:
            assert 0 <= word.start <= chunk.duration
            words.append((word.text, word.start + offset, word.end + offset))
        offset += chunk.duration
    assert [word for word, _, _ in words] == [word for word, _, _ in spoken]
    assert [word for word, _, _ in words][:4] == ["The", "quick", "brown", "fox"]
    for (_, start, end), (_, sent_start, sent_end) in zip(words, spoken, strict=True):
        assert start == pytest.approx(sent_start, abs=1e-4)
        assert end == pytest.approx(sent_end, abs=1e-4)


@pytest.mark.parametrize(("speed", "rate"), [(1.5, "+50%"), (0.5, "-50%")])
async def test_speed_is_the_prosody_rate(service, engine, speed, rate):
    text = "Hello there, friend."
    quick = sum(chunk.duration for chunk in await speak(engine, text))
    timed = sum(chunk.duration for chunk in await speak(engine, text, speed=speed))
    assert [connection.rate for connection in service.connections] == ["+0%", rate]
    assert (timed < quick) if speed > 1 else (timed > quick)


def test_the_speaker_roles_are_edge_voices(engine, data_dir):
    synthesizer = Synthesizer(Settings(data_dir=data_dir))
    assert speaker_table(synthesizer, engine)[:4] == ROLES
    assert {voice["ShortName"] for voice in FALLBACK_VOICES} >= set(ROLES)  # offline too


async def test_a_role_speaks_with_its_voice(service, engine):
    await speak(engine, "Hello.", voice="en-GB-SoniaNeural")
    assert [connection.voice for connection in service.connections] == ["en-GB-SoniaNeural"]


@pytest.mark.parametrize(
    ("voice", "language"),
    [("en-US-GuyNeural", "en-US"), ("en-GB-SoniaNeural", "en"), ("de-DE-KatjaNeural", "de-DE"),
     ("pt-BR-FranciscaNeural", "pt-BR"), ("en-US-JennyNeural", "en-GB")],
)  # fmt: skip
def test_a_language_its_voice_speaks_is_taken(engine, data_dir, voice, language):
    synthesizer = Synthesizer(Settings(data_dir=data_dir))
    synthesizer.registry.register(engine)
    request = SpeechRequest(input="Hallo.", model="edge", voice=voice, language=language)
    prepared = synthesizer.prepare(request)
    assert prepared.voicing.voice.language == voice[:5]


def test_a_language_the_voice_lacks_is_refused_naming_language(engine, data_dir):
    synthesizer = Synthesizer(Settings(data_dir=data_dir))
    synthesizer.registry.register(engine)
    request = SpeechRequest(input="Hallo.", model="edge", voice="en-US-GuyNeural", language="de")
    with pytest.raises(InvalidRequestError, match="does not speak 'de'") as refused:
        synthesizer.prepare(request)
    assert (refused.value.param, refused.value.code) == ("language", "unsupported_language")
    assert {voice.language for voice in engine.voices()} == {v["Locale"] for v in VOICE_LIST}


def test_a_text_in_another_language_is_spoken_by_a_voice_of_that_language(engine, data_dir):
    synthesizer = Synthesizer(Settings(data_dir=data_dir))  # language_mismatch = "pick_voice"
    synthesizer.registry.register(engine)
    german = "Guten Morgen, wie geht es Ihnen heute? Ich hoffe, es geht Ihnen wirklich gut."
    request = SpeechRequest(input=german, model="edge", voice="en-US-GuyNeural")
    assert synthesizer.prepare(request).voicing.voice.id == "de-DE-KatjaNeural"


@pytest.mark.parametrize("failures", [["drop", "drop"], [503], [500]], ids=str)
async def test_a_failed_connection_before_audio_is_tried_again(service, engine, failures):
    # aiohttp itself asks again once after a dropped GET (RFC 9112), the engine once more.
    service.failures = list(failures)
    assert rms(np.concatenate([c.samples for c in await speak(engine, "Hello.")])) > 0.02
    assert service.failures == [] and len(service.connections) == 1


async def test_a_rate_limit_is_waited_out_as_the_service_asks(service, engine):
    service.failures, service.retry_after = [429], "0.05"
    assert await speak(engine, "Hello.")
    assert service.failures == [] and len(service.connections) == 1
    # Asked to wait longer than retry_max_wait: no retry, the client is told how long.
    patient = EdgeEngine({"retry_max_wait": 1.0}, data_dir=engine.data_dir)
    service.failures, service.retry_after = [429, 429], "30"
    with pytest.raises(UpstreamRateLimitedError) as limited:
        await speak(patient, "Hello.")
    assert (limited.value.code, limited.value.retry_after) == ("edge_rate_limited", 30.0)
    assert service.failures == [429]


async def test_failing_on_every_try_fails_with_a_passing_error(service, engine, monkeypatch):
    service.failures = ["drop"] * 4
    with pytest.raises(UpstreamError) as failed:
        await speak(engine, "Hello.")
    assert failed.value.code == "edge_unreachable" and failed.value.retryable
    assert service.failures == [] and service.connections == []
    # Nobody listening at all: the same, after the same one retry.
    monkeypatch.setattr(edge_tts.communicate, "WSS_URL", f"ws://127.0.0.1:{free_port()}/x?a=b")
    with pytest.raises(UpstreamError, match="Edge TTS failed: Cannot connect") as failed:
        await speak(engine, "Hello.")
    assert failed.value.code == "edge_unreachable"


async def test_a_connection_ended_after_audio_fails_without_a_retry(service, engine):
    service.truncate = 2
    with pytest.raises(UpstreamError, match="before the end of the speech") as failed:
        await speak(engine, LONG_TEXT)
    assert failed.value.code == "edge_truncated"
    assert len(service.connections) == 1  # audio had gone out: never spoken twice


async def test_a_refusal_of_the_client_is_not_tried_again(service, engine):
    service.failures = [403, 403]  # no Date to correct the clock by
    with pytest.raises(EngineUnavailableError, match="update edge-tts") as refused:
        await speak(engine, "Hello.")
    assert refused.value.code == "edge_forbidden"
    assert service.failures == []  # edge-tts' own second try, then none of ours


async def test_a_clock_off_by_minutes_is_corrected_from_the_services_date(service, engine):
    service.clock_offset = 900.0  # the service is a quarter of an hour ahead: tokens differ
    skew = DRM.clock_skew_seconds
    try:
        assert await speak(engine, "Hello.")
        assert DRM.clock_skew_seconds - skew == pytest.approx(900, abs=5)
    finally:
        DRM.clock_skew_seconds = skew
    assert len(service.connections) == 2  # the refused one, then the one that spoke


async def test_a_client_that_goes_closes_the_websocket(service, engine):
    service.pace = 0.05  # a long utterance, still streaming when the client goes
    stream = engine.stream(segment(engine, LONG_TEXT))
    assert len((await anext(stream)).samples)
    closed = time.monotonic()
    await stream.aclose()
    (connection,) = service.connections
    assert await asyncio.to_thread(connection.closed.wait, 10)
    assert connection.closed_at - closed < 0.2, "the service saw the socket close late"
    assert connection.audio_frames < len(service.spoken(LONG_TEXT, 1.0).mp3) // 1200


def test_the_voice_list_is_kept_for_offline_use(service, tmp_path):
    engine = EdgeEngine(data_dir=tmp_path)
    assert SERVED_ONLY not in {voice.id for voice in engine.voices()}  # the built-in list
    engine.load()
    listed = [voice.id for voice in engine.voices()]
    assert listed == [voice["ShortName"] for voice in VOICE_LIST]
    assert "ja-JP" in engine.capabilities.languages
    (request,) = service.voice_list_requests
    assert request["Sec-MS-GEC-Version"].startswith("2-")
    # A new engine on the same data directory: the saved list, offline, before any load.
    service.voices_available = False
    again = EdgeEngine(data_dir=tmp_path)
    assert [voice.id for voice in again.voices()] == listed
    again.load()  # the service failing: the saved list stays
    assert [voice.id for voice in again.voices()] == listed
    assert again.capabilities == engine.capabilities
    assert len(service.voice_list_requests) == 2
    # Never fetched and offline: the built-in list, the speaker roles among them.
    fresh = EdgeEngine(data_dir=tmp_path / "elsewhere")
    fresh.load()
    assert [voice.id for voice in fresh.voices()] == [v["ShortName"] for v in FALLBACK_VOICES]


def test_a_voice_says_its_locale_and_who_speaks(engine):
    guy = engine.find_voice("en-US-GuyNeural")
    assert guy is not None
    assert (guy.language, guy.speaks(), guy.engine) == ("en-US", ("en-US",), "edge")
    assert guy.name == "Microsoft Guy Online (Natural) - English (United States)"
    assert guy.description == "Male, Friendly"
    assert engine.cost("Hello.", SynthesisOptions("en-US-GuyNeural")) is None  # free


async def test_a_synthesizer_speaks_through_the_registered_engine(service, data_dir):
    synthesizer = Synthesizer(Settings(data_dir=data_dir))
    request = SpeechRequest(input=TEXT, model="edge", voice="en-US-JennyNeural")
    chunks = []
    async with contextlib.aclosing(synthesizer.stream(request)) as stream:
        chunks = [chunk async for chunk in stream]
    assert rms(np.concatenate([chunk.samples for chunk in chunks])) > 0.02
    # Every connection that spoke spoke with Jenny (one that ended before its ssml frame, tried
    # again, or a previous test's closing late, says no voice and made no audio).
    spoke = {connection.voice for connection in service.connections} - {None}
    assert spoke == {"en-US-JennyNeural"}
    words = [word.text for chunk in chunks for word in chunk.words]
    assert words[:3] == ["The", "quick", "brown"] and "umbrella" in words
