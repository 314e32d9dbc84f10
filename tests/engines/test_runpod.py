"""The runpod engine against RunPod's protocol served locally: the SDK's own local API server
(``--rp_serve_api``) running our worker, and, where the cloud behaves differently (API keys,
endpoint ids in the path, jobs left queued), a stand-in for RunPod's API in front of it."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.audio.signals import rms
from tests.conftest import free_port, running, serving
from voxserve.audio import StreamResampler
from voxserve.config import Settings
from voxserve.engines.base import SynthesisOptions
from voxserve.engines.runpod import RunpodEngine
from voxserve.errors import EngineError, EngineUnavailableError, InvalidRequestError
from voxserve.request import SpeechRequest
from voxserve.synthesis.synthesizer import Synthesizer
from voxserve.voices.transcribe import WHISPER_SAMPLE_RATE

API_KEY = "rp-test-key"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please remember to bring your umbrella tomorrow morning.",
    "Our meeting has been moved to the large conference room.",
]


@pytest.fixture(scope="module")
def worker_api(tmp_path_factory: pytest.TempPathFactory):
    """``python -m voxserve.runpod_worker --rp_serve_api``: RunPod's job API, served locally."""
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if "VOXSERVE_" not in key}
    environment.update(
        VOXSERVE_DATA_DIR=str(tmp_path_factory.mktemp("runpod-worker")),
        RUNPOD_LOG_LEVEL="WARN",
        UVICORN_LOG_LEVEL="warning",
    )
    command = [sys.executable, "-m", "voxserve.runpod_worker", "--rp_serve_api"]
    command += ["--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)]
    process = subprocess.Popen(command, env=environment)
    url = f"http://127.0.0.1:{port}"
    with serving(process, url + "/openapi.json"):
        yield url


@pytest.fixture(scope="module")
def cloud(worker_api: str):
    """RunPod's API as the cloud serves it (``/v2/{endpoint_id}/...`` behind a bearer key), in
    front of the worker's API server. ``mode``: "sync" forwards each call; "queue" answers
    ``/runsync`` as RunPod does when its wait runs out (the job id, IN_PROGRESS), the result
    then read from ``/status``; "stuck" leaves every job in the queue; "echo" answers an error
    repeating the request's Authorization header and URL."""
    app = FastAPI()
    app.state.mode = "sync"
    app.state.calls = []

    @app.post("/v2/{endpoint_id}/{operation:path}")
    async def operation(endpoint_id: str, operation: str, request: Request) -> JSONResponse:
        app.state.calls.append(f"{endpoint_id}/{operation}")
        if app.state.mode == "echo":  # an error repeating what it was sent, as one server did
            sent = f"{request.headers.get('authorization')} at {request.url}"
            return JSONResponse({"error": sent, "code": sent}, status_code=500)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        if app.state.mode == "stuck":
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


def heard(transcriber, samples: np.ndarray, sample_rate: int) -> str:
    """What Whisper hears in the audio, in lowercase words."""
    resampled = StreamResampler(sample_rate, WHISPER_SAMPLE_RATE).process(samples, last=True)
    return transcriber.transcribe_samples(resampled, beam_size=1).lower()


def test_an_unconfigured_engine_is_unavailable_and_offers_no_voices(monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert RunpodEngine().voices() == []
    with pytest.raises(InvalidRequestError, match="api_key or the RUNPOD_API_KEY") as refused:
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


def test_sentences_become_jobs_whose_wavs_are_joined_into_speech(worker_api, piper_synthesizer):
    engine = RunpodEngine({"api_key": API_KEY, "base_url": worker_api, "voices": ["joe"]})
    engine.load()
    text = " ".join(SENTENCES)
    chunks = list(engine.synthesize(text, SynthesisOptions(voice="joe")))
    assert len(chunks) == len(SENTENCES)  # one job a sentence
    assert {chunk.sample_rate for chunk in chunks} == {22050}  # the worker's, as it sent it
    assert chunks[1].samples[0] == 0.0 and chunks[0].samples[-1] == pytest.approx(0, abs=1e-3)
    samples = np.concatenate([chunk.samples for chunk in chunks])
    seconds = len(samples) / 22050
    assert 8 < len(text) / seconds < 25  # characters a second: speech, not a blip or a stall
    assert rms(samples) > 0.02
    words = heard(piper_synthesizer.transcriber, samples, 22050)
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


def test_a_failed_job_raises_the_workers_message(worker_api):
    engine = RunpodEngine({"api_key": API_KEY, "base_url": worker_api, "voices": ["nobody"]})
    engine.load()
    with pytest.raises(EngineError, match="FAILED: unknown voice 'nobody' for engine 'piper'"):
        list(engine.synthesize("Hello.", SynthesisOptions(voice="nobody")))


def test_endpoint_ids_and_keys_reach_runpod(cloud, cloud_engine):
    chunks = list(cloud_engine(engine="piper").synthesize("Hi there.", SynthesisOptions("joe")))
    assert rms(chunks[0].samples) > 0.02
    assert cloud.state.calls == ["voxserve-test/runsync"]


def test_a_job_still_queued_is_polled_until_done(cloud, cloud_engine):
    cloud.state.mode = "queue"
    chunks = list(cloud_engine().synthesize("Hello again.", SynthesisOptions(voice="joe")))
    assert rms(chunks[0].samples) > 0.02
    assert [call.split("/")[1] for call in cloud.state.calls] == ["runsync", "status"]


def test_a_job_that_never_starts_times_out_and_is_cancelled(cloud, cloud_engine):
    cloud.state.mode = "stuck"
    with pytest.raises(EngineError, match="still IN_QUEUE after 1 s"):
        list(cloud_engine(timeout=1).synthesize("Hello.", SynthesisOptions(voice="joe")))
    assert cloud.state.calls[0] == "voxserve-test/runsync"
    assert cloud.state.calls[-1] == "voxserve-test/cancel/job-1"


def test_a_refused_api_key_says_so(cloud_engine):
    engine = cloud_engine(api_key="wrong")
    with pytest.raises(EngineUnavailableError, match="refused the API key \\(HTTP 401\\)"):
        list(engine.synthesize("Hello.", SynthesisOptions(voice="joe")))


def test_no_key_or_password_reaches_a_message_or_a_log(cloud, cloud_engine, caplog):
    cloud.state.mode = "echo"
    caplog.set_level(logging.DEBUG)
    password = "hunter2-runpod-password"
    with_password = cloud.state.url.replace("http://", f"http://rp:{password}@") + "/v2"
    messages = []
    for engine in (cloud_engine(), cloud_engine(base_url=with_password)):
        with pytest.raises(EngineError) as caught:
            list(engine.synthesize("Hello.", SynthesisOptions(voice="joe")))
        messages.append(caught.value.message)
    assert messages == ["RunPod answered HTTP 500 Internal Server Error to /runsync"] * 2
    shown = "\n".join(messages) + caplog.text
    assert "HTTP Request: POST" in caplog.text  # httpx's log lines were captured
    basic = base64.b64encode(f"rp:{password}".encode()).decode()
    for secret in (API_KEY, password, basic):
        assert secret not in shown


def test_an_unreachable_endpoint_says_where(cloud_engine):
    engine = cloud_engine(base_url=f"http://127.0.0.1:{free_port()}", endpoint_id=None)
    with pytest.raises(EngineError, match="cannot reach RunPod at http://127.0.0.1"):
        list(engine.synthesize("Hello.", SynthesisOptions(voice="joe")))
