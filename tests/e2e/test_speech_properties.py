"""Property: whatever fields and text a client sends to ``POST /v1/audio/speech``, the answer is
audio or a 4xx, never a server error. Before issue 12, 55 of 900 such requests got a 500.

The broad run drives the app in-process with a fast fake engine (every field, any JSON value,
text from all of Unicode); a smaller run sends text to the real Piper voice."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from tests.fakes import FakeEngine, make_synthesizer
from voxserve.server.app import create_app

# Pieces that have broken the server, mixed into arbitrary text.
TRICKY = [
    "|||", "[SPEAKER0]", "[speaker1] ", "\n", "\x00", "\u202e", "\u200d", "\ud800", "\U0001f642",
    "\u2042", "\u0660", "\u0300", "...", "!?", "1" * 60, "12.5%", "$3", "<b>", "`code`", "http://x.y",
    "\ufeff", "\u2028", "Hello. ", "A|||", " ",
]  # fmt: skip
pieces = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
texts = st.one_of(st.text(max_size=80), st.lists(pieces, max_size=8).map("".join))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
numbers = st.one_of(st.floats(), st.integers(), st.integers(min_value=-(10**40), max_value=10**40))
# Values each field takes when well formed (any text is well-formed input)...
VALID = {
    "voice": st.sampled_from(["tone", "low", "alloy", "echo"]),
    "model": st.sampled_from(["fake", "tts-1", "gpt-4o-mini-tts"]),
    "response_format": st.sampled_from(["mp3", "opus", "aac", "flac", "wav", "pcm"]),
    "speed": st.floats(0.5, 2.0),
    "sample_rate": st.sampled_from([8000, 16000, 22050, 48000]),
    "language": st.sampled_from(["en", "en-US", "EN_us"]),
    "instructions": texts,
    "normalize": st.booleans(),
    "stream": st.booleans(),
    "stream_format": st.sampled_from(["audio", "sse"]),
}
# ...and the odd ones a client may send, besides any JSON value at all.
ODD = {
    "voice": st.sampled_from(["nobody", "~/x", "/etc/passwd", "C:\\x", ""])
    | st.fixed_dictionaries({"id": st.text(max_size=8)}),
    "model": st.sampled_from(["piper", "higgs", "runpod", "nope", ""]) | st.text(max_size=8),
    "speed": numbers,
    "sample_rate": numbers,
    "language": st.text(max_size=12),
    "sampling": st.fixed_dictionaries(
        {}, optional={"seed": numbers, "top_k": numbers, "temperature": numbers}
    ),
}
FIELD_NAMES = sorted({*VALID, *ODD, "input"})


@st.composite
def bodies(draw: st.DrawFn) -> dict:
    """Well-formed fields around any text, with up to three fields odd or of any JSON type."""
    fields = draw(st.fixed_dictionaries({"input": texts}, optional=VALID))
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=3, unique=True)):
        fields[name] = draw(ODD.get(name, json_values) | json_values)
    return fields


def body_of(fields: dict) -> str:
    # json.dumps escapes lone surrogates and writes NaN and Infinity, as a careless client may
    return json.dumps(fields)


def assert_not_a_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code == 200:
        assert response.content, "a 200 without audio"
        assert b'"type": "error"' not in response.content, "an SSE answer cut short"
    else:
        assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def fake_client() -> Iterator[TestClient]:
    engine = FakeEngine(seconds_per_char=0.001, max_input_chars=60)
    app = create_app(synthesizer=make_synthesizer(engine))
    # as a local client names the server (the Host check refuses TestClient's "testserver")
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=bodies())
def test_no_field_or_text_gets_a_server_error(fake_client: TestClient, fields: dict):
    response = fake_client.post(
        "/v1/audio/speech", content=body_of(fields), headers={"content-type": "application/json"}
    )
    assert_not_a_server_error(response)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, normalize=st.booleans())
def test_the_real_voice_speaks_any_text_or_refuses_it(server_url: str, text: str, normalize: bool):
    fields = {"input": text, "normalize": normalize, "response_format": "pcm", "stream": False}
    response = httpx.post(
        f"{server_url}/v1/audio/speech",
        content=body_of(fields),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert_not_a_server_error(response)
