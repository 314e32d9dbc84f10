"""Higgs Audio V2 through the engine: time to first audio and realtime factor at 1, 4, 16 requests.

    first audio     seconds from a request's start to its first audio chunk (median, p95)
    RTF             wall seconds per second of audio, one request's view (median)
    throughput      audio seconds per wall second over all requests together; its ratio to one
                    request alone (the baseline, measured in the same run), and to the same
                    requests served one at a time (max_batch = 1): what batching buys
    first/complete  first audio against the moment all of a request's audio is ready, which is
                    what a non-streaming response would wait for

Weights: the real checkpoint where the engine finds it (``[engines.higgs]`` ``model_path`` and
``audio_tokenizer_path`` in voxserve's configuration, ``VOXSERVE_ENGINES__HIGGS__MODEL_PATH``...,
or ``--model-path``/``--audio-tokenizer-path``); otherwise the
published architecture at full size with random weights, made never to end its audio stream, so
that every request generates exactly ``--seconds`` of audio and the compute timed is honest.
``--tiny`` runs the tiny architecture on the CPU instead (a quick check that the bench works; its
numbers say nothing about a GPU).

Run: .venv/bin/python bench/higgs_gpu.py [--tiny]. Prints a table, writes
bench/results/higgs_gpu.json.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import SENTENCES  # noqa: E402
from voxserve.config import load_settings  # noqa: E402
from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.higgs import HiggsEngine  # noqa: E402
from voxserve.engines.higgs.random_model import FULL_MODEL, TINY_MODEL, build_checkpoint  # noqa: E402
from voxserve.engines.higgs.settings import HiggsSettings  # noqa: E402

FRAME_RATE = 25  # codes per second of audio


def request_text(number: int) -> str:
    return " ".join(SENTENCES[(number + k) % len(SENTENCES)] for k in range(3))


def run_requests(engine: HiggsEngine, count: int) -> dict:
    """``count`` requests at once, each in its own thread as the synthesizer would run them."""
    results: list[dict] = [{} for _ in range(count)]
    barrier = threading.Barrier(count)

    def one(number: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        first, audio = None, 0
        for chunk in engine.synthesize(request_text(number), SynthesisOptions("higgs")):
            first = first if first is not None else time.perf_counter() - started
            audio += len(chunk.samples)
        wall = time.perf_counter() - started
        results[number] = {"first": first, "wall": wall, "audio": audio / 24000}

    began = time.perf_counter()
    threads = [threading.Thread(target=one, args=(number,)) for number in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    firsts = sorted(result["first"] for result in results)
    audio = sum(result["audio"] for result in results)
    return {
        "requests": count,
        "first_audio_median_s": statistics.median(firsts),
        "first_audio_p95_s": firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))],
        "rtf_median": statistics.median(result["wall"] / result["audio"] for result in results),
        "throughput_audio_s_per_s": audio / elapsed,
        "first_over_complete": statistics.median(
            result["first"] / result["wall"] for result in results
        ),
        "audio_s_per_request": audio / count,
    }


def weights(args: argparse.Namespace, scratch: Path) -> tuple[dict, str]:
    """Engine settings for the real checkpoint if present, else a random one built now."""
    if not args.tiny:
        given = {
            key: value
            for key, value in (
                ("model_path", args.model_path),
                ("audio_tokenizer_path", args.audio_tokenizer_path),
            )
            if value
        }
        table = {**load_settings().engine_settings("higgs"), **given}
        configured = HiggsEngine.settings_from(table)
        assert isinstance(configured, HiggsSettings)
        if Path(configured.model_path).is_dir() and Path(configured.audio_tokenizer_path).is_dir():
            return {
                "model_path": configured.model_path,
                "audio_tokenizer_path": configured.audio_tokenizer_path,
            }, "real weights"
    size = "tiny" if args.tiny else "full"
    device = "cpu" if args.tiny else args.device
    dtype = "float32" if args.tiny else "bfloat16"
    print(f"building a random {size} checkpoint on {device}...", flush=True)
    paths = build_checkpoint(scratch, size=size, endless=True, device=device, dtype=dtype)
    # Exactly --seconds of audio: the opening column, the frames, the codebooks' staggered ends,
    # and the step whose column the cap cuts off.
    codebooks = (TINY_MODEL if args.tiny else FULL_MODEL)["num_codebooks"]
    steps = round(args.seconds * FRAME_RATE) + codebooks + 1
    return {**paths.settings(), "max_new_tokens": steps}, f"random {size} weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random model on the CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model-path")
    parser.add_argument("--audio-tokenizer-path")
    parser.add_argument("--requests", default="1,4,16", help="concurrency levels")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per random request")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/higgs_gpu.json"))
    args = parser.parse_args()
    levels = [int(level) for level in args.requests.split(",")]

    with tempfile.TemporaryDirectory() as scratch:
        settings, source = weights(args, Path(scratch))
        device = "cpu" if args.tiny else args.device
        batched, largest, device = measure({**settings, "device": device}, max(levels), levels)
        # The same load one request at a time (a lock around generate): what batching adds.
        serial, _, _ = measure({**settings, "device": device}, 1, levels)

    baseline = batched[0]["throughput_audio_s_per_s"]
    for row, alone in zip(batched, serial, strict=True):
        row["throughput_vs_1"] = row["throughput_audio_s_per_s"] / baseline
        row["throughput_one_at_a_time"] = alone["throughput_audio_s_per_s"]
        row["batching_gain"] = row["throughput_audio_s_per_s"] / alone["throughput_audio_s_per_s"]
    print_table(batched, f"Higgs Audio V2 on {device}, {source}")
    result = {"device": device, "weights": source, "largest_batch": largest, "rows": batched}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


def measure(settings: dict, max_batch: int, levels: list[int]) -> tuple[list[dict], int, str]:
    """Rows per concurrency level, the largest batch formed, and the device used."""
    engine = HiggsEngine({**settings, "max_batch": max_batch, "seed": 0})
    engine.load()
    try:
        run_requests(engine, 1)  # warm-up: allocations, kernels, caches
        rows = [run_requests(engine, level) for level in levels]
        return rows, engine.worker_stats.largest_batch, engine.device
    finally:
        engine.unload()


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in (
        "requests",
        "first audio (median / p95)",
        "RTF",
        "audio s / s",
        "vs 1 request",
        "vs one at a time",
        "first / complete",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["requests"]),
            f"{row['first_audio_median_s']:.3f} / {row['first_audio_p95_s']:.3f} s",
            f"{row['rtf_median']:.3f}",
            f"{row['throughput_audio_s_per_s']:.2f}",
            f"{row['throughput_vs_1']:.2f}x",
            f"{row['batching_gain']:.2f}x",
            f"{row['first_over_complete']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
