"""Zero-shot cloning requests: a clip with the request, a path on the server, or a profile."""

from __future__ import annotations

import wave
from pathlib import Path

import httpx
import pytest

from tests.conftest import running
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.api import synthesize_to_file
from voxserve.config import ConfigError, load_settings
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app

CLIP_TEXT = "Please remember to bring your umbrella tomorrow morning, it will rain."


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, piper_synthesizer) -> Path:
    path = tmp_path_factory.mktemp("clone") / "clip.wav"
    return synthesize_to_file(SpeechRequest(input=CLIP_TEXT), path, synthesizer=piper_synthesizer)


@pytest.fixture
def cloning_server(tmp_path: Path, clip: Path):
    engine = FakeEngine(cloning=True)
    synthesizer = make_synthesizer(engine, data_dir=tmp_path, voice_paths=[clip.parent])
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


def test_a_clip_that_cannot_serve_is_said_of_the_voice_field(cloning_server):
    url, engine = cloning_server
    files = {"voice": ("clip.wav", b"not audio at all" * 100, "audio/wav")}
    response = httpx.post(f"{url}/v1/audio/speech", data={"input": "Hi."}, files=files)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "invalid_audio", "voice",
    )  # fmt: skip
    assert engine.calls == []


def test_a_path_on_the_server_where_allowed(cloning_server, clip: Path):
    url, engine = cloning_server
    body = {"input": "From a path.", "voice": str(clip), "response_format": "pcm"}
    assert httpx.post(f"{url}/v1/audio/speech", json=body, timeout=60).status_code == 200
    assert engine.options[-1].reference_audio.endswith(".wav")


def speak_as(url: str, voice: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/speech", json={"input": "Hi.", "voice": voice}, timeout=60)


def test_a_path_that_cannot_serve_tells_nothing_of_the_files(cloning_server, clip: Path):
    url, engine = cloning_server
    allowed = clip.parent
    outside = allowed.parent / f"outside-{allowed.name}"
    outside.mkdir()
    secret = outside / "secret.wav"
    secret.write_bytes(clip.read_bytes())
    (allowed / "escape.wav").symlink_to(secret)
    (allowed / "notes.wav").write_text("not audio at all " * 100)
    (allowed / "folder.wav").mkdir()
    paths = [
        "/etc/nonexistent", "/etc/shadow", str(secret), str(outside / "missing.wav"),
        f"{allowed}/../{outside.name}/secret.wav", str(allowed / "escape.wav"),
        str(allowed / "missing.wav"), str(allowed / "notes.wav"), str(allowed / "folder.wav"),
        "~/clip.wav",
    ]  # fmt: skip
    answers = set()
    for path in paths:
        response = speak_as(url, path)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        answers.add((error["code"], error["param"], error["message"].replace(repr(path), "PATH")))
    assert len(answers) == 1, answers
    assert answers.pop()[:2] == ("invalid_voice_path", "voice")
    assert engine.calls == []


def test_a_clip_path_is_sized_before_it_is_read(cloning_server, clip: Path):
    url, _ = cloning_server
    huge = clip.parent / "huge.wav"
    with huge.open("wb") as file:
        file.truncate(2**30)  # sparse: a gigabyte that takes no disk
    response = speak_as(url, str(huge))
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "audio_too_large", "voice",
    )  # fmt: skip


def test_a_clip_path_for_an_engine_that_cannot_clone_reads_nothing(tmp_path: Path, clip: Path):
    synthesizer = make_synthesizer(FakeEngine(), data_dir=tmp_path, voice_paths=[clip.parent])
    with running(create_app(synthesizer=synthesizer)) as url:
        response = speak_as(url, str(clip))
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (
        "cloning_not_supported", "voice",
    )  # fmt: skip
    assert not (tmp_path / "references").exists()  # neither transcribed nor copied


def test_allow_voice_paths_is_replaced_by_a_list_of_directories():
    with pytest.raises(ConfigError, match=r"allow_voice_paths: .*voice_paths = \["):
        load_settings(environ={"VOXSERVE_ALLOW_VOICE_PATHS": "true"})
    settings = load_settings(environ={"VOXSERVE_VOICE_PATHS": "/srv/voices,/srv/more"})
    assert settings.voice_paths == [Path("/srv/voices"), Path("/srv/more")]


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
