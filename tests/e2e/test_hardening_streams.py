"""Text-in transports under abuse (issue 12, items 1 and 6): text work stays off the event loop,
text is capped, and a client that leaves stops the work it asked for."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import running
from tests.e2e.test_websockets import receive_utterance, send, ws_url
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.server.app import create_app
from voxserve.synthesis import paused_plan
from voxserve.synthesis.synthesizer import Synthesizer

SENTENCES = " ".join(f"This is sentence number {number}." for number in range(1, 41))
"""Forty segments, each different (none comes from the cache)."""


def wait_until(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.01)


@pytest.fixture
def held_normalizer(monkeypatch: pytest.MonkeyPatch):
    """Patches a module's ``normalize_for`` so that normalizing a long text holds until the
    test lets it go: yields ``hold(module)``, which gives (started, release) events."""
    releases: list[threading.Event] = []

    def hold(module) -> tuple[threading.Event, threading.Event]:
        real = module.normalize_for
        started, release = threading.Event(), threading.Event()
        releases.append(release)

        def normalize(text: str, language: str) -> str:
            if len(text) > 1000:
                started.set()
                release.wait(timeout=60)
            return real(text, language)

        monkeypatch.setattr(module, "normalize_for", normalize)
        return started, release

    yield hold
    for release in releases:  # a failed test must not leave the server's threads held
        release.set()


@pytest.fixture
def fake_server() -> Iterator[tuple[str, FakeEngine, Synthesizer]]:
    engine = FakeEngine(delay=0.05, seconds_per_char=0.001)
    synthesizer = make_synthesizer(engine, max_stream_chars=2000)
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url, engine, synthesizer


def test_planning_a_huge_push_holds_up_no_other_client(fake_server, held_normalizer):
    url, _, _ = fake_server
    started, release = held_normalizer(paused_plan)
    with connect(ws_url(url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start")
        send(ws, type="text", text="A sentence without an end " * 60)
        send(ws, type="end")  # the whole text is normalized at once: held there
        assert started.wait(timeout=30)
        # Still normalizing, and the server answers others (on the loop, it could not).
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        assert not release.is_set()
        release.set()
        messages, audio = receive_utterance(ws)
    assert [m["type"] for m in messages if m["type"] == "error"] == []
    assert len(audio) > 0


def test_preparing_a_tts_provider_request_holds_up_no_other_client(fake_server, held_normalizer):
    url, _, _ = fake_server
    started, release = held_normalizer(paused_plan)
    with connect(ws_url(url, "/ws/tts")) as ws:
        ws.send(json.dumps({"text": "A sentence that goes on. " * 60}))
        assert started.wait(timeout=30)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        release.set()
        assert json.loads(ws.recv(timeout=30))["status"] == "success"


def test_an_utterance_over_the_cap_is_refused_and_the_next_is_spoken(fake_server):
    url, _, _ = fake_server
    with connect(ws_url(url, "/v1/audio/speech/stream")) as ws:
        send(ws, type="start")
        for _ in range(3):
            send(ws, type="text", text="Eight hundred characters, more or less. " * 20)
        send(ws, type="text", text="Dropped, as the utterance was refused.")
        send(ws, type="end")
        messages, _ = receive_utterance(ws)
        errors = [m for m in messages if m["type"] == "error"]
        assert [(e["code"], e["param"]) for e in errors] == [("utterance_too_long", "text")]
        assert "2000 characters" in errors[0]["message"]
        assert messages[-1] == {"type": "audio_stream_stop", "cancelled": True}
        send(ws, type="start")
        send(ws, type="text", text="The connection goes on.")
        send(ws, type="end")
        messages, audio = receive_utterance(ws)
    assert not [m for m in messages if m["type"] == "error"]
    assert [m["text"] for m in messages if m["type"] == "segment"] == [
        "The connection goes on."
    ] and len(audio) > 0


@pytest.mark.parametrize(
    ("request_text", "code", "param"),
    [
        ("x" * 4097, "input_too_long", "text"),
        ("x" * 30_000, "message_too_large", None),  # not even read as JSON
    ],
)
def test_a_tts_provider_request_over_the_caps_is_refused_and_the_next_served(
    fake_server, request_text, code, param
):
    url, _, _ = fake_server
    with connect(ws_url(url, "/ws/tts")) as ws:
        ws.send(json.dumps({"text": request_text}))
        error = json.loads(ws.recv(timeout=10))
        assert (error["status"], error["code"], error["param"]) == ("error", code, param)
        ws.send(json.dumps({"text": "Still served."}))
        assert json.loads(ws.recv(timeout=30))["status"] == "success"


@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_a_whole_speech_answer_stops_when_its_client_leaves(fake_server, stream_format):
    url, engine, synthesizer = fake_server
    body = json.dumps(
        {"input": SENTENCES, "stream": False, "stream_format": stream_format,
         "response_format": "wav"}
    ).encode()  # fmt: skip
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port)) as client:
        client.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (address.netloc.encode(), len(body), body)
        )
        wait_until(lambda: len(engine.calls) >= 3, "synthesis started")
    assert_stops_soon(engine, synthesizer)


def test_a_tts_provider_request_stops_when_its_client_leaves(fake_server):
    url, engine, synthesizer = fake_server
    with connect(ws_url(url, "/ws/tts")) as ws:
        ws.send(json.dumps({"text": SENTENCES}))
        wait_until(lambda: len(engine.calls) >= 3, "synthesis started")
    assert_stops_soon(engine, synthesizer)


def assert_stops_soon(engine: FakeEngine, synthesizer: Synthesizer) -> None:
    """The client has just left: at most the segments under way and the look-ahead's are made."""
    left_at = len(engine.calls)
    wait_until(lambda: synthesizer.stats.active == 0, "the render ended")
    assert len(engine.calls) - left_at <= synthesizer.settings.lookahead
    assert len(engine.calls) < SENTENCES.count(".")


def test_a_tts_provider_request_sent_before_the_last_answer_is_answered_in_turn(fake_server):
    url, _, _ = fake_server
    with connect(ws_url(url, "/ws/tts")) as ws:
        ws.send(json.dumps({"text": "The first request."}))
        ws.send(json.dumps({"text": "The second, sent while the first is made."}))
        for _ in range(2):
            status = json.loads(ws.recv(timeout=30))
            assert status["status"] == "success"
            received = 0
            while received < status["length_bytes"]:
                received += len(ws.recv(timeout=30))
