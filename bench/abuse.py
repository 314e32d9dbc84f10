"""Abuse: does one misbehaving client slow everyone else down?

Three floods against a real server on loopback, from the hardening issue:
- a huge text-in WebSocket: megabytes of text pushed to /v1/audio/speech/stream;
- 200 idle chat sockets: /v1/chat/ws connections opened and never used;
- 200 half-sent requests: raw sockets that send half a request's headers and stop.

During each, a well-behaved client measures `/health` and a short `/v1/audio/speech`, and the
table compares their medians with the same measurements on the idle server (the baseline, in the
same run). The target: within 2x of idle. Run: .venv/bin/python bench/abuse.py [--sockets 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import room_for_clients, start_server  # noqa: E402

PORT = 18897
URL = f"http://127.0.0.1:{PORT}"
WS_URL = f"ws://127.0.0.1:{PORT}"
TARGET_RATIO = 2.0
WARM_UP_SECONDS = 8  # the chat preload: ~3 s on two cores, doubled for slower machines


def server_settings(sockets: int) -> dict[str, str]:
    return {
        **room_for_clients(sockets),
        # The chat's one warm-up per process (Whisper, the LLM, the voices) is done at start, so
        # that the chat case measures what each idle socket costs, not that once-only work.
        "VOXSERVE_CHAT__PRELOAD": "true",
    }


def measure(http: httpx.Client, seconds: float) -> dict[str, float]:
    """Median latencies (ms) of /health and a one-sentence speech request, over ``seconds``."""
    health, speech = [], []
    deadline = time.monotonic() + seconds
    # A new sentence each time: the segment cache would answer a repeated one without the engine
    for number in itertools.count(int(time.monotonic() * 1000)):
        if time.monotonic() >= deadline:
            break
        for _ in range(5):
            started = time.perf_counter()
            http.get("/health").raise_for_status()
            health.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        response = http.post(
            "/v1/audio/speech",
            json={"input": f"Hello there, caller {number}.", "response_format": "pcm"},
        )
        response.raise_for_status()
        speech.append((time.perf_counter() - started) * 1000)
    return {"health_ms": statistics.median(health), "speech_ms": statistics.median(speech)}


@contextmanager
def huge_text_socket(megabytes: float) -> Iterator[dict]:
    """One client pushing ``megabytes`` of text, in 64 KiB messages, as one utterance, again
    and again while the measurement runs. It counts what the server answered."""
    seen: dict = {"errors": set(), "pushed_mb": 0.0}
    stop = threading.Event()
    piece = ("All work and no play makes a dull voice. " * 1600)[: 64 * 1024]

    def flood() -> None:
        with connect(WS_URL + "/v1/audio/speech/stream", max_size=None) as ws:
            while not stop.is_set():
                ws.send(json.dumps({"type": "start"}))
                for _ in range(int(megabytes * 2**20 / len(piece))):
                    if stop.is_set():
                        break
                    ws.send(json.dumps({"type": "text", "text": piece}))
                    seen["pushed_mb"] += len(piece) / 2**20
                ws.send(json.dumps({"type": "cancel"}))
                drain(ws, seen)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    time.sleep(1)  # let the flood get going
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=30)


def drain(ws, seen: dict) -> None:
    """Read what the server sent for the utterance, noting error codes (the text caps)."""
    while True:
        try:
            message = ws.recv(timeout=0.5)
        except TimeoutError:
            return
        if isinstance(message, str):
            event = json.loads(message)
            if event.get("type") == "error":
                seen["errors"].add(event.get("code"))


@contextmanager
def idle_chat_sockets(count: int) -> Iterator[dict]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(connect(WS_URL + "/v1/chat/ws")) for _ in range(count)]
        yield {"open": sum(1 for ws in sockets if ws.protocol.state.name == "OPEN")}


@contextmanager
def half_sent_requests(count: int) -> Iterator[dict]:
    """Sockets that send a request line and one header, then nothing; how many the server has
    closed by the end tells whether a header timeout held."""
    half = b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", PORT))
        sock.sendall(half)
        sockets.append(sock)
    opened = time.monotonic()
    state: dict = {"sent": count}
    try:
        yield state
    finally:
        held = time.monotonic() - opened
        closed = 0
        for sock in sockets:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            sock.close()
        state["closed_by_server_after_s"] = f"{closed}/{count} after {held:.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--megabytes", type=float, default=4.6)
    parser.add_argument("--seconds", type=float, default=15, help="measuring time per case")
    args = parser.parse_args()
    floods: list[tuple[str, Callable]] = [
        (f"huge text-in WebSocket ({args.megabytes} MB)", lambda: huge_text_socket(args.megabytes)),
        (f"{args.sockets} idle chat sockets", lambda: idle_chat_sockets(args.sockets)),
        (f"{args.sockets} half-sent requests", lambda: half_sent_requests(args.sockets)),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(PORT, data_dir, server_settings(args.sockets))
        try:
            with httpx.Client(base_url=URL, timeout=120) as http:
                time.sleep(WARM_UP_SECONDS)
                measure(http, 2)  # warm the voice and the connection
                idle = measure(http, args.seconds)
                rows.append(("idle (baseline)", idle, {}))
                for name, flood in floods:
                    with flood() as seen:
                        during = measure(http, args.seconds)
                    rows.append((name, during, seen))
                    time.sleep(1)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print_table(rows, idle)


def print_table(rows: list[tuple[str, dict, dict]], idle: dict[str, float]) -> None:
    print(f"{'case':36s} {'/health ms':>10s} {'ratio':>6s} {'speech ms':>10s} {'ratio':>6s}  seen")
    failed = False
    for name, during, seen in rows:
        health_ratio = during["health_ms"] / idle["health_ms"]
        speech_ratio = during["speech_ms"] / idle["speech_ms"]
        failed |= max(health_ratio, speech_ratio) > TARGET_RATIO
        noted = {
            key: sorted(value) if isinstance(value, set) else value for key, value in seen.items()
        }
        print(
            f"{name:36s} {during['health_ms']:10.1f} {health_ratio:6.2f} "
            f"{during['speech_ms']:10.1f} {speech_ratio:6.2f}  {noted or ''}"
        )
    print("FAIL: over 2x idle" if failed else f"PASS: every case within {TARGET_RATIO}x idle")


if __name__ == "__main__":
    main()
