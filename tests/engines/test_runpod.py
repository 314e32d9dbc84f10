"""The runpod engine against RunPod's protocol served locally: the SDK's own local API server
(``--rp_serve_api``) running our worker, and, where the cloud behaves differently (API keys,
endpoint ids in the path, jobs left queued), a stand-in for RunPod's API in front of it."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tests.audio.signals import rms
from tests.conftest import free_port, running
from voxserve.audio import StreamResampler
from voxserve.audio.frames import AudioChunk
from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE
from voxserve.config import Settings
from voxserve.engines.base import Segment, SynthesisOptions, Voicing
from voxserve.engines.runpod import RunpodEngine, RunpodSettings
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError
from voxserve.request import SpeechRequest
from voxserve.synthesis.synthesizer import Synthesizer

API_KEY = "rp-test-key"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to bring your umbrella tomorrow morning.",
    "Our meeting has been moved to the large conference room.",
]


@pytest.fixture(scope="module")
def cloud(worker_api: str):
    """RunPod's API as the cloud serves it (``/v2/{endpoint_id}/...`` behind a bearer key), in
    front of the worker's API server. ``mode``: "sync" forwards each call; "queue" answers
    ``/runsync`` as RunPod does when its wait runs out (the job id, IN_PROGRESS), the result
    then read from ``/status``; "stuck" leaves every job in the queue; "echo" answers an error
    repeating the request's Authorization header and URL. Each status in ``failures`` answers
    one call first, as a busy or failing RunPod does."""
    app = FastAPI()
    app.state.mode = "sync"
    app.state.calls = []
    app.state.failures = []
    app.state.watches = []  # (the end of a call, the event set when it is made)
    app.state.failing_status = False  # "stuck": /status answers 503

    @app.post("/v2/{endpoint_id}/{operation:path}")
    async def operation(endpoint_id: str, operation: str, request: Request) -> JSONResponse:
        call = f"{endpoint_id}/{operation}"
        app.state.calls.append(call)
        for ending, seen in app.state.watches:
            if call.endswith(ending):
                seen.set()
        if app.state.failures:
            return JSONResponse({"error": "busy"}, status_code=app.state.failures.pop(0))
        if app.state.mode == "echo":  # an error repeating what it was sent, as one server did
            sent = f"{request.headers.get('authorization')} at {request.url}"
            return JSONResponse({"error": sent, "code": sent}, status_code=500)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if app.state.mode == "stuck":
            if operation.startswith("status/") and app.state.failing_status:
                return JSONResponse({"error": "busy"}, status_code=503)
            status = "CANCELLED" if operation.startswith("cancel/") else "IN_QUEUE"
            return JSONResponse({"id": "job-1", "status": status})
        if operation == "runsync" and app.state.mode == "queue":
            operation = "run"
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await client.post(
                f"{worker_api}/{operation}",
                content=await request.body(),
                headers={"content-type": "application/json"},
            )
        return JSONResponse(answer.json(), status_code=answer.status_code)

    with running(app) as url:
        app.state.url = url
        yield app


@pytest.fixture
def cloud_engine(cloud: FastAPI):
    def engine(**settings) -> RunpodEngine:
        defaults = {"api_key": API_KEY, "endpoint_id": "voxserve-test", "voices": ["joe"]}
        engine = RunpodEngine({**defaults, "base_url": cloud.state.url + "/v2", **settings})
        engine.load()
        return engine

    yield engine
    cloud.state.mode, cloud.state.calls = "sync", []
    cloud.state.failures, cloud.state.watches, cloud.state.failing_status = [], [], False


async def speak(engine: RunpodEngine, text: str, voice: str = "joe") -> list[AudioChunk]:
    """``text`` through the engine's contract, as one segment."""
    found = engine.find_voice(voice)
    assert found is not None
    segment = Segment(0, text, Voicing(engine, found, 24000, SynthesisOptions(voice)), 0.0)
    return [chunk async for chunk in engine.stream(segment)]


async def calls_reach(cloud: FastAPI, call: str) -> None:
    """Waits until the stand-in has seen a call ending in ``call`` (a generous limit: this
    asserts no timing). The stand-in runs in its own thread: a threading.Event tells."""
    seen = threading.Event()
    cloud.state.watches.append((call, seen))
    if not any(made.endswith(call) for made in cloud.state.calls):
        assert await asyncio.to_thread(seen.wait, 30), f"no {call} call"


def heard(transcriber, samples: np.ndarray, sample_rate: int) -> str:
    """What Whisper hears in the audio, in lowercase words."""
    resampled = StreamResampler(sample_rate, WHISPER_SAMPLE_RATE).process(samples, last=True)
    return transcriber.transcribe_samples(resampled, beam_size=1).lower()


def test_an_unconfigured_engine_is_unavailable_and_offers_no_voices(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert RunpodEngine().voices() == []
    with pytest.raises(InvalidRequestError, match="api_key .* or the RUNPOD_API_KEY") as refused:
        RunpodEngine({"endpoint_id": "abc"}).load()
    assert (refused.value.code, refused.value.param) == ("engine_not_configured", "model")
    monkeypatch.setenv("RUNPOD_API_KEY", "from-the-environment")
    with pytest.raises(InvalidRequestError, match="set \\[engines.runpod\\] endpoint_id"):
        RunpodEngine().load()
    engine = RunpodEngine({"endpoint_id": "abc"})
    engine.load()  # no network until the first job
    assert [voice.id for voice in engine.voices()] == ["default"]
    assert engine.capabilities.speed_range == (1.0, 1.0) and not engine.capabilities.cloning
    engine.unload()


async def test_sentences_become_jobs_whose_wavs_are_joined_into_speech(
    worker_api, piper_synthesizer
):
    engine = RunpodEngine({"api_key": API_KEY, "base_url": worker_api, "voices": ["joe"]})
    engine.load()
    text = " ".join(SENTENCES)
    chunks = await speak(engine, text)
    assert len(chunks) == len(SENTENCES)  # one job a sentence
    assert {chunk.sample_rate for chunk in chunks} == {22050}  # the worker's, as it sent it
    assert chunks[1].samples[0] == 0.0 and chunks[0].samples[-1] == pytest.approx(0, abs=1e-3)
    samples = np.concatenate([chunk.samples for chunk in chunks])
    seconds = len(samples) / 22050
    assert 8 < len(text) / seconds < 25  # characters a second: speech, not a blip or a stall
    assert rms(samples) > 0.02
    words = heard(piper_synthesizer.resolver.transcriber, samples, 22050)
    for word in ("fox", "umbrella", "conference"):
        assert word in words, words


async def test_a_synthesizer_speaks_through_the_registered_engine(worker_api, data_dir: Path):
    engine_settings = {"api_key": API_KEY, "base_url": worker_api, "voices": ["joe"]}
    synthesizer = Synthesizer(Settings(data_dir=data_dir, engines={"runpod": engine_settings}))
    request = SpeechRequest(input=" ".join(SENTENCES[:2]), model="runpod", voice="joe")
    chunks = [chunk async for chunk in synthesizer.stream(request)]
    assert {chunk.sample_rate for chunk in chunks} == {24000}  # the engine's declared rate
    samples = np.concatenate([chunk.samples for chunk in chunks])
    assert 3.0 < len(samples) / 24000 < 10.0 and rms(samples) > 0.02
    with pytest.raises(InvalidRequestError, match="outside runpod's range 1.0-1.0"):
        synthesizer.prepare(request.model_copy(update={"speed": 1.5}))


async def test_a_failed_job_raises_the_workers_message(worker_api):
    engine = RunpodEngine({"api_key": API_KEY, "base_url": worker_api, "voices": ["nobody"]})
    engine.load()
    with pytest.raises(EngineError, match="FAILED: unknown voice 'nobody' for engine 'piper'"):
        await speak(engine, "Hello.", voice="nobody")


def test_each_event_loop_gets_its_own_connections(worker_api):
    # The library API (voxserve.synthesize) runs an event loop per call, one engine for all.
    engine = RunpodEngine({"api_key": API_KEY, "base_url": worker_api, "voices": ["joe"]})
    engine.load()
    for text in ("First call.", "Second call."):
        chunks = asyncio.run(speak(engine, text))
        assert rms(chunks[0].samples) > 0.02
    engine.unload()


async def test_endpoint_ids_and_keys_reach_runpod(cloud, cloud_engine):
    chunks = await speak(cloud_engine(engine="piper"), "Hi there.")
    assert rms(chunks[0].samples) > 0.02
    assert cloud.state.calls == ["voxserve-test/runsync"]


async def test_a_job_still_queued_is_polled_until_done(cloud, cloud_engine):
    cloud.state.mode = "queue"
    chunks = await speak(cloud_engine(), "Hello again.")
    assert rms(chunks[0].samples) > 0.02
    assert [call.split("/")[1] for call in cloud.state.calls] == ["runsync", "status"]


async def test_a_job_that_never_starts_times_out_and_is_cancelled(cloud, cloud_engine):
    cloud.state.mode = "stuck"
    with pytest.raises(EngineError, match="still IN_QUEUE after 1 s") as raised:
        await speak(cloud_engine(timeout=1), "Hello.")
    assert not raised.value.retryable  # another try would wait as long again
    assert cloud.state.calls[0] == "voxserve-test/runsync"
    assert cloud.state.calls[-1] == "voxserve-test/cancel/job-1"


async def test_a_stream_cancelled_mid_job_cancels_the_job_on_runpod(cloud, cloud_engine):
    cloud.state.mode = "stuck"
    task = asyncio.create_task(speak(cloud_engine(), "Hello."))
    await calls_reach(cloud, "/status/job-1")  # RunPod has named the job: it is being polled
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await calls_reach(cloud, "/cancel/job-1")


@pytest.mark.parametrize("status", [429, 503])
async def test_a_busy_or_failing_runpod_is_tried_again(cloud, cloud_engine, status):
    cloud.state.failures = [status]
    chunks = await speak(cloud_engine(), "Hello again.")
    assert rms(chunks[0].samples) > 0.02
    assert cloud.state.calls == ["voxserve-test/runsync"] * 2


async def test_a_job_whose_polling_fails_is_cancelled_before_the_next_try(cloud, cloud_engine):
    cloud.state.mode, cloud.state.failing_status = "stuck", True
    with pytest.raises(EngineError, match="HTTP 503 Service Unavailable to /status/job-1"):
        await speak(cloud_engine(), "Hello.")
    once = ["voxserve-test/runsync", "voxserve-test/status/job-1", "voxserve-test/cancel/job-1"]
    assert cloud.state.calls == once * 2  # the try and the retry, each job cancelled


async def test_a_client_error_from_runpod_is_not_tried_again(cloud, cloud_engine):
    cloud.state.failures = [400]
    with pytest.raises(EngineError, match="HTTP 400 Bad Request to /runsync") as raised:
        await speak(cloud_engine(), "Hello.")
    assert not raised.value.retryable
    assert cloud.state.calls == ["voxserve-test/runsync"]


async def test_a_refused_api_key_says_so(cloud_engine):
    engine = cloud_engine(api_key="wrong")
    with pytest.raises(EngineUnavailableError, match="refused the API key \\(HTTP 401\\)"):
        await speak(engine, "Hello.")


async def test_no_key_or_password_reaches_a_message_or_a_log(cloud, cloud_engine, caplog):
    cloud.state.mode = "echo"
    caplog.set_level(logging.DEBUG)
    password = "hunter2-runpod-password"
    with_password = cloud.state.url.replace("http://", f"http://rp:{password}@") + "/v2"
    messages = []
    engines = [cloud_engine(), cloud_engine(base_url=with_password)]
    for engine in engines:
        with pytest.raises(EngineError) as caught:
            await speak(engine, "Hello.")
        messages.append(caught.value.message)
    assert messages == ["RunPod answered HTTP 500 Internal Server Error to /runsync"] * 2
    shown = "\n".join(messages + [repr(engine.settings) for engine in engines]) + caplog.text
    assert "HTTP Request: POST" in caplog.text  # httpx's log lines were captured
    basic = base64.b64encode(f"rp:{password}".encode()).decode()
    for secret in (API_KEY, password, basic):
        assert secret not in shown


async def test_an_unreachable_endpoint_says_where(cloud_engine):
    engine = cloud_engine(base_url=f"http://127.0.0.1:{free_port()}", endpoint_id=None)
    with pytest.raises(EngineError, match="cannot reach RunPod at http://127.0.0.1") as raised:
        await speak(engine, "Hello.")
    assert raised.value.retryable  # tried again once (retries), then given up


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"endpoint_id": "abc", "timout": 5}, "engines.runpod.timout: Extra inputs"),
        ({"timeout": 0}, "engines.runpod.timeout: "),
        ({"temperature": 5}, "engines.runpod.temperature: "),
        ({"languages": []}, "engines.runpod.languages: "),
    ],
)
def test_invalid_settings_are_refused_when_the_configuration_loads(table, problem, data_dir):
    with pytest.raises(ValidationError, match=problem):
        Settings(data_dir=data_dir, engines={"runpod": table})


def test_the_api_key_is_kept_secret_in_the_settings():
    settings = RunpodSettings(api_key=API_KEY, voices=["joe"])
    assert API_KEY not in repr(settings) and API_KEY not in str(settings.model_dump())
    assert RunpodEngine(settings).capabilities.concurrency == 2  # the engine's default
    assert RunpodEngine({"concurrency": 5}).capabilities.concurrency == 5
