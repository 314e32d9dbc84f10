"""Zero-shot cloning requests: a clip with the request, a path on the server, or a profile."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import pytest

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.api import synthesize_to_file
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app

CLIP_TEXT = "Please remember to bring your umbrella tomorrow morning, it will rain."


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, piper_synthesizer) -> Path:
    path = tmp_path_factory.mktemp("clone") / "clip.wav"
    return synthesize_to_file(SpeechRequest(input=CLIP_TEXT), path, synthesizer=piper_synthesizer)


@pytest.fixture
def cloning_server(tmp_path: Path):
    engine = FakeEngine(cloning=True)
    synthesizer = make_synthesizer(engine, data_dir=tmp_path, allow_voice_paths=True)
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url, engine


def test_a_clip_sent_with_the_request_reaches_a_cloning_engine(cloning_server, clip: Path):
    url, engine = cloning_server
    response = httpx.post(
        f"{url}/v1/audio/speech",
        data={"input": "Speak like the clip.", "response_format": "wav", "reference_text": "Hi."},
        files={"voice": ("clip.wav", clip.read_bytes(), "audio/wav")}, timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    options = engine.options[-1]
    assert options.reference_text == "Hi."
    with wave.open(options.reference_audio) as reference:  # cleaned, 24 kHz
        assert reference.getframerate() == 24000 and reference.getnframes() > 24000 * 3


def test_without_a_transcript_the_clip_is_transcribed(cloning_server, clip: Path):
    url, engine = cloning_server
    files = {"voice": ("clip.wav", clip.read_bytes(), "audio/wav")}
    response = httpx.post(
        f"{url}/v1/audio/speech", data={"input": "Hello."}, files=files, timeout=60
    )
    assert response.status_code == 200, response.text
    assert "umbrella" in engine.options[-1].reference_text.lower()


def test_a_path_on_the_server_where_allowed(cloning_server, clip: Path):
    url, engine = cloning_server
    body = {"input": "From a path.", "voice": str(clip), "response_format": "pcm"}
    assert httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60).status_code == 200
    assert engine.options[-1].reference_audio.endswith(".wav")


def test_engines_that_cannot_clone_say_who_can(server_url, clip: Path):
    files = {"voice": ("clip.wav", clip.read_bytes(), "audio/wav")}
    response = httpx.post(f"{server_url}/v1/audio/speech", data={"input": "Hi."}, files=files)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("cloning_not_supported", "voice")
    assert "engines that can" in error["message"]
    path = httpx.post(f"{server_url}/v1/audio/speech", json={"input": "Hi.", "voice": str(clip)})
    assert path.json()["error"]["code"] == "voice_paths_disabled"


def test_a_profile_deleted_while_in_use_finishes_its_speech(server_url):
    name = "brief-guest"
    created = httpx.post(
        f"{server_url}/v1/audio/voices", json={"name": name, "voice": "storyteller_male"}
    )
    assert created.status_code == 201
    long_text = " ".join(f"Line number {n} of the story goes on." for n in range(12))
    with httpx.stream(
        "POST", f"{server_url}/v1/audio/speech", timeout=60,
        json={"input": long_text, "voice": name, "response_format": "pcm"},
    ) as response:  # fmt: skip
        parts = response.iter_bytes()
        received = len(next(parts))
        assert httpx.delete(f"{server_url}/v1/audio/voices/{name}").status_code == 200
        received += sum(len(part) for part in parts)
    assert received / 2 / 24000 > 20  # all of it, not cut off (pcm over HTTP is 24 kHz)
    again = httpx.post(f"{server_url}/v1/audio/speech", json={"input": "Hi.", "voice": name})
    assert again.status_code == 400 and again.json()["error"]["param"] == "voice"
