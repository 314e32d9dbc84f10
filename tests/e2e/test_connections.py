"""What one client may hold: WebSockets and requests at once, and how long a request may take to
arrive (headers, then each piece of its body). Raw sockets against the real server on loopback,
served as ``voxserve serve`` serves it."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import free_port, running, serving
from tests.fakes import FakeEngine, make_synthesizer
from voxserve.server.app import create_app

WAIT = 30  # seconds a socket waits for the server: far past every timeout set here


@contextlib.contextmanager
def fake_server(**connections: object) -> Iterator[str]:
    """A server of the fake engine (four pieces a sentence, 0.2 s apart) with these
    ``[connections]`` settings; yields its URL."""
    synthesizer = make_synthesizer(FakeEngine(chunks=4, delay=0.2), connections=connections)
    with running(create_app(synthesizer=synthesizer)) as url:
        yield url


def raw(url: str) -> socket.socket:
    address = urlsplit(url)
    return socket.create_connection((address.hostname, address.port), timeout=WAIT)


def read_to_the_end(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout if never)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def speech_request(body_length: int) -> bytes:
    return (
        "POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {body_length}\r\n\r\n"
    ).encode()


def test_a_client_that_never_finishes_its_headers_is_let_go():
    with fake_server(header_timeout=0.5) as url:
        with raw(url) as silent, raw(url) as half, raw(url) as kept_alive:
            half.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            kept_alive.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = kept_alive.recv(65536)
            kept_alive.sendall(b"GET /health HTTP/1.1\r\n")  # the next request, half sent
            assert read_to_the_end(silent) == b""
            assert read_to_the_end(half) == b""
            answers = first + read_to_the_end(kept_alive)
            assert answers.startswith(b"HTTP/1.1 200") and answers.count(b"HTTP/1.1 ") == 1
        assert httpx.get(url + "/health").status_code == 200


def test_a_websocket_is_not_timed_once_its_handshake_is_in():
    with fake_server(header_timeout=0.3) as url:
        with connect(url.replace("http://", "ws://") + "/ws/tts") as ws:
            time.sleep(1)  # past the header timeout: the connection is a WebSocket's now
            ws.send("not JSON")
            assert json.loads(ws.recv(timeout=WAIT))["status"] == "error"


def test_voxserve_serve_times_headers_too(tmp_path):
    port = free_port()
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("VOXSERVE_")}  # fmt: skip
    environment.update(
        VOXSERVE_DATA_DIR=str(tmp_path),
        VOXSERVE_LOG_LEVEL="warning",
        VOXSERVE_CONNECTIONS__HEADER_TIMEOUT="0.5",
    )
    command = [sys.executable, "-m", "voxserve", "serve", "--no-preload", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with serving(subprocess.Popen(command, env=environment), url + "/health"), raw(url) as half:
        half.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert read_to_the_end(half) == b""


def test_a_body_that_stops_coming_is_a_408_and_the_connection_closes():
    with fake_server(body_timeout=0.5) as url, raw(url) as stalled:
        stalled.sendall(speech_request(100) + b'{"input": "')
        answer = read_to_the_end(stalled)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "body_timeout" and "connections.body_timeout" in error["message"]


def test_a_long_answer_is_not_cut_by_the_body_timeout():
    """Once the body is in, the app waits on the connection only to hear the client leave."""
    with fake_server(body_timeout=0.2) as url:
        text = "One sentence that takes a while. And another one after it."
        with httpx.stream(
            "POST", url + "/v1/audio/speech", json={"input": text, "response_format": "wav"},
            timeout=WAIT,
        ) as answer:  # fmt: skip
            assert answer.status_code == 200
            audio = answer.read()  # a stream cut short raises here
        pcm_bytes = len(audio) - 44
        assert pcm_bytes >= 2 * 16000 * len(text.replace(" ", "")) * 0.01 * 0.9


def test_websockets_over_the_caps_are_refused_at_the_handshake():
    with fake_server(max_websockets_per_client=2) as url:
        tts = url.replace("http://", "ws://") + "/ws/tts"
        with connect(tts), connect(tts):
            with pytest.raises(InvalidStatus) as refused:
                connect(tts)
            assert refused.value.response.status_code == 429
            error = json.loads(refused.value.response.body)["error"]
            assert error["code"] == "too_many_connections"
            assert "connections.max_websockets_per_client" in error["message"]
            assert refused.value.response.headers["Retry-After"] == "1"
            assert httpx.get(url + "/health").status_code == 200  # HTTP is counted apart
        with connect(tts), connect(tts):  # closed, they no longer count
            pass

    with fake_server(max_websockets=1) as url:
        tts = url.replace("http://", "ws://") + "/ws/tts"
        with connect(tts), pytest.raises(InvalidStatus) as refused:
            connect(tts)
        assert refused.value.response.status_code == 429
        assert b"connections.max_websockets)" in refused.value.response.body


def test_requests_in_progress_over_the_cap_get_429():
    with fake_server(max_requests_per_client=1, body_timeout=WAIT) as url:
        with raw(url) as slow:
            slow.sendall(speech_request(100) + b'{"input": "')  # in progress, reading its body
            busy = httpx.get(url + "/health")
            assert busy.status_code == 429
            assert busy.json()["error"]["code"] == "too_many_connections"
            assert "connections.max_requests_per_client" in busy.json()["error"]["message"]
        for _ in range(100):  # its end is heard soon after it hangs up
            if (health := httpx.get(url + "/health")).status_code == 200:
                break
            time.sleep(0.05)
        assert health.status_code == 200
