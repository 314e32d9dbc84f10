"""Concurrent clients and token streaming (issue: streaming, admission, cancellation, metrics).

    8 clients     p95 time to first audio of 8 concurrent streaming clients, and their aggregate
                  throughput against one client alone (same server, same run)
    tokens        over the WebSocket, first audio after the first sentence's final token arrives,
                  against the raw engine's time for that first fragment

Each server configuration runs in its own process. Run: .venv/bin/python bench/concurrency.py
Prints a table, writes bench/results/concurrency.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import SENTENCES, start_server  # noqa: E402
from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.piper import PiperEngine  # noqa: E402

RATE = 22050
CLIENTS = 8
REPLY_TOKENS = "Of course. The library opens at nine, and it closes at six. Is there more?".split(
    " "
)
FIRST_FRAGMENT = "Of course."


def client_text(number: int) -> str:
    # Distinct text per client and per round, so no client is served from another's cache.
    picked = [SENTENCES[(number + k) % len(SENTENCES)] for k in range(6)]
    return f"Client {number} here. " + " ".join(picked)


def stream_once(url: str, text: str) -> tuple[float, float, float]:
    """(seconds to first byte, wall seconds, audio seconds) for one streamed pcm request."""
    started = time.perf_counter()
    first, total = None, 0
    with httpx.stream(
        "POST", f"{url}/v1/audio/speech", json={"input": text, "response_format": "pcm"},
        timeout=600,
    ) as response:  # fmt: skip
        response.raise_for_status()
        for data in response.iter_bytes():
            first = first if first is not None else time.perf_counter() - started
            total += len(data)
    return first, time.perf_counter() - started, total / 2 / RATE


def concurrent_round(url: str, clients: int, round_number: int) -> dict:
    results: list[tuple[float, float, float]] = [None] * clients
    start = threading.Barrier(clients)

    def run(number: int) -> None:
        start.wait()
        results[number] = stream_once(url, client_text(number + clients * round_number))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "ttfa": [r[0] for r in results],
        "throughput": sum(r[2] for r in results) / wall,
    }


def token_stream_latency(url: str, per_token: float = 0.03) -> float:
    """Seconds from sending the first sentence's last token to the first audio frame."""
    ws_url = url.replace("http://", "ws://") + "/v1/audio/speech/stream"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "start"}))
        ws.recv(timeout=10)
        sent_final = None
        for token in REPLY_TOKENS:
            ws.send(json.dumps({"type": "text", "text": token + " "}))
            if sent_final is None and token.endswith("."):
                sent_final = time.perf_counter()
                first = ws.recv(timeout=10)  # the LLM keeps going; we wait for audio here
                latency = time.perf_counter() - sent_final
                assert isinstance(first, bytes), first
            time.sleep(per_token)
        ws.send(json.dumps({"type": "end"}))
        while not (isinstance(m := ws.recv(timeout=30), str) and "audio_stream_stop" in m):
            pass
    return latency


def measure(label: str, environment: dict[str, str], rounds: int) -> dict:
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(18890, data_dir, environment)
        url = "http://127.0.0.1:18890"
        try:
            stream_once(url, "Warm up.")
            single_ttfa, single_throughput, ttfa, aggregate, tokens = [], [], [], [], []
            for round_number in range(rounds):
                first, wall, audio = stream_once(url, client_text(1000 + round_number))
                single_ttfa.append(first)
                single_throughput.append(audio / wall)
                result = concurrent_round(url, CLIENTS, round_number)
                ttfa.extend(result["ttfa"])
                aggregate.append(result["throughput"])
                tokens.extend(token_stream_latency(url) for _ in range(3))
        finally:
            server.terminate()
            server.wait(timeout=10)
    median = statistics.median
    return {
        "configuration": label,
        "single_ttfa_ms": round(median(single_ttfa) * 1000, 1),
        "single_x_realtime": round(median(single_throughput), 1),
        "clients": CLIENTS,
        "ttfa_p50_ms": round(median(ttfa) * 1000, 1),
        "ttfa_p95_ms": round(statistics.quantiles(ttfa, n=20)[-1] * 1000, 1),
        "aggregate_x_realtime": round(median(aggregate), 1),
        "aggregate_vs_single": round(median(aggregate) / median(single_throughput), 2),
        "token_first_audio_ms_median": round(median(tokens) * 1000, 1),
        "token_first_audio_ms_max": round(max(tokens) * 1000, 1),
    }


def raw_fragment_ms() -> float:
    engine = PiperEngine()
    engine.load()
    options = SynthesisOptions(voice="joe")
    times = []
    for _ in range(10):
        started = time.perf_counter()
        list(engine.synthesize(FIRST_FRAGMENT, options))
        times.append(time.perf_counter() - started)
    engine.unload()
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    quiet = {"VOXSERVE_CACHE_MB": "0"}
    configurations = [
        ("1 session x 2 threads (default)", quiet),
        ("2 sessions x 1 thread", {**quiet, "VOXSERVE_ENGINES__PIPER__SESSIONS": "2"}),
    ]
    rows = [measure(label, environment, args.rounds) for label, environment in configurations]
    raw = round(raw_fragment_ms(), 1)
    print(f"raw engine, first fragment {FIRST_FRAGMENT!r}: {raw} ms")
    header = ("configuration", "1 client TTFA", "1 client", f"{CLIENTS} clients TTFA p50/p95",
              "aggregate", "ratio", "token->audio")  # fmt: skip
    print(" | ".join(header))
    for row in rows:
        print(" | ".join([
            row["configuration"], f"{row['single_ttfa_ms']} ms", f"{row['single_x_realtime']}x",
            f"{row['ttfa_p50_ms']} / {row['ttfa_p95_ms']} ms", f"{row['aggregate_x_realtime']}x",
            f"{row['aggregate_vs_single']}", f"{row['token_first_audio_ms_median']} ms",
        ]))  # fmt: skip
    print(f"targets: {CLIENTS} clients p95 TTFA <= 1000 ms; aggregate >= 1.5x single; "
          "token->audio <= 150 ms")  # fmt: skip
    out = Path(__file__).parent / "results" / "concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"raw_first_fragment_ms": raw, "configurations": rows}, indent=2))


if __name__ == "__main__":
    main()
