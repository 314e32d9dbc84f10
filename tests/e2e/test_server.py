"""The real server on a loopback port, driven by httpx and the official openai SDK."""

from __future__ import annotations

import base64
import io
import json
import time
import wave

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from voxserve.audio import decode_audio, decode_pcm16
from voxserve.errors import EngineError, OverloadedError
from voxserve.server.errors import error_response

SPEECH = "Good morning. This is a test of the speech server, streaming as it speaks."
SHORT = "Hello there, how are you?"
# Piper samples its phoneme durations, so the same text varies by tens of milliseconds per request.
DURATION_TOLERANCE = 0.3
NATIVE_RATE = 22050
PCM_RATE = 24000  # OpenAI's pcm


def speech(server_url: str, **fields) -> httpx.Response:
    return httpx.post(f"{server_url}/v1/audio/speech", json={"input": SPEECH, **fields}, timeout=60)


def wav_seconds(audio: bytes) -> float:
    with wave.open(io.BytesIO(audio)) as wav:  # sizes are exact when not streaming
        return wav.getnframes() / wav.getframerate()


def sse_events(response: httpx.Response) -> list[dict]:
    lines = response.text.splitlines()
    return [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]


def sse_audio(events: list[dict]) -> bytes:
    deltas = [event["audio"] for event in events if event["type"] == "speech.audio.delta"]
    return b"".join(base64.b64decode(delta) for delta in deltas)


@pytest.fixture(scope="module")
def pcm_seconds(server_url: str) -> float:
    """How long SPEECH lasts, from a wav at the engine's own rate (its header states the rate)."""
    response = speech(server_url, response_format="wav", voice="joe", stream=False)
    assert response.status_code == 200
    return wav_seconds(response.content)


def test_health(server_url: str):
    body = httpx.get(f"{server_url}/health").json()
    assert body["status"] == "ok"
    assert body["loaded_engines"] == ["piper"]


def test_pcm_is_24_khz_as_openai_defines_it(server_url: str, pcm_seconds: float):
    response = speech(server_url, response_format="pcm")
    assert response.headers["content-type"] == "audio/pcm;rate=24000;channels=1;encoding=s16le"
    assert response.headers["x-sample-rate"] == "24000"
    seconds = decode_pcm16(response.content, PCM_RATE).duration
    assert seconds == pytest.approx(pcm_seconds, abs=DURATION_TOLERANCE)
    assert 3.0 < seconds < 10.0


def test_pcm_at_the_engines_own_rate_on_request(server_url: str, pcm_seconds: float):
    response = speech(server_url, response_format="pcm", sample_rate=NATIVE_RATE)
    assert response.headers["content-type"] == "audio/pcm;rate=22050;channels=1;encoding=s16le"
    seconds = decode_pcm16(response.content, NATIVE_RATE).duration
    assert seconds == pytest.approx(pcm_seconds, abs=DURATION_TOLERANCE)


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
    with wave.open(io.BytesIO(response.content)) as wav:
        assert wav.getframerate() == 16000
    assert wav_seconds(response.content) == pytest.approx(pcm_seconds, abs=DURATION_TOLERANCE)


def test_non_streaming_responses_have_a_length(server_url):
    response = speech(server_url, response_format="mp3", stream=False)
    assert int(response.headers["content-length"]) == len(response.content) > 1000


def test_sse_events_carry_the_audio(server_url, pcm_seconds):
    response = speech(server_url, response_format="pcm", stream_format="sse")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert [event["type"] for event in events[-1:]] == ["speech.audio.done"]
    # Piper times its words: they come as events of their own, which OpenAI's clients skip.
    assert {event["type"] for event in events[:-1]} == {"speech.audio.delta", "speech.audio.words"}
    assert decode_pcm16(sse_audio(events), PCM_RATE).duration == pytest.approx(
        pcm_seconds, abs=DURATION_TOLERANCE
    )


@pytest.fixture(scope="module")
def short_seconds(server_url: str) -> float:
    return wav_seconds(speech(server_url, input=SHORT, response_format="wav", stream=False).content)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(
    "model", ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-03-20", "piper"]
)
def test_sse_is_sent_for_every_model_streamed_or_not(server_url, short_seconds, model, stream):
    response = speech(
        server_url, input=SHORT, model=model, stream=stream, stream_format="sse",
        response_format="pcm",
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1]["type"] == "speech.audio.done"
    assert decode_pcm16(sse_audio(events), PCM_RATE).duration == pytest.approx(
        short_seconds, abs=DURATION_TOLERANCE
    )


def test_a_whole_sse_answer_carries_a_wav_with_its_sizes(server_url, short_seconds):
    response = speech(server_url, input=SHORT, stream=False, stream_format="sse",
                      response_format="wav")  # fmt: skip
    assert response.headers["content-type"].startswith("text/event-stream")
    assert int(response.headers["content-length"]) == len(response.content)
    audio = sse_audio(sse_events(response))
    assert wav_seconds(audio) == pytest.approx(short_seconds, abs=DURATION_TOLERANCE)


@pytest.mark.parametrize("stream", [True, False])
def test_a_dialogue_sent_as_speech_honours_sse_and_stream(server_url, stream):
    script = "Ann|||Hi Ben!\nBen|||Hi Ann."
    response = speech(server_url, input=script, stream=stream, stream_format="sse",
                      response_format="pcm")  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    turns = [event for event in events if event["type"] == "dialogue.turn"]
    assert [turn["speaker"] for turn in turns] == ["Ann", "Ben"]
    assert events[-1]["type"] == "speech.audio.done"
    seconds = decode_pcm16(sse_audio(events), PCM_RATE).duration
    assert seconds == pytest.approx(turns[-1]["end_ms"] / 1000, abs=0.05)
    plain = speech(server_url, input=script, stream=stream, response_format="wav")
    assert plain.headers["content-type"] == "audio/wav"
    if not stream:  # made whole: a length, and a wav header with real sizes
        assert int(plain.headers["content-length"]) == len(plain.content)
        assert wav_seconds(plain.content) == pytest.approx(seconds, abs=DURATION_TOLERANCE)


def test_models_and_voices_are_listed(server_url):
    # The first listing imports every installed engine (transformers for higgs): seconds.
    models = httpx.get(f"{server_url}/v1/models", timeout=60).json()
    piper = next(model for model in models["data"] if model["id"] == "piper")
    assert piper["capabilities"]["sample_rate"] == NATIVE_RATE
    assert piper["capabilities"]["speed_range"] == [0.25, 4.0]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= {model["id"] for model in models["data"]}
    voices = httpx.get(f"{server_url}/v1/audio/voices").json()
    assert {"id": "joe", "engine": "piper"}.items() <= voices["voices"][0].items()
    assert voices["aliases"]["alloy"] == "joe"


def test_voices_and_speech_models_are_lists_of_objects_with_ids_and_names(server_url):
    created = httpx.post(
        f"{server_url}/v1/audio/voices",
        json={"name": "listed-narrator", "display_name": "The Narrator", "voice": "joe"},
    )
    assert created.status_code == 201, created.text
    voices = httpx.get(f"{server_url}/v1/audio/voices").json()["voices"]
    assert all(isinstance(voice["id"], str) and voice["name"] for voice in voices)
    by_id = {voice["id"]: voice for voice in voices}
    assert by_id["joe"]["type"] == "builtin"
    assert by_id["listed-narrator"]["name"] == "The Narrator"
    models = httpx.get(f"{server_url}/v1/audio/models", timeout=60).json()["models"]
    ids = {model["id"] for model in models}
    assert {"piper", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= ids
    assert next(model for model in models if model["id"] == "tts-1")["engine"] == "piper"


@pytest.mark.parametrize(
    "fields",
    [
        {"voice": {"id": "alloy"}},  # the openai SDK's newer voice object
        {"model": "gpt-4o-mini-tts-2025-03-20"},
        {"model": "tts-1-1106"},
        {"model": "tts-1-hd-1106"},
        {"instructions": None},
        {"voice": "joe", "unknown_field": 1, "extra_body": {"x": True}},
    ],
)
def test_what_openai_clients_send_is_accepted(server_url, short_seconds, fields):
    response = speech(server_url, input=SHORT, response_format="wav", stream=False, **fields)
    assert response.status_code == 200, response.text
    assert response.headers["x-engine"] == "piper"
    assert wav_seconds(response.content) == pytest.approx(short_seconds, abs=DURATION_TOLERANCE)


def test_two_mp3_answers_joined_end_to_end_play_as_one(server_url):
    first = speech(server_url, input=SHORT, response_format="mp3")
    second = speech(server_url, input="And goodbye.", response_format="mp3", stream=False)
    for answer in (first.content, second.content):
        # An MPEG audio frame from the first byte: no ID3v2 tag ("ID3") and no Xing/Info frame
        # stating one answer's length, either of which stops a strict decoder at the join.
        assert answer[0] == 0xFF and answer[1] & 0xE0 == 0xE0
        assert b"Xing" not in answer[:200] and b"Info" not in answer[:200]
    joined = decode_audio(first.content + second.content)
    alone = decode_audio(first.content).duration + decode_audio(second.content).duration
    assert joined.duration == pytest.approx(alone, abs=0.1)


@pytest.mark.parametrize("text", [".", "...", "\U0001f642", "  !  "])
@pytest.mark.parametrize("audio_format", ["mp3", "wav", "pcm"])
def test_text_with_nothing_to_say_answers_a_moment_of_silence(server_url, text, audio_format):
    response = speech(server_url, input=text, response_format=audio_format, stream=False)
    assert response.status_code == 200, response.text
    if audio_format == "pcm":
        audio = decode_pcm16(response.content, PCM_RATE)
    else:
        audio = decode_audio(response.content)
    assert 0.1 <= audio.duration <= 0.25
    assert np.abs(audio.samples).max() < 0.01


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "   \n "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"model": "tts-9"}, "model"),
        ({"model": "tts-1-latest"}, "model"),
        ({"voice": {"name": "joe"}}, "voice"),
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
    assert response.headers["x-should-retry"] == "false"  # the openai SDK then does not retry
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
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == code


def test_a_huge_body_is_refused_without_reading_it_all(server_url):
    response = httpx.post(f"{server_url}/v1/audio/speech", content=b"x" * 20_000_000)
    assert response.status_code == 413
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "body_too_large"
    chunked = httpx.post(f"{server_url}/v1/audio/speech", content=iter([b"y" * 1_000_000] * 20))
    assert chunked.status_code == 413


def test_unknown_routes_use_the_openai_error_shape(server_url):
    response = httpx.get(f"{server_url}/v1/nothing")
    assert response.status_code == 404
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["type"] == "invalid_request_error"


def conflicts_answered(server_url: str) -> float:
    metrics = text_string_to_metric_families(httpx.get(f"{server_url}/metrics").text)
    requests = next(family for family in metrics if family.name == "voxserve_requests")
    return sum(
        sample.value
        for sample in requests.samples
        if sample.labels.get("code") == "409" and sample.name.endswith("_total")
    )


def test_only_refusals_that_would_repeat_tell_clients_not_to_retry(server_url):
    body = {"name": "taken-name", "voice": "joe"}
    assert httpx.post(f"{server_url}/v1/audio/voices", json=body).status_code == 201
    taken = httpx.post(f"{server_url}/v1/audio/voices", json=body)
    # 409 is one the openai SDK retries by default; here it is a name already taken.
    assert taken.status_code == 409 and taken.headers["x-should-retry"] == "false"
    before = conflicts_answered(server_url)
    client = openai.OpenAI(base_url=f"{server_url}/v1", api_key="not-needed", max_retries=3)
    with pytest.raises(openai.ConflictError):
        client.post("/audio/voices", body=body, cast_to=httpx.Response)
    assert conflicts_answered(server_url) == before + 1  # asked once, not retried
    busy = error_response(OverloadedError("busy", retry_after=2))
    assert busy.status_code == 429 and "x-should-retry" not in busy.headers
    failed = error_response(EngineError("engine failed"))
    assert failed.status_code == 500 and "x-should-retry" not in failed.headers


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
    assert decode_pcm16(b"".join(parts), PCM_RATE).duration == pytest.approx(
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


def test_kokoro_fastapis_volume_multiplier_and_lang_code_over_http(server_url):
    def pcm(**fields) -> np.ndarray:
        response = speech(server_url, input=SHORT, response_format="pcm", stream=False, **fields)
        assert response.status_code == 200, response.text
        return decode_pcm16(response.content, PCM_RATE).samples

    def rms(samples: np.ndarray) -> float:
        return float(np.sqrt(np.mean(samples**2)))

    # Piper's timing varies from request to request (and so the RMS, by up to 10%), not its gain.
    assert rms(pcm(volume_multiplier=0.5)) / rms(pcm()) == pytest.approx(0.5, abs=0.1)
    assert len(pcm(lang_code="a")) > 0  # Kokoro's letter for American English: joe's
    refused = speech(server_url, input=SHORT, lang_code="f")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "language"
    for field, value in (("volume_multiplier", 0), ("lang_code", "not a tag")):
        bad = speech(server_url, input=SHORT, **{field: value})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == field
