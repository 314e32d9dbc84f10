"""Concurrent clients and token streaming (issues: streaming, admission, cancellation, metrics;
the engine seam: Piper sessions sharing their weights, one for every two cores by default).

    8 clients     p95 time to first audio of 8 concurrent streaming clients, and their aggregate
                  throughput against one client alone (same server, same run)
    memory        the server process's RSS: its peak over the run, and at its end
    tokens        over the WebSocket, first audio after the first sentence's final token arrives,
                  against the raw engine's time for that first fragment

The default settings (a Piper session for every two cores, two threads each) against a session
per core (one thread each), each server in its own process, interleaved round by round. Run:
.venv/bin/python bench/concurrency.py [--rounds 1 --sentences 3 for a quick look]. Prints a
table, writes bench/results/concurrency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import SENTENCES, room_for_clients, start_server  # noqa: E402
from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.piper import PiperEngine  # noqa: E402

RATE = 22050
CLIENTS = 8
REPLY_TOKENS = "Of course. The library opens at nine, and it closes at six. Is there more?".split(
    " "
)
FIRST_FRAGMENT = "Of course."


def client_text(number: int, sentences: int) -> str:
    # Distinct text per client and per round, so no client is served from another's cache.
    picked = [SENTENCES[(number + k) % len(SENTENCES)] for k in range(sentences)]
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


def concurrent_round(url: str, clients: int, round_number: int, sentences: int) -> dict:
    results: list[tuple[float, float, float]] = [None] * clients
    start = threading.Barrier(clients)

    def run(number: int) -> None:
        start.wait()
        results[number] = stream_once(url, client_text(number + clients * round_number, sentences))

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
                # The LLM keeps going; we wait for audio here (the words it speaks come first).
                while isinstance(first := ws.recv(timeout=10), str):
                    assert json.loads(first)["type"] == "words", first
                latency = time.perf_counter() - sent_final
            time.sleep(per_token)
        ws.send(json.dumps({"type": "end"}))
        while not (isinstance(m := ws.recv(timeout=30), str) and "audio_stream_stop" in m):
            pass
    return latency


class PeakRss:
    """The largest RSS a process reaches until ``stop``, sampled in a thread."""

    def __init__(self, pid: int, every: float = 0.05):
        self.process, self.every = psutil.Process(pid), every
        self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def now(self) -> int:
        return self.process.memory_info().rss

    def _sample(self) -> None:
        while not self._done.wait(self.every):
            self.peak = max(self.peak, self.now())


class Server:
    """One configuration's server and what was measured on it."""

    def __init__(self, label: str, port: int, data_dir: str, environment: dict[str, str]):
        self.label, self.url = label, f"http://127.0.0.1:{port}"
        self.process = start_server(port, data_dir, environment)
        self.rss = PeakRss(self.process.pid)
        self.single_ttfa: list[float] = []
        self.single_throughput: list[float] = []
        self.ttfa: list[float] = []
        self.aggregate: list[float] = []
        self.tokens: list[float] = []
        stream_once(self.url, "Warm up.")

    def round(self, round_number: int, sentences: int) -> None:
        first, wall, audio = stream_once(self.url, client_text(1000 + round_number, sentences))
        self.single_ttfa.append(first)
        self.single_throughput.append(audio / wall)
        result = concurrent_round(self.url, CLIENTS, round_number, sentences)
        self.ttfa.extend(result["ttfa"])
        self.aggregate.append(result["throughput"])
        self.tokens.extend(token_stream_latency(self.url) for _ in range(3))

    def stop(self) -> None:
        self.rss_end = self.rss.now()
        self.rss.stop()
        self.process.terminate()
        self.process.wait(timeout=10)

    def row(self) -> dict:
        median = statistics.median
        return {
            "configuration": self.label,
            "single_ttfa_ms": round(median(self.single_ttfa) * 1000, 1),
            "single_x_realtime": round(median(self.single_throughput), 1),
            "clients": CLIENTS,
            "ttfa_p50_ms": round(median(self.ttfa) * 1000, 1),
            "ttfa_p95_ms": round(statistics.quantiles(self.ttfa, n=20)[-1] * 1000, 1),
            "aggregate_x_realtime": round(median(self.aggregate), 1),
            "aggregate_vs_single": round(
                median(self.aggregate) / median(self.single_throughput), 2
            ),
            "token_first_audio_ms_median": round(median(self.tokens) * 1000, 1),
            "token_first_audio_ms_max": round(max(self.tokens) * 1000, 1),
            "rss_peak_mb": round(self.rss.peak / 2**20),
            "rss_end_mb": round(self.rss_end / 2**20),
        }


def measure(configurations: list[tuple[str, dict[str, str]]], rounds: int, sentences: int):
    """A row per configuration, their servers up side by side and their rounds interleaved, so
    that drift on a shared machine hits every configuration alike."""
    with contextlib.ExitStack() as stack:
        servers = []
        for number, (label, environment) in enumerate(configurations):
            data_dir = stack.enter_context(tempfile.TemporaryDirectory())
            server = Server(label, 18890 + number, data_dir, environment)
            stack.callback(server.stop)
            servers.append(server)
        for round_number in range(rounds):
            for server in servers:
                server.round(round_number, sentences)
    return [server.row() for server in servers]


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
    parser.add_argument("--sentences", type=int, default=6, help="per client request")
    args = parser.parse_args()
    quiet = {"VOXSERVE_CACHE_MB": "0", **room_for_clients(CLIENTS)}
    cores = os.cpu_count() or 1
    default = PiperEngine()
    configurations = [
        (f"default: {default.sessions} session(s) x {default.threads} threads", quiet),
        (
            f"a session per core: {cores} x 1 thread",
            {**quiet, "VOXSERVE_ENGINES__PIPER__SESSIONS": str(cores),
             "VOXSERVE_ENGINES__PIPER__THREADS": "1"},
        ),
    ]  # fmt: skip
    rows = measure(configurations, args.rounds, args.sentences)
    # One stream already has every session (look-ahead runs its segments in parallel), so the
    # gain of sessions shows best in the aggregate against the default's.
    default_aggregate = rows[0]["aggregate_x_realtime"]
    for row in rows:
        row["aggregate_vs_default"] = round(row["aggregate_x_realtime"] / default_aggregate, 2)
    raw = round(raw_fragment_ms(), 1)
    print(f"raw engine, first fragment {FIRST_FRAGMENT!r}: {raw} ms")
    header = ("configuration", "1 client TTFA", "1 client", f"{CLIENTS} clients TTFA p50/p95",
              "aggregate", "ratio", "vs default", "RSS peak/end", "token->audio")  # fmt: skip
    print(" | ".join(header))
    for row in rows:
        print(" | ".join([
            row["configuration"], f"{row['single_ttfa_ms']} ms", f"{row['single_x_realtime']}x",
            f"{row['ttfa_p50_ms']} / {row['ttfa_p95_ms']} ms", f"{row['aggregate_x_realtime']}x",
            f"{row['aggregate_vs_single']}", f"{row['aggregate_vs_default']}",
            f"{row['rss_peak_mb']} / {row['rss_end_mb']} MB",
            f"{row['token_first_audio_ms_median']} ms",
        ]))  # fmt: skip
    print(f"targets: {CLIENTS} clients p95 TTFA <= 1000 ms; aggregate >= 1.5x single; "
          "RSS <= 400 MB; token->audio <= 150 ms")  # fmt: skip
    out = Path(__file__).parent / "results" / "concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"raw_first_fragment_ms": raw, "configurations": rows}, indent=2))


if __name__ == "__main__":
    main()
