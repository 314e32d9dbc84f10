"""Bad input gets a 4xx naming what is wrong, never a 500 or a 200 without its audio (issue 12,
item 5): each case here answered one of those before."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import running
from tests.fakes import FakeEngine, FaultySynthesizer, collect, fake_voicing, make_synthesizer
from voxserve.audio import decode_pcm16
from voxserve.request import SpeechRequest
from voxserve.server.app import create_app
from voxserve.synthesis.plan import PlanOptions, plan_segments

NATIVE_RATE = 22050


def post(server_url: str, route: str, **body) -> httpx.Response:
    # json.dumps writes NaN and Infinity as Python's JSON reader takes them (httpx refuses to)
    return httpx.post(
        f"{server_url}/v1/audio/{route}", content=json.dumps(body), timeout=60,
        headers={"content-type": "application/json"},
    )  # fmt: skip


def pcm_seconds(server_url: str, text: str, **fields) -> float:
    """How long ``text`` lasts, streamed as it is made (where a failure mid-way cut it short)."""
    body = {"input": text, "response_format": "pcm", "sample_rate": NATIVE_RATE, **fields}
    with httpx.stream("POST", f"{server_url}/v1/audio/speech", json=body, timeout=60) as response:
        assert response.status_code == 200
        audio = b"".join(response.iter_bytes())
    return decode_pcm16(audio, NATIVE_RATE).duration


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        # engine_failed: the phonemizer's C string ended at the NUL (now a space, below)
        ("speech", {"input": "\u202e"}, "input"),  # only a bidi override: no_audio
        ("speech", {"input": "\x00\x01\u200b"}, "input"),
        ("speech", {"input": "A|||"}, "input"),  # an empty turn: no turns left, a 500
        ("speech", {"input": "[SPEAKER0]"}, "input"),
        ("speech", {"input": "[SPEAKER0] |||"}, "input"),  # 200 with 0 bytes
        ("speech", {"input": "A|||Hi.\nB|||"}, "input"),
        ("dialogue", {"turns": [{"speaker": "A", "text": "|||"}]}, "turns.0.text"),  # 0 bytes
        ("dialogue", {"turns": [{"text": "Hi."}, {"text": " \u202e "}]}, "turns.1.text"),
        ("speech", {"input": "1" * 4096}, "input"),  # reads as 16,383: minutes of synthesis
        ("speech", {"input": "<" * 3000}, "input"),
        ("speech", {"input": "Hi.", "sampling": {"seed": 10**300}}, "sampling.seed"),
    ],
)  # fmt: skip
def test_bad_input_is_a_400_naming_the_field(server_url, route, body, param):
    response = post(server_url, route, **body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("route", "body", "param", "says"),
    [
        # NaN was told "should be less than or equal to 4"
        ("speech", {"input": "Hi.", "speed": float("nan")}, "speed", "finite number"),
        ("speech", {"input": "Hi.", "speed": float("-inf")}, "speed", "finite number"),
        ("dialogue", {"turns": [{"text": "Hi."}], "pause_between_turns": float("nan")},
         "pause_between_turns", "finite number"),
        # any language was taken, and quoted whole in the answer
        ("speech", {"input": "Hi.", "language": "x" * 5000}, "language", "language tag"),
        ("speech", {"input": "Hi.", "language": "en; rm -rf"}, "language", "language tag"),
    ],
)  # fmt: skip
def test_a_field_out_of_shape_is_told_what_it_should_be(server_url, route, body, param, says):
    error = post(server_url, route, **body).json()["error"]
    assert error["param"] == param
    assert says in error["message"] and len(error["message"]) < 100


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("speech", '{"input": "Hi.", "speed": %s}', "speed"),
        ("dialogue", '{"turns": [{"text": "Hi."}], "pause_between_turns": %s}',
         "pause_between_turns"),
        ("dialogue", '{"turns": [{"text": "Hi.", "voice": %s}]}', "turns.0.voice"),
    ],
)  # fmt: skip
def test_a_number_too_long_to_read_is_a_400(server_url, route, body, param):
    # 5001 digits: more than Python converts, a 500 from the speech route before
    content = body % ("1" * 5001)
    response = httpx.post(
        f"{server_url}/v1/audio/{route}",
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_control_character_between_words_is_a_space(server_url):
    with_nul = pcm_seconds(server_url, "Hello\x00world.")  # was a 500 (engine_failed)
    spaced = pcm_seconds(server_url, "Hello world.")
    assert with_nul == pytest.approx(spaced, abs=0.3)
    assert with_nul > 0.5


@pytest.mark.parametrize("normalize", [True, False])
def test_a_sentence_with_nothing_to_say_does_not_cut_the_answer_short(server_url, normalize):
    # "⁂⁂." alone made no audio: the stream ended after "Hello." with a 200
    spoken = pcm_seconds(server_url, "Hello. \u2042\u2042. Goodbye now.", normalize=normalize)
    plain = pcm_seconds(server_url, "Hello. Goodbye now.", normalize=normalize)
    assert spoken == pytest.approx(plain, abs=0.4)


def test_emoji_as_written_between_sentences_are_skipped(server_url):
    emoji = " ".join(["\U0001f642"] * 200)
    spoken = pcm_seconds(server_url, f"Hello. {emoji} Goodbye now.", normalize=False)
    assert spoken == pytest.approx(pcm_seconds(server_url, "Hello. Goodbye now."), abs=0.4)


def test_what_reaches_an_engine_has_something_to_say_and_no_control_characters():
    # Every path plans through plan_segments, text pushed to the WebSockets unnormalized too
    options = PlanOptions(max_chars=400, sentence_pause=0.2, clause_pause=0.1, small_first=False)
    text = "One\x00two. !!! \u2042. \u202eThree, ... four."
    segments = plan_segments(text, fake_voicing(), options)
    assert [(s.text, s.pause_after) for s in segments] == [
        ("One two.", 0.2),
        ("Three, ... four.", 0),
    ]


async def test_a_sentence_the_engine_cannot_speak_is_skipped_not_fatal():
    # Piper has no phonemes for some letters and digits ("\u0660" as written); the stream goes on
    engine = FakeEngine(silent_on="quiet")
    synthesizer = make_synthesizer(engine, first_fragment_small=False)
    audio = await collect(synthesizer, SpeechRequest(input="Fine. Be quiet. Goodbye."))
    assert engine.calls == ["Fine.", "Be quiet.", "Goodbye."]
    spoken = len("Fine.") + len("Goodbye.")
    pause = synthesizer.settings.sentence_pause
    assert len(audio) / 16000 == pytest.approx(spoken * 0.01 + pause, abs=0.02)


@pytest.mark.parametrize("text", ["\u0660", "\u0660 \u0661\n\n\u0662"])
def test_text_the_engine_cannot_speak_at_all_is_a_400(server_url, text):
    # Piper has no phonemes for these as written: "no audio", a 500 the client would retry
    response = post(server_url, "speech", input=text, normalize=False)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unspeakable_input"
    assert response.json()["error"]["param"] == "input"


def test_after_an_internal_error_the_next_request_on_the_connection_works():
    # The server dropped the kept-alive connection after a 500 without saying so: the client's
    # next request on it failed (7 of 10).
    synthesizer = make_synthesizer(FakeEngine(), FaultySynthesizer)
    with running(create_app(synthesizer=synthesizer)) as url, httpx.Client(timeout=30) as client:
        for _ in range(5):
            failed = client.post(f"{url}/v1/audio/speech", json={"input": "boom", "stream": False})
            assert failed.status_code == 500
            assert failed.json()["error"]["code"] == "internal_error"
            assert failed.headers["connection"] == "close"
            fine = client.post(f"{url}/v1/audio/speech", json={"input": "Fine.", "stream": False})
            assert fine.status_code == 200 and fine.content
