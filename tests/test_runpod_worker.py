"""The RunPod worker: jobs through its handler (real speech from the embedded voice), input
errors in RunPod's shape, audio_url fetched safely from a local server, and the SDK's own local
test mode running the worker as RunPod would."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from tests.audio.signals import rms
from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.api import synthesize_to_file
from voxserve.audio import decode_audio
from voxserve.config import RunpodSettings
from voxserve.request import Sampling, SpeechRequest
from voxserve.runpod_worker import RunpodWorker

CLIP_TEXT = "Please remember to bring your umbrella tomorrow morning, it will rain."
MAX_AUDIO_MB = 1.0


def job(**fields) -> dict:
    return {"id": "test-job", "input": fields}


@pytest.fixture(scope="module")
def worker(piper_synthesizer) -> RunpodWorker:
    return RunpodWorker(piper_synthesizer)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, piper_synthesizer) -> bytes:
    path = tmp_path_factory.mktemp("runpod") / "clip.wav"
    synthesize_to_file(SpeechRequest(input=CLIP_TEXT), path, synthesizer=piper_synthesizer)
    return path.read_bytes()


@pytest.fixture(scope="module")
def files_url(clip: bytes):
    """A file server on loopback: a clip, files too big, a trickle, redirects, a 404."""
    app = FastAPI()
    too_big = b"\0" * int(MAX_AUDIO_MB * 2**20 + 1)

    @app.get("/clip.wav")
    async def clip_file() -> Response:
        return Response(clip, media_type="audio/wav")

    @app.get("/big.wav")
    async def big() -> Response:
        return Response(too_big, media_type="audio/wav")

    @app.get("/big-unannounced.wav")
    async def big_unannounced() -> StreamingResponse:
        async def pieces():  # chunked: no Content-Length warns of the size
            for start in range(0, len(too_big), 2**16):
                yield too_big[start : start + 2**16]

        return StreamingResponse(pieces(), media_type="audio/wav")

    @app.get("/slow.wav")
    async def slow() -> StreamingResponse:
        async def trickle():  # each byte well within a read timeout: only a deadline stops it
            for byte in clip[:20]:
                await asyncio.sleep(0.2)
                yield bytes([byte])

        return StreamingResponse(trickle(), media_type="audio/wav")

    @app.get("/moved.wav")
    async def moved() -> RedirectResponse:
        return RedirectResponse("/clip.wav")

    @app.get("/moved-to-ftp.wav")
    async def moved_to_ftp() -> RedirectResponse:
        return RedirectResponse("ftp://example.com/clip.wav")

    with running(app) as url:
        yield url


@pytest.fixture
def cloning(tmp_path: Path):
    """A worker on a cloning engine that may fetch from loopback (where the test files are)."""
    engine = FakeEngine(cloning=True)
    synthesizer = make_synthesizer(engine, data_dir=tmp_path)
    settings = RunpodSettings(max_audio_mb=MAX_AUDIO_MB, fetch_timeout=1.0, allow_private_urls=True)
    return RunpodWorker(synthesizer, settings), engine


async def test_a_job_answers_a_wav_of_the_prompt(worker: RunpodWorker):
    output = await worker.handle(job(prompt="Hello there. The weather is lovely today."))
    wav = base64.b64decode(output["audio_base64"])
    with wave.open(io.BytesIO(wav)) as reader:  # sizes filled in: a complete file
        assert (reader.getnchannels(), reader.getframerate()) == (1, output["sample_rate"])
        seconds = reader.getnframes() / reader.getframerate()
    assert seconds == pytest.approx(output["duration"], abs=1e-3)
    audio = decode_audio(wav)
    assert output["sample_rate"] == 22050
    assert 1.5 < audio.duration < 6.0
    assert rms(audio.samples) > 0.02


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "prompt: Field required"),
        ({"prompt": 42}, "prompt: Input should be a valid string"),
        ({"prompt": "   "}, "prompt: empty or only whitespace"),
        ({"prompt": "Hi.", "top_k": "many"}, "top_k: Input should be a valid integer"),
        ({"prompt": "Hi.", "temperature": 9}, "temperature: Input should be less than"),
        ({"prompt": "Hi.", "temperature": 0}, "temperature: Input should be greater than 0"),
        ({"prompt": "Hi.", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"prompt": "Hi.", "transcript": "Hello."}, "give audio_url with it"),
        (
            {"prompt": "Hi.", "voice": "joe", "audio_url": "https://a.example/a.wav"},
            "give one, not both",
        ),
        ({"prompt": "Hi.", "voice": "nobody"}, "unknown voice 'nobody'"),
        ({"prompt": "Hi.", "engine": "nothing"}, "unknown model 'nothing'"),
        ({"prompt": "Hi.", "audio_url": "https://example.com/a.wav"}, "can clone"),
    ],
)
async def test_bad_input_answers_runpods_error_shape(worker: RunpodWorker, fields, message):
    output = await worker.handle(job(**fields))
    assert list(output) == ["error"]  # and no refresh_worker: the worker is fine
    assert message in output["error"]


async def test_an_input_that_is_not_an_object(worker: RunpodWorker):
    output = await worker.handle({"id": "test-job", "input": "Hello"})
    assert "valid dictionary" in output["error"]


async def test_sampling_goes_with_the_request_to_engines_that_sample(tmp_path: Path):
    sampler, fixed = FakeEngine(sampling=True), FakeEngine()
    fields = {"temperature": 0.7, "top_k": 20, "max_new_tokens": 512, "seed": 7}
    for engine in (sampler, fixed):
        worker = RunpodWorker(make_synthesizer(engine, data_dir=tmp_path))
        assert "audio_base64" in await worker.handle(job(prompt="Sample me.", **fields))
    assert sampler.options[-1].sampling == Sampling(**fields)  # top_p: the engine's own
    assert fixed.options[-1].sampling is None  # it does not sample: nothing to pass


@pytest.mark.parametrize(
    ("fields", "sampling"),
    [
        ({}, None),
        ({"temperature": 0.5}, Sampling(temperature=0.5)),
        ({"top_k": 20, "seed": 3}, Sampling(top_k=20, seed=3)),
    ],
)
async def test_sampling_a_job_leaves_out_keeps_the_engines_configured_value(
    tmp_path: Path, fields: dict, sampling: Sampling | None
):
    # Only what the job gives goes to the engine; None everywhere else is the engine's setting
    # (Sampling), where a worker-side default would override the worker's configuration.
    engine = FakeEngine(sampling=True)
    worker = RunpodWorker(make_synthesizer(engine, data_dir=tmp_path))
    assert "audio_base64" in await worker.handle(job(prompt="Sample me.", **fields))
    assert engine.options[-1].sampling == sampling


async def test_an_engine_failure_asks_runpod_for_a_fresh_worker(tmp_path: Path):
    worker = RunpodWorker(make_synthesizer(FakeEngine(fail_on="boom"), data_dir=tmp_path))
    output = await worker.handle(job(prompt="Say boom."))
    assert output == {"error": "engine 'fake' failed: fake engine failure", "refresh_worker": True}


async def test_a_clip_at_audio_url_is_cloned_with_its_transcript(cloning, files_url: str):
    worker, engine = cloning
    for path in ("/clip.wav", "/moved.wav"):  # a redirect is followed
        output = await worker.handle(
            job(prompt="Speak like the clip.", audio_url=files_url + path, transcript="Hi there.")
        )
        assert "audio_base64" in output, output
        options = engine.options[-1]
        assert options.reference_text == "Hi there."
        with wave.open(options.reference_audio) as reference:  # cleaned, at least 3 s of speech
            assert reference.getnframes() > 3 * reference.getframerate()


async def test_without_a_transcript_the_clip_is_transcribed(cloning, files_url: str):
    pytest.importorskip("faster_whisper")
    worker, engine = cloning
    output = await worker.handle(job(prompt="Hello.", audio_url=files_url + "/clip.wav"))
    assert "audio_base64" in output, output
    assert "umbrella" in engine.options[-1].reference_text.lower()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/big.wav", "audio_url: the file is over the 1 MB limit"),
        ("/big-unannounced.wav", "audio_url: the file is over the 1 MB limit"),
        ("/slow.wav", "audio_url: the download did not finish within 1 s"),
        ("/missing.wav", "audio_url: 127.0.0.1 answered HTTP 404"),
        ("/moved-to-ftp.wav", "audio_url must be an http or https URL, not 'ftp://example.com"),
    ],
)
async def test_downloads_are_limited(cloning, files_url: str, path: str, message: str):
    worker, engine = cloning
    output = await worker.handle(job(prompt="Hi.", audio_url=files_url + path, transcript="Hi."))
    assert output["error"].startswith(message), output["error"]
    assert engine.calls == []


async def test_a_file_that_is_not_audio_is_refused_naming_audio_url(cloning, files_url: str):
    worker, _ = cloning
    output = await worker.handle(job(prompt="Hi.", audio_url=files_url + "/docs", transcript="x"))
    assert output["error"].startswith("audio_url: could not read the audio"), output["error"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/clip.wav",
        "http://localhost:{port}/clip.wav",
        "http://[::1]:{port}/clip.wav",
        "http://[::ffff:127.0.0.1]:{port}/clip.wav",
        "http://[2002:7f00:1::]:{port}/clip.wav",  # 6to4 of 127.0.0.1
        "http://[64:ff9b::7f00:1]:{port}/clip.wav",  # NAT64 of 127.0.0.1
        "http://10.1.2.3/clip.wav",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/clip.wav",
    ],
)
async def test_private_addresses_are_refused_unless_allowed(
    tmp_path: Path, files_url: str, url: str
):
    engine = FakeEngine(cloning=True)
    worker = RunpodWorker(make_synthesizer(engine, data_dir=tmp_path))  # the default settings
    port = files_url.rsplit(":", 1)[1]
    output = await worker.handle(job(prompt="Hi.", audio_url=url.format(port=port)))
    assert "only public addresses can be fetched" in output["error"], output["error"]
    assert engine.calls == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://{host}/clip.wav", "audio_url: {host!r} is not a valid host name"),
        ("http://127.0.0.1:{port}\\@8.8.8.8/clip.wav", "audio_url must not hold a backslash"),
        ("http://u:p@127.0.0.1:{port}/clip.wav", "audio_url must not hold a user name"),
    ],
)
async def test_a_malformed_url_is_the_jobs_fault_and_keeps_the_worker(
    cloning, files_url: str, url: str, message: str
):
    # A 300-character host name was an uncaught UnicodeError: "internal error" with
    # refresh_worker, so any job could have RunPod restart workers.
    worker, engine = cloning
    fields = {"host": "a" * 300, "port": files_url.rsplit(":", 1)[1]}
    output = await worker.handle(job(prompt="Hi.", audio_url=url.format(**fields), transcript="x"))
    assert list(output) == ["error"], output
    assert output["error"].startswith(message.format(host=fields["host"][:100]))
    assert engine.calls == []


async def test_a_bug_is_an_internal_error_without_a_fresh_worker(worker, monkeypatch, caplog):
    async def broken(job):
        raise RuntimeError("a bug")

    monkeypatch.setattr(worker, "speak", broken)
    output = await worker.handle(job(prompt="Hi."))
    assert output == {"error": "internal error (see the worker's log)"}
    assert any(record.exc_info for record in caplog.records)


@pytest.mark.parametrize("url", ["ftp://example.com/clip.wav", "file:///etc/passwd", "clip.wav"])
async def test_only_http_urls_are_fetched(cloning, url: str):
    worker, _ = cloning
    output = await worker.handle(job(prompt="Hi.", audio_url=url, transcript="Hi."))
    assert output["error"].startswith("audio_url must be an http or https URL"), output["error"]


def test_the_sdks_local_test_mode_runs_the_worker(tmp_path: Path):
    environment = {key: value for key, value in os.environ.items() if "VOXSERVE_" not in key}
    environment.update(VOXSERVE_DATA_DIR=str(tmp_path), RUNPOD_LOG_LEVEL="INFO")
    test_input = '{"input": {"prompt": "Good morning, everyone."}}'
    finished = subprocess.run(
        [sys.executable, "-m", "voxserve.runpod_worker", "--test_input", test_input],
        env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "Job local_test completed successfully" in finished.stdout
    # The SDK logs the result cut to 4 kB, from both ends: the WAV's header and the last fields.
    result = finished.stdout.split("Job result: ", 1)[1]
    header = base64.b64decode(re.search(r"'audio_base64': '([A-Za-z0-9+/]{60})", result)[1])
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    fields = re.search(r"'duration': ([\d.]+), 'sample_rate': (\d+)\}", result)
    duration, sample_rate = fields.groups()
    assert float(duration) > 0.8 and int(sample_rate) == 22050
