"""First audio over Wyoming against the HTTP route, for the same sentence, in one run (issue 18).

One ``voxserve serve`` with its Wyoming port open (Piper's joe). Rounds alternate, so that both
meet the same machine: the HTTP route streamed (POST /v1/audio/speech, pcm: time to the first
byte), Wyoming's one-shot ``synthesize`` (to the first ``audio-chunk``, as Home Assistant reads
it) and Wyoming's stream (``synthesize-start``, the sentence as one chunk, ``synthesize-stop``).
Target: Wyoming's first audio within 1.1x of HTTP's.

Run: .venv/bin/python bench/wyoming.py [--rounds N]. Prints a table, writes
bench/results/wyoming.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
# In place of this script's own directory, where this file would be found as `wyoming`.
sys.path[0] = str(ROOT)

from wyoming.audio import AudioChunk  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.tts import (  # noqa: E402
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)

from bench.core import REPLY, server_speech, start_server  # noqa: E402
from tests.conftest import free_port  # noqa: E402

VOICE = SynthesizeVoice(name="piper/joe")
TARGET = 1.1


async def wyoming_first_audio(port: int, events: list[Event], until: str) -> float:
    """Seconds from the first event written to the first audio-chunk; the rest is read to the
    end (``until``), so that each round starts on an idle server."""
    async with AsyncTcpClient("127.0.0.1", port, read_timeout=60) as client:
        started = time.perf_counter()
        for event in events:
            await client.write_event(event)
        first = None
        while (event := await client.read_event()) is not None and event.type != until:
            if first is None and AudioChunk.is_type(event.type):
                first = time.perf_counter() - started
    assert first is not None, "no audio came"
    return first


def one_shot(port: int) -> float:
    events = [Synthesize(text=REPLY, voice=VOICE).event()]
    return asyncio.run(wyoming_first_audio(port, events, "audio-stop"))


def streamed(port: int) -> float:
    events = [
        SynthesizeStart(voice=VOICE).event(), SynthesizeChunk(text=REPLY).event(),
        SynthesizeStop().event(),
    ]  # fmt: skip
    return asyncio.run(wyoming_first_audio(port, events, SynthesizeStopped().event().type))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    http_port, wyoming_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        # No cache: every round synthesizes the sentence anew, as a new reply would be.
        settings = {"VOXSERVE_WYOMING__PORT": str(wyoming_port), "VOXSERVE_CACHE_MB": "0"}
        server = start_server(http_port, data_dir, settings)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=60) as client:
                measured: dict[str, list[float]] = {"http": [], "one_shot": [], "streamed": []}
                for round_number in range(rounds + 1):
                    samples = {
                        "http": server_speech(client, REPLY)[1],
                        "one_shot": one_shot(wyoming_port),
                        "streamed": streamed(wyoming_port),
                    }
                    if round_number:  # the first round warms every path up
                        for name, seconds in samples.items():
                            measured[name].append(seconds)
        finally:
            server.terminate()
            server.wait(timeout=10)

    median = {name: statistics.median(values) * 1000 for name, values in measured.items()}
    results = {
        "rounds": rounds,
        "http_first_audio_ms_median": round(median["http"], 1),
        "wyoming_one_shot_first_audio_ms_median": round(median["one_shot"], 1),
        "wyoming_streamed_first_audio_ms_median": round(median["streamed"], 1),
        "one_shot_vs_http": round(median["one_shot"] / median["http"], 2),
        "streamed_vs_http": round(median["streamed"] / median["http"], 2),
    }
    print_table(results)
    out = ROOT / "bench" / "results" / "wyoming.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def print_table(results: dict) -> None:
    http, one_shot, streamed = (
        results[f"{name}_first_audio_ms_median"]
        for name in ("http", "wyoming_one_shot", "wyoming_streamed")
    )
    rows = [
        ("first audio: HTTP streamed pcm", f"{http} ms", "baseline"),
        ("first audio: Wyoming synthesize", f"{one_shot} ms", ""),
        ("first audio: Wyoming stream", f"{streamed} ms", ""),
        ("Wyoming synthesize / HTTP", f"{results['one_shot_vs_http']}x", f"<= {TARGET}x"),
        ("Wyoming stream / HTTP", f"{results['streamed_vs_http']}x", f"<= {TARGET}x"),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"median of {results['rounds']} rounds")
    print(f"{'measure':<{width}}  {'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")


if __name__ == "__main__":
    main()
