"""Voice-to-voice latency of the voice chat, measured at the client (issue: voice chat).

Questions spoken by the embedded voice are streamed to /v1/chat/ws in real time (20 ms frames);
latency runs from the end of the question's sound to the first audible sample of the answer.
The server's own per-stage metrics give each stage's share. Fully offline with the embedded STT,
LLM (the chat extra) and TTS; or --llm-base-url for another LLM. The baseline, in the same run, is
the plain pipeline: the reply starts only once the end of speech is certain (no speculation),
Whisper hears the utterance in its own 30 s window with a beam of 5 on one thread, and the LLM
writes on llama.cpp's default of half the cores. A middle run shows the short window's share.
Run: .venv/bin/python bench/chat_latency.py [--turns 20]. Prints a table, writes
bench/results/chat_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import start_server  # noqa: E402
from voxserve.audio import StreamResampler, float_to_pcm16  # noqa: E402
from voxserve.config import Settings  # noqa: E402
from voxserve.request import SpeechRequest  # noqa: E402
from voxserve.synthesis.synthesizer import Synthesizer  # noqa: E402

QUESTIONS = [
    "What time does the library open?", "Can you recommend a good book?",
    "How is the weather today?", "What should I cook for dinner?",
    "Tell me something interesting.", "How far away is the moon?",
    "What is your favorite color?", "Can you help me plan a trip?",
    "Why is the sky blue?", "What is a good name for a cat?",
]  # fmt: skip
FRAME = 320  # 20 ms at 16 kHz
SOUNDING = 0.01  # -40 dBFS: a sample this loud is still speech
STAGES = (
    "end_of_speech_detection", "transcription", "end_of_speech_to_final",
    "end_of_speech_to_confirmed", "llm_first_token",
    "llm_first_sentence", "tts_first_audio", "total_to_first_audio",
)  # fmt: skip
CONFIGS = {
    "default: speculative, 10 s window": {},
    "speculative, 30 s window": {"VOXSERVE_CHAT__STT_WINDOW_S": "30"},
    "baseline: plain pipeline": {
        "VOXSERVE_CHAT__SPECULATE": "false",
        "VOXSERVE_CHAT__STT_WINDOW_S": "30",
        "VOXSERVE_CHAT__STT_BEAM_SIZE": "5",
        "VOXSERVE_STT__CPU_THREADS": "1",
        "VOXSERVE_CHAT__LLM_THREADS": str(max(1, (os.cpu_count() or 2) // 2)),  # llama.cpp's
    },
}


def spoken(text: str, synthesizer: Synthesizer) -> tuple[bytes, int]:
    """The question as 16 kHz PCM with silence after it, and the sample where its sound ends
    (not where Piper's audio ends: it trails ~150 ms of near-silence, which would flatter us)."""

    async def speak() -> np.ndarray:
        chunks = [c async for c in synthesizer.stream(SpeechRequest(input=text))]
        audio = np.concatenate([c.samples for c in chunks])
        return StreamResampler(chunks[0].sample_rate, 16000).process(audio, last=True)

    speech = asyncio.run(speak())
    audio = np.concatenate([np.zeros(3200, np.float32), speech, np.zeros(32000, np.float32)])
    sound_end = np.flatnonzero(np.abs(speech) > SOUNDING)[-1] + 1
    return float_to_pcm16(audio), 3200 + int(sound_end)


def turn(ws, pcm: bytes, speech_end: int) -> tuple[float, dict]:
    """(client latency, server metrics) for one spoken question: from the end of its sound to the
    answer's first audible sample, as a client that plays audio the moment it arrives hears it."""
    ws.send(json.dumps({"type": "start_listening"}))
    started = time.perf_counter()
    reply: dict = {"audible_at": None, "metrics": None}
    for number, offset in enumerate(range(0, len(pcm), FRAME * 2)):
        time.sleep(max(0.0, started + number * 0.02 - time.perf_counter()))  # real time
        ws.send(pcm[offset : offset + FRAME * 2])
        with contextlib.suppress(TimeoutError):
            while reply["audible_at"] is None:  # everything waiting, not one message a frame
                _take(reply, ws.recv(timeout=0))
        if reply["audible_at"] is not None:
            break
    while reply["metrics"] is None:
        _take(reply, ws.recv(timeout=120))
    ws.send(json.dumps({"type": "playback_finished", "generation": reply["generation"]}))
    return reply["audible_at"] - (started + speech_end / 16000), reply["metrics"]


def _take(reply: dict, message: bytes | str) -> None:
    """Note what one message from the server says about the reply."""
    now = time.perf_counter()
    if isinstance(message, str):
        data = json.loads(message)
        if data["type"] == "audio_stream_start":
            reply.update(generation=data["generation"], rate=data["sample_rate"], samples=0)
        elif data["type"] == "metrics":
            reply.update(generation=data["generation"], metrics=data)
        return
    if reply["audible_at"] is not None:
        return
    reply.setdefault("first_audio_at", now)  # playback starts here, and runs without a gap
    samples = np.frombuffer(message[4:], "<i2")
    loud = np.flatnonzero(np.abs(samples) > SOUNDING * 32768)
    if len(loud):
        offset = (reply["samples"] + loud[0]) / reply["rate"]
        reply["audible_at"] = max(reply["first_audio_at"] + offset, now)
    reply["samples"] += len(samples)


def run_chat(
    questions: list[tuple[bytes, int]], environment: dict[str, str], port: int
) -> dict:
    latencies, metrics = [], []
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, data_dir, environment)
        try:
            with connect(f"ws://127.0.0.1:{port}/v1/chat/ws") as ws:
                ws.recv(timeout=10)  # ready
                for pcm, speech_end in questions:
                    latency, stages = turn(ws, pcm, speech_end)
                    latencies.append(latency)
                    metrics.append(stages)
        finally:
            server.terminate()
            server.wait(timeout=10)
    return {
        "turns": len(latencies),
        "voice_to_voice_p50_ms": round(statistics.median(latencies) * 1000),
        "voice_to_voice_p95_ms": round(statistics.quantiles(latencies, n=20)[-1] * 1000),
        "voice_to_voice_ms": [round(latency * 1000) for latency in latencies],
        "server_stages_ms": metrics,
        "server_stage_medians_ms": {
            stage: round(statistics.median(m[stage] for m in metrics if stage in m))
            for stage in STAGES
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible LLM instead of the embedded")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a chat setting for both runs, e.g. --set partial_interval_ms=1000",
    )  # fmt: skip
    parser.add_argument("--no-baseline", action="store_true", help="only the default chat")
    args = parser.parse_args()
    synthesizer = Synthesizer(Settings())
    questions = [spoken(QUESTIONS[n % len(QUESTIONS)], synthesizer) for n in range(args.turns)]
    environment = {"VOXSERVE_CHAT__MAX_REPLY_TOKENS": "60"}
    if args.llm_base_url:
        environment["VOXSERVE_CHAT__LLM_BASE_URL"] = args.llm_base_url
    for setting in args.set:
        key, _, value = setting.partition("=")
        environment[f"VOXSERVE_CHAT__{key.upper()}"] = value
    configs = list(CONFIGS.items())[: 1 if args.no_baseline else None]
    results = {
        name: run_chat(questions, environment | extra, 18897 + number)
        for number, (name, extra) in enumerate(configs)
    }
    print(f"{args.turns} turns, voice-to-voice at the client (target p50 <= 1000 ms)")
    print(f"{'':40s} {'p50 ms':>8s} {'p95 ms':>8s}")
    for name, result in results.items():
        p50, p95 = result["voice_to_voice_p50_ms"], result["voice_to_voice_p95_ms"]
        print(f"{name:40s} {p50:8d} {p95:8d}")
    ratio = None
    if not args.no_baseline:
        ours, *_, baseline = results.values()
        ratio = round(ours["voice_to_voice_p50_ms"] / baseline["voice_to_voice_p50_ms"], 3)
        print(f"{'ratio (default / baseline)':40s} {ratio:8.2f}")
    print("\nserver stages, median ms (share of the server total)")
    width = max(map(len, results)) + 2
    print(f"{'stage':28s}" + "".join(f"{name:>{width}s}" for name in results))
    for stage in STAGES:
        cells = []
        for result in results.values():
            medians = result["server_stage_medians_ms"]
            total = medians["total_to_first_audio"] or 1
            cells.append(f"{medians[stage]:6d} ({medians[stage] / total:4.0%})")
        print(f"{stage:28s}" + "".join(f"{cell:>{width}s}" for cell in cells))
    out = Path(__file__).parent / "results" / "chat_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**results, "p50_ratio": ratio, "settings": args.set}, indent=2))


if __name__ == "__main__":
    main()
