"""Both WebSocket protocols on a real server: the embedded voice, and the fake engine for timing."""

from __future__ import annotations

import io
import json
import threading
import time
import wave

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import logged_with_traceback, running
from tests.fakes import FakeEngine, FaultySynthesizer, make_synthesizer
from voxserve.audio import decode_audio, decode_pcm16
from voxserve.server.app import create_app

TOKENS = ["Hello", " there", ",", " friend", ".", " The", " sun", " is", " out", " today", "."]


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://") + path


def receive_utterance(ws) -> tuple[list[dict], bytes]:
    """Messages and audio up to and including audio_stream_stop."""
    messages, audio = [], bytearray()
    while True:
        message = ws.recv(timeout=30)
        if isinstance(message, bytes):
            audio += message
            continue
        messages.append(json.loads(message))
        if messages[-1]["type"] == "audio_stream_stop":
            return messages, bytes(audio)


def send(ws, **message) -> None:
    ws.send(json.dumps(message))


@pytest.fixture(scope="module")
def faulty_url():
    """A server whose synthesizer has a bug that shows once it has spoken "boom"."""
    with running(create_app(synthesizer=make_synthesizer(FakeEngine(), FaultySynthesizer))) as url:
        yield url


def test_tokens_in_audio_out_with_segment_timings(server_url):
    with connect(ws_url(server_url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start", voice="alloy")
        for token in TOKENS:
            send(ws, type="text", text=token)
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
    assert messages[0] == {"type": "audio_stream_start", "sample_rate": 22050, "format": "pcm"}
    segments = [m for m in messages if m["type"] == "segment"]
    assert " ".join(s["text"] for s in segments) == "Hello there, friend. The sun is out today."
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert all(a["end_ms"] == b["start_ms"] for a, b in zip(segments, segments[1:], strict=False))
    seconds = decode_pcm16(audio, 22050).duration
    assert seconds == pytest.approx(segments[-1]["end_ms"] / 1000, abs=0.05)
    assert messages[-1] == {"type": "audio_stream_stop", "cancelled": False}


def test_the_first_sentence_is_heard_while_later_text_is_still_coming(server_url):
    with connect(ws_url(server_url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start", response_format="mp3")
        ws.recv(timeout=10)  # audio_stream_start
        send(ws, type="text", text="This first sentence is complete. And this one is")
        first = ws.recv(timeout=10)
        while isinstance(first, str) and json.loads(first)["type"] == "words":  # before its audio
            first = ws.recv(timeout=10)
        assert isinstance(first, bytes)  # audio, before the rest of the text exists
        send(ws, type="text", text=" finished later.")
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
    assert decode_audio(first + audio).duration > 2.0
    spoken = [m["text"] for m in messages if m["type"] == "segment"]
    assert spoken[-1] == "And this one is finished later."


def test_flush_speaks_an_unfinished_sentence_and_the_connection_takes_another(server_url):
    with connect(ws_url(server_url, "/v1/audio/speech/stream")) as ws:
        for _ in range(2):
            send(ws, type="start")
            send(ws, type="text", text="no full stop here")
            send(ws, type="flush")
            send(ws, type="end")
            messages, audio = receive_utterance(ws)
            assert [m["text"] for m in messages if m["type"] == "segment"] == ["no full stop here"]
            assert len(audio) > 0


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "invalid_json"),
        (b"\x00\x01binary", "binary_not_expected"),
        (json.dumps([1, 2]), "invalid_message"),
        (json.dumps({"type": "sing"}), "unknown_type"),
        (json.dumps({"type": "text", "text": "early"}), "not_started"),
        (json.dumps({"type": "start", "speed": 9}), "invalid_request"),
        (json.dumps({"type": "start", "voice": "nobody"}), "invalid_request"),
        (json.dumps({"type": "start", "response_format": "midi"}), "invalid_request"),
        ("x" * 100_000, "message_too_large"),  # (under max_websocket_message_bytes)
    ],
)
def test_bad_messages_get_an_error_and_the_connection_goes_on(server_url, message, code):
    with connect(ws_url(server_url, "/v1/audio/speech/stream"), max_size=None) as ws:
        ws.send(message)
        error = json.loads(ws.recv(timeout=10))
        assert (error["type"], error["code"]) == ("error", code)
        send(ws, type="start")
        send(ws, type="text", text="Still here.")
        send(ws, type="end")
        assert len(receive_utterance(ws)[1]) > 0


def test_a_refused_utterance_is_one_error_and_its_text_is_dropped():
    engine = FakeEngine(delay=0.1)
    synthesizer = make_synthesizer(engine, max_streams_per_engine=1, max_queue=0)
    with running(create_app(synthesizer=synthesizer)) as url:
        stream_url = ws_url(url, "/v1/audio/speech/stream")
        with connect(stream_url) as holder, connect(stream_url) as refused:
            send(holder, type="start")
            send(holder, type="text", text="Sentence one. Sentence two. Sentence three.")
            holder.recv(timeout=5)  # audio_stream_start
            assert isinstance(holder.recv(timeout=5), bytes)  # holding the only stream place
            send(refused, type="start")
            for token in ["Too", " many", " of", " us", "."]:
                send(refused, type="text", text=token)
            send(refused, type="end")
            messages, _ = receive_utterance(refused)
            errors = [m for m in messages if m["type"] == "error"]
            assert [e["code"] for e in errors] == ["overloaded"]
            send(holder, type="end")
            receive_utterance(holder)
            send(refused, type="start")  # room again: the same connection goes on
            send(refused, type="text", text="My turn.")
            send(refused, type="end")
            messages, audio = receive_utterance(refused)
            assert not [m for m in messages if m["type"] == "error"] and len(audio) > 0


def test_start_twice_is_an_error_that_keeps_the_utterance(server_url):
    with connect(ws_url(server_url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start")
        ws.recv(timeout=10)
        send(ws, type="start")
        assert json.loads(ws.recv(timeout=10))["code"] == "already_started"
        send(ws, type="text", text="Kept.")
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
        assert len(audio) > 0


def test_cancel_stops_engine_work_within_200_ms_and_leaks_nothing():
    engine = FakeEngine(chunks=20, delay=0.02, seconds_per_char=0.05)  # a streaming engine
    synthesizer = make_synthesizer(engine)
    with running(create_app(synthesizer=synthesizer)) as url:
        threads_before = None
        for _ in range(3):
            with connect(ws_url(url, "/v1/audio/speech/stream")) as ws:
                send(ws, type="start")
                ws.recv(timeout=5)
                send(ws, type="text", text="A long sentence that keeps the engine busy. " * 5)
                assert isinstance(ws.recv(timeout=5), bytes)
                calls = len(engine.calls)
                send(ws, type="cancel")
                cancelled_at = time.monotonic()
                messages, _ = receive_utterance(ws)
                assert messages[-1] == {"type": "audio_stream_stop", "cancelled": True}
            time.sleep(0.3)
            assert len(engine.calls) == calls  # no further segment started
            assert engine.last_chunk_at - cancelled_at < 0.2
            assert synthesizer.stats.active == 0
            threads_before = threads_before or threading.active_count()
        assert threading.active_count() <= threads_before


def test_a_bug_mid_utterance_is_an_internal_error_and_the_connection_goes_on(
    faulty_url, caplog: pytest.LogCaptureFixture
):
    with connect(ws_url(faulty_url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start")
        send(ws, type="text", text="It goes boom here. This is never spoken.")
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
        assert len(audio) > 0  # the first sentence's: the bug came mid-stream
        errors = [m for m in messages if m["type"] == "error"]
        assert [e["code"] for e in errors] == ["internal_error"]
        assert "see the server's log" in errors[0]["message"]
        assert messages[-1] == {"type": "audio_stream_stop", "cancelled": False}
        send(ws, type="start")
        send(ws, type="text", text="Still here.")
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
        assert not [m for m in messages if m["type"] == "error"] and len(audio) > 0
    assert logged_with_traceback(caplog, RuntimeError)


def test_tts_provider_protocol(server_url):
    with connect(ws_url(server_url, "/ws/tts")) as ws:
        ws.send(json.dumps({"command": "info"}))
        info = json.loads(ws.recv(timeout=10))
        assert info["speaker_mapping"]["1"] == "primary female"
        assert info["speakers"]["piper"]["0"] == "joe"
        assert info["available_models"][0]["name"] == "piper"
        for speaker in (0, 3):
            ws.send(json.dumps({"text": "Hello.", "speaker": speaker, "lang": "en-US",
                                "sample_rate": 24000}))  # fmt: skip
            status = json.loads(ws.recv(timeout=30))
            assert (status["status"], status["format"], status["sample_rate"]) == (
                "success", "wav", 24000,
            )  # fmt: skip
            audio = b""
            while len(audio) < status["length_bytes"]:
                audio += ws.recv(timeout=30)
            with wave.open(io.BytesIO(audio)) as wav:
                # "Hello." lasts about half a second; Piper's timing varies from run to run.
                assert wav.getframerate() == 24000 and wav.getnframes() > 0.3 * 24000


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"text": "Hallo.", "lang": "de-DE"}, "unsupported_language"),
        ({"text": "Hi.", "speaker": 42}, "unknown_speaker"),
        ({"text": "  "}, "empty_text"),
        ({"text": "Hi.", "model": "nope"}, "model_not_found"),
    ],
)
def test_tts_provider_errors_carry_no_audio(server_url, request_body, code):
    with connect(ws_url(server_url, "/ws/tts")) as ws:
        ws.send(json.dumps(request_body))
        answer = json.loads(ws.recv(timeout=10))
        assert (answer["status"], answer["code"]) == ("error", code)
        ws.send(json.dumps({"command": "info"}))  # the next message is the next answer, no audio
        assert json.loads(ws.recv(timeout=10))["status"] == "success"


def test_a_bug_mid_tts_provider_request_is_an_internal_error_and_the_next_is_served(
    faulty_url, caplog: pytest.LogCaptureFixture
):
    def answer(ws) -> dict:
        while (status := json.loads(ws.recv(timeout=30)))["status"] == "loading":
            pass
        return status

    with connect(ws_url(faulty_url, "/ws/tts")) as ws:
        ws.send(json.dumps({"text": "It goes boom here. This is never spoken."}))
        error = answer(ws)
        assert (error["status"], error["code"]) == ("error", "internal_error")
        ws.send(json.dumps({"text": "Still here."}))
        status = answer(ws)
        assert status["status"] == "success"
        audio = b""
        while len(audio) < status["length_bytes"]:
            audio += ws.recv(timeout=30)
        with wave.open(io.BytesIO(audio)) as wav:
            assert wav.getnframes() > 0
    assert logged_with_traceback(caplog, RuntimeError)


def test_a_request_during_a_load_waits_for_it():
    engine = FakeEngine()
    synthesizer = make_synthesizer(engine, preload=False)
    with running(create_app(synthesizer=synthesizer)) as url:
        with connect(ws_url(url, "/ws/tts")) as ws:
            ws.send(json.dumps({"text": "Wait for me."}))
            assert json.loads(ws.recv(timeout=10))["status"] == "loading"
            assert json.loads(ws.recv(timeout=10))["status"] == "success"
        assert httpx.get(f"{url}/health").json()["loaded_engines"] == ["fake"]
