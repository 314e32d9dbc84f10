"""What remote engines share (engines/remote.py), the base's backoff, and engine options."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
from pydantic import Field

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.audio.frames import AudioChunk
from voxserve.engines.base import (
    Capabilities,
    Engine,
    EngineOptions,
    Segment,
    SynthesisOptions,
    Voice,
    Voicing,
)
from voxserve.engines.remote import (
    api_key,
    http_url,
    provider_detail,
    redact,
    refusal,
    retry_after,
)
from voxserve.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
)
from voxserve.request import SpeechRequest
from voxserve.streaming import ClientError

KEY = "sk-test-0123456789abcdefSECRET"


def refused(status: int, body=b"", headers=None, **given):
    return refusal(
        "Provider", status, headers or {}, body, engine="provider",
        key_from="[engines.provider] api_key", secrets=(KEY,), **given,
    )  # fmt: skip


def test_a_refused_key_names_the_setting_and_never_the_key():
    error = refused(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
    assert isinstance(error, EngineUnavailableError)
    assert "[engines.provider] api_key" in error.message
    assert KEY not in error.message and error.code == "provider_unauthorized"


def test_a_429_is_passing_and_keeps_the_wait_the_provider_asked_for():
    error = refused(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "3"})
    assert isinstance(error, UpstreamRateLimitedError) and error.retryable
    assert error.retry_after == 3.0 and "slow down" in error.message
    told = ClientError.of(error)
    assert (told.status, told.retry_after) == (429, 3)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_are_passing(status):
    error = refused(status, b"upstream exploded")
    assert isinstance(error, UpstreamError) and error.retryable
    assert error.status_code == 502


def test_a_provider_validation_error_names_our_field():
    fastapi_shape = {"detail": [{"loc": ["body", "voice_id"], "msg": "voice not found"}]}
    error = refused(422, fastapi_shape, fields={"voice_id": "voice"})
    assert isinstance(error, InvalidRequestError)
    assert error.param == "voice" and "voice not found" in error.message
    openai_shape = {"error": {"message": "bad speed", "param": "speed"}}
    assert refused(400, openai_shape, fields={"speed": "speed"}).param == "speed"
    # A field we do not map is the text's fault as far as the client can tell.
    assert refused(400, {"error": {"message": "no"}}).param == "input"


def test_error_bodies_of_every_shape_give_their_message():
    assert provider_detail(b'{"detail": {"status": "x", "message": "quota"}}').message == "quota"
    assert provider_detail('{"message": "plain"}').message == "plain"
    assert provider_detail(b"not json\nsecond line").message == "not json"
    assert provider_detail(b"[1, 2]").message == ""


def test_retry_after_in_seconds_milliseconds_and_dates():
    assert retry_after({"retry-after-ms": "1500"}) == 1.5
    assert retry_after({"Retry-After": "2"}) == 2.0
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < retry_after({"Retry-After": later}) <= 30
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


def test_redact_hides_the_key_and_key_shapes():
    text = redact(f"failed for {KEY} and Bearer abc.def-123", (KEY,))
    assert KEY not in text and "abc.def-123" not in text


def test_a_missing_key_names_both_places(monkeypatch):
    monkeypatch.delenv("PROVIDER_API_KEY", raising=False)
    with pytest.raises(EngineUnavailableError, match="PROVIDER_API_KEY") as caught:
        api_key("provider", None, "PROVIDER_API_KEY")
    assert "[engines.provider] api_key" in caught.value.message
    monkeypatch.setenv("PROVIDER_API_KEY", KEY)
    assert api_key("provider", None, "PROVIDER_API_KEY") == KEY


# Backoff in Engine.stream


class FlakyEngine(Engine):
    """Fails with ``errors`` in turn, then speaks; records when each try began."""

    name = "flaky"

    def __init__(self, errors: list[EngineError], **settings):
        super().__init__(settings)
        self.errors = list(errors)
        self.tries: list[float] = []

    def describe(self) -> Capabilities:
        return Capabilities(sample_rate=16000, languages=("en",), max_input_chars=100)

    def voices(self) -> list[Voice]:
        return [Voice("one", self.name, "one", "en")]

    def load(self) -> None:
        pass

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        self.tries.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        yield AudioChunk(np.full(1600, 0.1, dtype=np.float32), 16000)


def a_segment(engine: Engine) -> Segment:
    voicing = Voicing(engine, engine.voices()[0], 16000, SynthesisOptions(voice="one"))
    return Segment(0, "Hello.", voicing, 0.0)


async def spoken(engine: Engine) -> list[AudioChunk]:
    return [chunk async for chunk in engine.stream(a_segment(engine))]


def passing(retry_after: float | None = None) -> EngineError:
    return UpstreamError("busy", code="busy", retryable=True, retry_after=retry_after)


async def test_retries_wait_what_the_provider_asks():
    engine = FlakyEngine([passing(retry_after=0.3)], retries=1)
    assert await spoken(engine)
    assert engine.tries[1] - engine.tries[0] >= 0.3


async def test_retries_back_off_exponentially_with_jitter():
    engine = FlakyEngine([passing(), passing()], retries=2, retry_backoff=0.1)
    assert await spoken(engine)
    first, second = (b - a for a, b in zip(engine.tries, engine.tries[1:], strict=False))
    assert 0.05 <= first and 0.1 <= second  # at least half of 0.1 s, then of 0.2 s


async def test_a_provider_asking_for_longer_than_we_wait_fails_at_once():
    engine = FlakyEngine([passing(retry_after=60)], retries=3, retry_max_wait=5)
    with pytest.raises(UpstreamError):
        await spoken(engine)
    assert len(engine.tries) == 1


async def test_a_cancelled_backoff_stops_at_once():
    engine = FlakyEngine([passing(retry_after=5)], retries=1)
    task = asyncio.ensure_future(spoken(engine))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(engine.tries) == 1


# Engine options: a request's and a profile's, checked by the engine's own model


class ToneOptions(EngineOptions):
    brightness: float = Field(0.5, ge=0, le=1)
    warmth: float = Field(0.5, ge=0, le=1)


class OptionedEngine(FakeEngine):
    Options = ToneOptions


def optioned_synthesizer(tmp_path):
    return make_synthesizer(OptionedEngine(), data_dir=tmp_path)


def test_engine_options_reach_the_engine_checked(tmp_path):
    synthesizer = optioned_synthesizer(tmp_path)
    request = SpeechRequest(input="Hi there.", engine_options={"brightness": 0.9})
    options = synthesizer.prepare(request).voicing.options
    assert options.engine_options == ToneOptions(brightness=0.9)


def test_a_wrong_engine_option_names_its_field(tmp_path):
    synthesizer = optioned_synthesizer(tmp_path)
    for given, field in (({"brightness": 3}, "engine_options.brightness"),
                         ({"colour": 1}, "engine_options.colour")):  # fmt: skip
        with pytest.raises(InvalidRequestError) as caught:
            synthesizer.prepare(SpeechRequest(input="Hi.", engine_options=given))
        assert caught.value.param == field


def test_an_engine_without_options_refuses_them(tmp_path):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path)
    with pytest.raises(InvalidRequestError) as caught:
        synthesizer.prepare(SpeechRequest(input="Hi.", engine_options={"brightness": 1}))
    assert caught.value.param == "engine_options"


def test_a_profiles_options_are_defaults_a_request_overrides(tmp_path):
    from voxserve.voices.library import VoiceLibrary

    synthesizer = optioned_synthesizer(tmp_path)
    library = VoiceLibrary(
        synthesizer.resolver.voices, synthesizer.settings, registry=synthesizer.registry
    )
    profile = {"id": "bright", "engine": "fake", "voice": "tone"}
    with pytest.raises(InvalidRequestError) as caught:
        library.create({**profile, "engine_options": {"warmth": 7}})
    assert caught.value.param == "engine_options.warmth"
    library.create({**profile, "engine_options": {"brightness": 0.8, "warmth": 0.1}})
    request = SpeechRequest(input="Hi.", voice="bright", engine_options={"warmth": 0.9})
    options = synthesizer.prepare(request).voicing.options.engine_options
    assert options == ToneOptions(brightness=0.8, warmth=0.9)


@pytest.mark.parametrize("given", ["ftp://user:secret@host/v1", "not a url", "https://", ""])
def test_a_base_url_that_is_not_http_names_its_setting_and_hides_its_password(given):
    with pytest.raises(EngineUnavailableError) as refused:
        http_url("zonos", given)
    assert "[engines.zonos] base_url" in refused.value.message
    assert "secret" not in refused.value.message
    assert refused.value.code == "engine_misconfigured"
    assert http_url("zonos", "https://user:secret@api.example/v1").host == "api.example"
