"""The real server on a loopback port, driven by httpx and the official openai SDK."""

from __future__ import annotations

import base64
import io
import json
import time
import wave

import httpx
import openai
import pytest

from voxserve.audio import decode_audio, decode_pcm16

SPEECH = "Good morning. This is a test of the speech server, streaming as it speaks."
# Piper samples its phoneme durations, so the same text varies by tens of milliseconds per request.
DURATION_TOLERANCE = 0.3
NATIVE_RATE = 22050


def speech(server_url: str, **fields) -> httpx.Response:
    return httpx.post(f"{server_url}/v1/audio/speech", json={"input": SPEECH, **fields}, timeout=60)


@pytest.fixture(scope="module")
def pcm_seconds(server_url: str) -> float:
    response = speech(server_url, response_format="pcm", voice="joe")
    assert response.status_code == 200
    return decode_pcm16(response.content, NATIVE_RATE).duration


def test_health(server_url: str):
    body = httpx.get(f"{server_url}/health").json()
    assert body["status"] == "ok"
    assert body["loaded_engines"] == ["piper"]


def test_pcm_advertises_its_sample_rate(server_url: str, pcm_seconds: float):
    response = speech(server_url, response_format="pcm")
    assert response.headers["content-type"] == "audio/pcm;rate=22050;channels=1;encoding=s16le"
    assert response.headers["x-sample-rate"] == "22050"
    assert 3.0 < pcm_seconds < 10.0


@pytest.mark.parametrize(
    ("audio_format", "content_type", "decoded_rate"),
    [
        ("mp3", "audio/mpeg", NATIVE_RATE),
        ("wav", "audio/wav", NATIVE_RATE),
        ("flac", "audio/flac", NATIVE_RATE),
        ("aac", "audio/aac", NATIVE_RATE),
        ("opus", "audio/ogg", 48000),
    ],
)
def test_every_format_streams_audio_of_the_right_length(
    server_url, pcm_seconds, audio_format, content_type, decoded_rate
):
    with httpx.stream(
        "POST",
        f"{server_url}/v1/audio/speech",
        timeout=60,
        json={"input": SPEECH, "response_format": audio_format},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(content_type)
        parts = list(response.iter_bytes())
    decoded = decode_audio(b"".join(parts))
    assert decoded.sample_rate == decoded_rate
    assert decoded.duration == pytest.approx(pcm_seconds, abs=DURATION_TOLERANCE)


def test_sample_rate_resamples(server_url, pcm_seconds):
    response = speech(server_url, response_format="wav", sample_rate=16000, stream=False)
    with wave.open(io.BytesIO(response.content)) as wav:  # sizes are exact when not streaming
        assert wav.getframerate() == 16000
        assert wav.getnframes() / 16000 == pytest.approx(pcm_seconds, abs=DURATION_TOLERANCE)


def test_non_streaming_responses_have_a_length(server_url):
    response = speech(server_url, response_format="mp3", stream=False)
    assert int(response.headers["content-length"]) == len(response.content) > 1000


def test_sse_events_carry_the_audio(server_url, pcm_seconds):
    response = speech(server_url, response_format="pcm", stream_format="sse")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert [event["type"] for event in events[-1:]] == ["speech.audio.done"]
    assert {event["type"] for event in events[:-1]} == {"speech.audio.delta"}
    audio = b"".join(base64.b64decode(event["audio"]) for event in events[:-1])
    assert decode_pcm16(audio, NATIVE_RATE).duration == pytest.approx(
        pcm_seconds, abs=DURATION_TOLERANCE
    )


def test_models_and_voices_are_listed(server_url):
    models = httpx.get(f"{server_url}/v1/models").json()
    piper = next(model for model in models["data"] if model["id"] == "piper")
    assert piper["capabilities"]["sample_rate"] == NATIVE_RATE
    assert piper["capabilities"]["speed_range"] == [0.25, 4.0]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= {model["id"] for model in models["data"]}
    voices = httpx.get(f"{server_url}/v1/audio/voices").json()
    assert {"id": "joe", "engine": "piper"}.items() <= voices["voices"][0].items()
    assert voices["aliases"]["alloy"] == "joe"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "   \n "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"model": "tts-9"}, "model"),
        ({"response_format": "ogg-vorbis"}, "response_format"),
        ({"speed": 4.5}, "speed"),
        ({"speed": "fast"}, "speed"),
        ({"sample_rate": 1000}, "sample_rate"),
        ({"stream_format": "websocket"}, "stream_format"),
        ({}, "input"),
    ],
)
def test_bad_fields_get_a_400_naming_the_field(server_url, body, param):
    payload = {"input": SPEECH, **body}
    if body == {}:
        payload = {"voice": "joe"}
    response = httpx.post(f"{server_url}/v1/audio/speech", json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param in error["message"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"input": "\xff\xfe"}', "invalid_utf8"),
    ],
)
def test_a_body_that_is_not_json_is_a_400(server_url, content, code):
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_a_huge_body_is_refused_without_reading_it_all(server_url):
    response = httpx.post(f"{server_url}/v1/audio/speech", content=b"x" * 20_000_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(f"{server_url}/v1/audio/speech", content=iter([b"y" * 1_000_000] * 20))
    assert chunked.status_code == 413


def test_unknown_routes_use_the_openai_error_shape(server_url):
    response = httpx.get(f"{server_url}/v1/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_disconnects_stops_its_synthesis(server_url):
    long_text = " ".join(f"This is sentence number {n} of a long reading." for n in range(60))
    before = httpx.get(f"{server_url}/health").json()["segments_synthesized"]
    with httpx.stream(
        "POST",
        f"{server_url}/v1/audio/speech",
        timeout=60,
        json={"input": long_text, "response_format": "pcm"},
    ) as response:
        next(response.iter_bytes())
    time.sleep(1.0)
    health = httpx.get(f"{server_url}/health").json()
    assert health["active_syntheses"] == 0
    assert health["segments_synthesized"] - before < 15  # of 61: it stopped early
    assert speech(server_url, response_format="pcm").status_code == 200  # still serving


def test_the_openai_sdk_works_unchanged(server_url, pcm_seconds):
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key="not-needed")
    audio = client.audio.speech.create(
        model="tts-1", voice="alloy", input=SPEECH, response_format="wav"
    )
    assert decode_audio(audio.content).duration == pytest.approx(
        pcm_seconds, abs=DURATION_TOLERANCE
    )
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="nova",
        input=SPEECH,
        response_format="pcm",
        instructions="Speak cheerfully.",
    ) as response:
        parts = list(response.iter_bytes(4096))
    assert len(parts) > 1
    assert decode_pcm16(b"".join(parts), NATIVE_RATE).duration == pytest.approx(
        pcm_seconds, abs=DURATION_TOLERANCE
    )
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
    assert caught.value.body["param"] == "voice"


def test_the_playground_and_the_chat_page_are_served(server_url):
    for path, marker in (("/", "playground.js"), ("/chat", "chat.js")):
        page = httpx.get(server_url + path)
        assert page.status_code == 200 and marker in page.text
    for script in ("chat.js", "mic-worklet.js", "player-worklet.js", "playground.js"):
        response = httpx.get(f"{server_url}/{script}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/javascript")
