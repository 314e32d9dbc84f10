"""Voice profiles over HTTP, on the real server: upload, transcription, use, and bad input."""

from __future__ import annotations

import io
import uuid
import wave

import httpx
import numpy as np
import pytest

from voxserve.audio import create_encoder, fix_wav_header

CLIP_TEXT = "The quick brown fox jumps over the lazy dog. Please remember to bring your umbrella."


@pytest.fixture(scope="module")
def speech_clip(server_url: str) -> bytes:
    """About five seconds of real speech, as a WAV file."""
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        json={"input": CLIP_TEXT, "response_format": "wav", "stream": False},
        timeout=60,
    )
    assert response.status_code == 200
    return response.content


def wav_of(samples: np.ndarray, rate: int = 22050) -> bytes:
    encoder = create_encoder("wav", rate)
    return fix_wav_header(encoder.encode(samples.astype(np.float32)) + encoder.finish())


def create(server_url: str, name: str, audio: bytes, **fields) -> httpx.Response:
    """A multipart upload, as OpenAI's custom voices API takes it."""
    files = {"audio_sample": ("clip.wav", audio, "audio/wav")}
    return httpx.post(
        f"{server_url}/v1/audio/voices", data={"name": name, **fields}, files=files, timeout=60
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_an_uploaded_clip_becomes_a_profile_with_a_transcript(server_url, speech_clip):
    name = unique("narrator")
    response = create(server_url, name, speech_clip, display="The Narrator", tags="books, calm")
    assert response.status_code == 201, response.text
    profile = response.json()
    assert (profile["id"], profile["display_name"], profile["tags"]) == (
        name, "The Narrator", ["books", "calm"],
    )  # fmt: skip
    assert profile["has_reference"] is True
    assert "quick brown fox" in profile["transcript"].lower()

    listed = httpx.get(f"{server_url}/v1/audio/voices").json()["voices"]
    assert {"id": name, "type": "profile"}.items() <= next(
        v for v in listed if v["id"] == name
    ).items()
    assert any(v["id"] == "joe" and v["type"] == "builtin" for v in listed)
    tagged = httpx.get(f"{server_url}/v1/audio/voices", params={"tag": "books"}).json()["voices"]
    assert name in [v["id"] for v in tagged]

    sample = httpx.get(f"{server_url}/v1/audio/voices/{name}/sample")
    with wave.open(io.BytesIO(sample.content)) as clip:
        assert clip.getframerate() == 24000 and 3.0 < clip.getnframes() / 24000 < 8.0

    # Piper cannot clone: a cloned profile is refused, naming who can.
    spoken = httpx.post(f"{server_url}/v1/audio/speech", json={"input": "Hi.", "voice": name})
    assert spoken.status_code == 400
    assert spoken.json()["error"]["code"] == "cloning_not_supported"
    assert "engines that can" in spoken.json()["error"]["message"]


def test_a_profile_that_names_an_engine_voice_speaks_with_its_defaults(server_url):
    name = unique("quick")
    response = httpx.post(
        f"{server_url}/v1/audio/voices",
        json={"name": name, "voice": "joe", "defaults": {"speed": 1.6}, "description": "Fast."},
    )
    assert response.status_code == 201, response.text
    text = {"input": "This sentence is spoken by a profile.", "response_format": "pcm"}
    quick = httpx.post(f"{server_url}/v1/audio/speech", json={**text, "voice": name})
    plain = httpx.post(f"{server_url}/v1/audio/speech", json={**text, "voice": "joe"})
    assert quick.status_code == 200
    assert len(quick.content) < 0.8 * len(plain.content)  # the profile's speed applied

    patched = httpx.patch(f"{server_url}/v1/audio/voices/{name}", json={"tags": ["Fast"]})
    assert patched.json()["tags"] == ["fast"]
    assert httpx.get(f"{server_url}/v1/audio/voices/{name}").json()["tags"] == ["fast"]
    deleted = httpx.delete(f"{server_url}/v1/audio/voices/{name}")
    assert deleted.json() == {"id": name, "object": "voice", "deleted": True}
    assert httpx.get(f"{server_url}/v1/audio/voices/{name}").status_code == 404


def test_built_in_voices_have_samples(server_url):
    sample = httpx.get(f"{server_url}/v1/audio/voices/joe/sample", timeout=60)
    assert sample.status_code == 200 and sample.headers["content-type"] == "audio/wav"
    assert httpx.get(f"{server_url}/v1/audio/voices/joe").json()["type"] == "builtin"


@pytest.mark.parametrize(
    ("name", "audio", "status", "code"),
    [
        ("bad/name", None, 400, "invalid_name"),
        ("..", None, 400, "invalid_name"),
        ("joe", None, 409, "voice_exists"),
        ("alloy", None, 409, "voice_exists"),
        ("not-audio", b"this is not audio at all" * 100, 400, "invalid_audio"),
        ("silence", wav_of(np.zeros(22050 * 5)), 400, "audio_silent"),
        ("too-short", "short", 400, "audio_too_short"),
    ],
)
def test_bad_uploads_say_what_to_fix(server_url, speech_clip, name, audio, status, code):
    if audio == "short":
        with wave.open(io.BytesIO(speech_clip)) as clip:
            rate = clip.getframerate()
            frames = np.frombuffer(clip.readframes(rate), dtype="<i2") / 32768
        audio = wav_of(frames, rate)
    before = httpx.get(f"{server_url}/v1/audio/voices").json()["voices"]
    if audio is None:
        response = httpx.post(f"{server_url}/v1/audio/voices", json={"name": name})
    else:
        response = create(server_url, name, audio)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert httpx.get(f"{server_url}/v1/audio/voices").json()["voices"] == before


def test_duplicate_and_unknown_fields(server_url):
    name = unique("twin")
    assert httpx.post(f"{server_url}/v1/audio/voices", json={"name": name}).status_code == 201
    again = httpx.post(f"{server_url}/v1/audio/voices", json={"name": name})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "voice_exists")
    odd = httpx.post(
        f"{server_url}/v1/audio/voices", data={"name": unique("odd"), "colour": "blue"},
        files={"audio_sample": ("x.wav", b"", "audio/wav")},
    )  # fmt: skip
    assert odd.status_code == 400 and odd.json()["error"]["param"] == "colour"
    assert httpx.post(f"{server_url}/v1/audio/voices", json={}).json()["error"]["param"] == "name"
