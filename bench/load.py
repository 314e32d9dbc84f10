"""Load: 50 concurrent clients for 60 s on loopback, half over HTTP, half over the WebSocket.

Checks, per the streaming issue: no 5xx, no lost or mixed-up audio between clients (each client's
segment texts must be its own, and its audio must be as long as its segment timings say), and
memory flat (server RSS in the first tenth against the last tenth). Bounded: every client stops at
the deadline. Run: .venv/bin/python bench/load.py [--clients 50] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import SENTENCES, room_for_clients, start_server  # noqa: E402
from voxserve.text import normalize_text  # noqa: E402

RATE = 22050


def text_for(client: int, request: int) -> str:
    return f"Client {client} request {request}. {SENTENCES[(client + request) % len(SENTENCES)]}"


def words(text: str) -> list[str]:
    return [word.strip(".,;:!?").lower() for word in text.split()]


def http_client(url: str, client: int, deadline: float, outcomes: Counter) -> None:
    request = 0
    with httpx.Client(base_url=url, timeout=120) as http:
        while time.monotonic() < deadline:
            request += 1
            body = {"input": text_for(client, request), "response_format": "pcm"}
            with http.stream("POST", "/v1/audio/speech", json=body) as response:
                audio = b"".join(response.iter_bytes())
            if response.status_code == 429:
                outcomes["http 429"] += 1
                time.sleep(float(response.headers.get("retry-after", 1)))
            elif response.status_code >= 500:
                outcomes["http 5xx"] += 1
            elif response.status_code == 200 and audio and len(audio) % 2 == 0:
                outcomes["http ok"] += 1
            else:
                outcomes[f"http bad {response.status_code}"] += 1


def ws_client(url: str, client: int, deadline: float, outcomes: Counter) -> None:
    request = 0
    with connect(url.replace("http://", "ws://") + "/v1/audio/speech/stream") as ws:
        while time.monotonic() < deadline:
            request += 1
            text = text_for(client, request)
            ws.send(json.dumps({"type": "start"}))
            for token in text.split(" "):
                ws.send(json.dumps({"type": "text", "text": token + " "}))
            ws.send(json.dumps({"type": "end"}))
            audio, spoken, end_ms, overloaded = 0, [], 0, False
            while True:
                message = ws.recv(timeout=120)
                if isinstance(message, bytes):
                    audio += len(message)
                    continue
                event = json.loads(message)
                if event["type"] == "segment":
                    spoken.append(event["text"])
                    end_ms = event["end_ms"]
                elif event["type"] == "error":
                    overloaded = event["code"] == "overloaded"
                    outcomes["ws error " + event["code"]] += 1
                elif event["type"] == "audio_stream_stop":
                    break
            if overloaded:
                time.sleep(1)
                continue
            own_words = words(" ".join(spoken)) == words(normalize_text(text))
            whole = abs(audio / 2 / RATE * 1000 - end_ms) < 50
            outcomes["ws ok" if own_words and whole else "ws mixed or lost"] += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--cache-mb", default="32", help="the server's segment cache")
    args = parser.parse_args()
    outcomes: Counter = Counter()
    with tempfile.TemporaryDirectory() as data_dir:
        settings = {"VOXSERVE_CACHE_MB": args.cache_mb, **room_for_clients(args.clients)}
        server = start_server(18895, data_dir, settings)
        url = "http://127.0.0.1:18895"
        process = psutil.Process(server.pid)
        rss: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                rss.append(process.memory_info().rss / 2**20)

        sampler = threading.Thread(target=sample)
        sampler.start()
        deadline = time.monotonic() + args.seconds
        clients = [
            threading.Thread(
                target=http_client if n % 2 else ws_client, args=(url, n, deadline, outcomes)
            )
            for n in range(args.clients)
        ]
        began = time.monotonic()
        try:
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            elapsed = time.monotonic() - began
            health = httpx.get(f"{url}/health").json()
        finally:
            done.set()
            sampler.join()
            server.terminate()
            server.wait(timeout=10)
    tenth = max(1, len(rss) // 10)
    result = {
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "outcomes": dict(outcomes),
        "active_after": health["active_syntheses"],
        "rss_first_tenth_mb": round(statistics.mean(rss[:tenth]), 1),
        "rss_last_tenth_mb": round(statistics.mean(rss[-tenth:]), 1),
        "rss_peak_mb": round(max(rss), 1),
        "rss_by_tenth_mb": [
            round(statistics.mean(rss[i * tenth : (i + 1) * tenth]), 1) for i in range(10)
        ],
    }
    for key, value in result.items():
        print(f"{key:20s} {value}")
    failures = sum(v for k, v in outcomes.items() if "5xx" in k or "mixed" in k or "bad" in k)
    print("PASS" if failures == 0 and result["active_after"] == 0 else f"FAIL: {failures} failures")
    out = Path(__file__).parent / "results" / "load.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
