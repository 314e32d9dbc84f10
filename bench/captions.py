"""Caption accuracy (issue 17): where each word starts, against a reference, per engine and path.

    native       an engine's own word timings (Piper joe, Kokoro jm_kumo speaking English) against
                 forced alignment of the same text to the same audio (pocketsphinx,
                 ``voxserve.audio.align``); target: median |start offset| within 80 ms
    aligned      Piper's audio with its words withheld, timed after synthesis as an engine
                 without timings is (``synthesis/word_alignment.py``): English by forced
                 alignment, and by Whisper base's word timestamps matched to the text (the path
                 other languages take, here on English audio: no voice installed times words
                 natively outside English), against Piper's native timings; target 120 ms

Everything runs in-process through the Synthesizer, so the words are those every transport
sends (the stream's time, after pauses and fades). Forced alignment runs ~40-50 ms early
(``voxserve/audio/align.py``): the bias column shows it. ~1-2 min on two cores.

Run: .venv/bin/python bench/captions.py [--quick]. Prints a table, writes
bench/results/captions.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.kokoro import offset_summary, start_offsets  # noqa: E402
from voxserve.audio.align import align_words  # noqa: E402
from voxserve.audio.frames import AudioChunk, WordTiming  # noqa: E402
from voxserve.audio.transcribe import Transcriber  # noqa: E402
from voxserve.config import Settings  # noqa: E402
from voxserve.request import SpeechRequest  # noqa: E402
from voxserve.synthesis.synthesizer import Synthesizer  # noqa: E402
from voxserve.synthesis.word_alignment import interpolated, matched  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to bring your umbrella, because it may rain this afternoon.",
    "She opened the window and listened to the birds singing in the garden.",
    "Our train was late again, so we walked the last two miles to the office.",
    "Every morning he reads the newspaper while drinking a large cup of coffee.",
    "The children built a castle of sand and waited for the waves to reach it.",
    "A good book can carry you to places you have never seen before.",
    "They painted the kitchen yellow and hung new curtains over the sink.",
]
NATIVE_TARGET_MS = 80
ALIGNED_TARGET_MS = 120


def spoken(synthesizer: Synthesizer, text: str, model: str, voice: str) -> tuple:
    """(samples, rate, words in the stream's time) of one sentence."""

    async def collect() -> list:
        request = SpeechRequest(input=text, model=model, voice=voice, language="en")
        return [chunk async for chunk in synthesizer.stream(request)]

    chunks = asyncio.run(collect())
    samples = np.concatenate([chunk.samples for chunk in chunks])
    words = [word for chunk in chunks for word in chunk.words]
    return samples, chunks[0].sample_rate, words


def as_dicts(words: list[WordTiming]) -> list[dict]:
    return [{"word": word.text, "start": word.start} for word in words]


def measure(args: argparse.Namespace) -> dict[str, dict]:
    sentences = SENTENCES[:3] if args.quick else SENTENCES
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="voxserve-bench-")), cache_mb=0)
    synthesizer = Synthesizer(settings)
    whisper = Transcriber("base", cpu_threads=2)
    engines = [("piper", "joe")]
    if synthesizer.registry.is_installed("kokoro"):
        engines.append(("kokoro", "jm_kumo"))
    offsets: dict[str, list[float]] = {}
    for model, voice in engines:
        for text in sentences:
            samples, rate, native = spoken(synthesizer, text, model, voice)
            written = [word.text for word in native]
            reference = align_words(samples, rate, " ".join(written))
            found = start_offsets(as_dicts(native), [(w.text, w.start) for w in reference])
            offsets.setdefault(f"{model} {voice}: native vs forced alignment", []).extend(found)
            if model != "piper":
                continue
            # Piper's words withheld: the aligner's two paths, against Piper's own.
            truth = [(word.text, word.start) for word in native]
            duration = len(samples) / rate
            forced = synthesizer.aligner.align(samples, rate, " ".join(written), "en")
            heard = whisper.timed_words(AudioChunk(samples, rate), "en")
            by_whisper = interpolated(written, matched(written, heard), duration)
            for path, words in (("forced, en", forced), ("whisper base", by_whisper)):
                key = f"piper joe, words withheld: aligned ({path}) vs native"
                offsets.setdefault(key, []).extend(start_offsets(as_dicts(words), truth))
    return {name: offset_summary(found, "") for name, found in offsets.items()}


def print_table(results: dict[str, dict]) -> None:
    header = f"{'engine / path':<58} {'words':>5} {'median':>7} {'p90':>6} {'bias':>6} target"
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        target = NATIVE_TARGET_MS if "native vs" in name else ALIGNED_TARGET_MS
        median = row["start_offset_ms_median"]
        verdict = "ok" if median <= target else "MISS"
        print(
            f"{name:<58} {row['matched_words']:>5} {median:>5.0f}ms"
            f" {row['start_offset_ms_p90']:>4.0f}ms {row['start_bias_ms_median']:>4.0f}ms"
            f" {target:>4}ms {verdict}"
        )
    print("median/p90: |word start - reference start|; bias: median signed offset (+: later)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three sentences, not eight")
    results = measure(parser.parse_args())
    print_table(results)
    out = Path(__file__).parent / "results" / "captions.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
