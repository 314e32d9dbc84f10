"""The GPU engines through their own code: first audio, RTF and throughput at 1, 4, 16 requests.

Higgs Audio V2, Sesame CSM-1B and Chatterbox, each called from a thread per request as the
synthesizer calls it, at most its declared concurrency at a time:

    first audio     seconds from a request's start to its first audio chunk (median, p95)
    RTF             wall seconds per second of audio, one request's view (median)
    throughput      audio seconds per wall second over all requests together, and its ratio to one
                    request alone (the baseline, measured in the same run)
    first/complete  first audio against the moment all of a request's audio is ready, which is
                    what a non-streaming response would wait for

Each engine batches up to the largest level (``max_batch``, where it batches), after a warm-up
request. Weights: the engine's real checkpoint where its configuration finds one (``[engines.NAME]``
``model_path``, Higgs' ``audio_tokenizer_path``, or ``VOXSERVE_ENGINES__NAME__MODEL_PATH``...: a
directory or a Hub id already in the Hugging Face cache; nothing is downloaded), with the rest of
its table as configured. Otherwise the published architecture at full size with random weights,
capped (and, for Higgs, made never to end its stream) so that every request generates
``--seconds`` of audio and the compute timed is honest. ``--tiny`` runs the tiny architectures on
the CPU instead, with 2 s a request (about a minute on two cores): a check that the bench works,
whose numbers say nothing about a GPU.

Run: .venv/bin/python bench/gpu_engines.py [--tiny] [--engines higgs,csm,chatterbox]. Prints a
table per engine, writes bench/results/gpu_engines.json. An engine whose packages or modules are
absent is skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import SENTENCES  # noqa: E402
from voxserve.config import load_settings  # noqa: E402
from voxserve.engines.base import Engine, SynthesisOptions  # noqa: E402
from voxserve.engines.registry import ENGINE_CLASSES, engine_class  # noqa: E402
from voxserve.errors import VoxserveError  # noqa: E402

ENGINES = ("higgs", "csm", "chatterbox")
LEVELS = "1,4,16"
FULL_SECONDS, TINY_SECONDS = 8.0, 2.0


@dataclass(frozen=True)
class RandomWeights:
    """Where an engine's random checkpoint comes from, and the settings that cap its audio."""

    module: str
    """The engine's ``random_model`` module (imported only when this engine runs)."""
    settings: Callable[[Any, Path, str, str, float], dict[str, Any]]
    """(module, directory, size, device, seconds) -> engine settings for a checkpoint built there
    that speaks ``seconds`` of audio a request."""


def higgs_random(module: Any, directory: Path, size: str, device: str, seconds: float) -> dict:
    paths = module.build_checkpoint(
        directory, size=size, endless=True, device=device, dtype=_build_dtype(size)
    )
    # Exactly ``seconds``: the opening column, the frames at 25 Hz, the codebooks' staggered ends,
    # and the step whose column the cap cuts off.
    codebooks = module.SIZES[size][0]["num_codebooks"]
    return {**paths.settings(), "max_new_tokens": round(seconds * 25) + codebooks + 1}


def csm_random(module: Any, directory: Path, size: str, device: str, seconds: float) -> dict:
    # Its random model practically never ends a stream (every codebook at the end code at once),
    # so each request runs to the frame cap: max_audio_seconds, for a text long enough.
    path = module.build_checkpoint(directory, size=size, device=device, dtype=_build_dtype(size))
    return {"model_path": str(path), "max_audio_seconds": seconds}


def chatterbox_random(module: Any, directory: Path, size: str, device: str, seconds: float) -> dict:
    # Built on the CPU (the voice encoder is full size either way) and moved to the device by
    # loading. A random T3 rarely samples its stop token: each
    # request runs to the token cap, 25 tokens a second. About a fifth of a random T3's draws
    # fall outside the speech vocabulary and are dropped before decoding, so a request's audio
    # is about 0.8 of ``seconds`` (the table's last column says what came) and its RTF is the
    # pessimistic side of the real model's.
    path = module.build_checkpoint(directory, size=size)
    return {"model_path": str(path), "max_new_tokens": round(seconds * 25)}


RANDOM = {
    "higgs": RandomWeights("voxserve.engines.higgs.random_model", higgs_random),
    "csm": RandomWeights("voxserve.engines.csm.random_model", csm_random),
    "chatterbox": RandomWeights("voxserve.engines.chatterbox.random_model", chatterbox_random),
}
WEIGHT_SETTINGS = {"higgs": ("model_path", "audio_tokenizer_path")}
"""The settings naming an engine's weights (``model_path`` where not listed)."""


def _build_dtype(size: str) -> str:
    return "float32" if size == "tiny" else "bfloat16"


def request_text(number: int) -> str:
    return " ".join(SENTENCES[(number + k) % len(SENTENCES)] for k in range(3))


def run_requests(engine: Engine, count: int) -> dict:
    """``count`` requests at once, each in its own thread as the synthesizer would run them: at
    most the engine's declared concurrency at a time, the rest waiting their turn (timed from
    their start, as a client would)."""
    results: list[dict] = [{} for _ in range(count)]
    barrier = threading.Barrier(count)
    admitted = threading.Semaphore(engine.capabilities.concurrency)
    voice = engine.voices()[0].id

    def one(number: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        first, audio = None, 0.0
        with admitted:
            for chunk in engine.synthesize(request_text(number), SynthesisOptions(voice)):
                first = first if first is not None else time.perf_counter() - started
                audio += len(chunk.samples) / chunk.sample_rate
        results[number] = {"first": first, "wall": time.perf_counter() - started, "audio": audio}

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


def unavailable(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if name not in ENGINE_CLASSES:
        return "not in the engine registry (its engine is not built yet)"
    try:
        cls = engine_class(name)
    except ImportError as error:
        return f"its engine module does not import ({error})"
    if not cls.is_installed():
        return f"not installed: pip install 'voxserve[{cls.extra}]'"
    return None


def random_unavailable(name: str) -> str | None:
    """Why no random checkpoint can be built for ``name``, or None."""
    weights = RANDOM[name]
    if importlib.util.find_spec(weights.module) is None:
        return f"no real weights here, and no random checkpoint builder ({weights.module})"
    return None


def real_weights(name: str) -> dict | None:
    """The engine's configured table where its weights are here (a directory, or a Hub id in the
    cache), else None."""
    from voxserve.engines.higgs.loading import locate

    table = load_settings().engine_settings(name)
    configured = (
        engine_class(name).settings_from(table).model_copy(update={"allow_downloads": False})
    )
    for setting in WEIGHT_SETTINGS.get(name, ("model_path",)):
        try:
            locate(configured, "weights", setting)
        except VoxserveError:
            return None
    return table


def bench_engine(
    name: str,
    real: dict | None,
    size: str,
    args: argparse.Namespace,
    levels: list[int],
    device: str,
) -> dict:
    """One engine's rows, on its ``real`` weights' settings or a random checkpoint built now."""
    cls = engine_class(name)
    with tempfile.TemporaryDirectory() as scratch:
        settings, source = real, "real weights"
        if settings is None:
            module = importlib.import_module(RANDOM[name].module)
            print(f"{name}: building a random {size} checkpoint...", flush=True)
            settings = RANDOM[name].settings(module, Path(scratch), size, device, args.seconds)
            source = f"random {size} weights, {args.seconds:g} s a request"
        batching = {"max_batch": max(levels)} if "max_batch" in cls.Settings.model_fields else {}
        engine = cls({**settings, **batching, "device": device, "seed": 0})
        engine.load()
        try:
            run_requests(engine, 1)  # warm-up: allocations, kernels, caches
            rows = [run_requests(engine, level) for level in levels]
            # The engines on transformers batch in a worker (its stats); others run each call alone.
            stats = getattr(engine, "worker_stats", None)
            largest = stats.largest_batch if stats is not None else None
            used = getattr(engine, "device", device)
        finally:
            engine.unload()
    baseline = rows[0]["throughput_audio_s_per_s"]
    for row in rows:
        row["throughput_vs_1"] = row["throughput_audio_s_per_s"] / baseline
    return {"device": used, "weights": source, "largest_batch": largest, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random models on the CPU")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--requests", default=LEVELS, help="concurrency levels, comma-separated")
    parser.add_argument(
        "--seconds",
        type=float,
        help=f"audio per request on random weights ({FULL_SECONDS:g}; --tiny: {TINY_SECONDS:g})",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/gpu_engines.json"))
    args = parser.parse_args()
    args.seconds = args.seconds or (TINY_SECONDS if args.tiny else FULL_SECONDS)
    levels = [int(level) for level in args.requests.split(",")]
    device = "cpu" if args.tiny else resolve_device(args.device)
    size = "tiny" if args.tiny else "full"

    results: dict[str, Any] = {"tiny": args.tiny, "levels": levels, "engines": {}, "skipped": {}}
    for name in args.engines.split(","):
        reason = unavailable(name)
        real = None if reason or args.tiny else real_weights(name)
        if reason is None and real is None:
            reason = random_unavailable(name)
        if reason is not None:
            print(f"{name}: skipped, {reason}")
            results["skipped"][name] = reason
            continue
        result = bench_engine(name, real, size, args, levels, device)
        results["engines"][name] = result
        print_table(result, f"{name} on {result['device']}, {result['weights']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def resolve_device(device: str) -> str:
    """``auto``: CUDA when torch sees it (random weights are built there too), else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def print_table(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    largest = result["largest_batch"]
    batches = f"largest batch {largest}" if largest is not None else "no batching"
    table = Table(title=f"{title}; {batches}")
    for column in (
        "requests",
        "first audio (median / p95)",
        "RTF",
        "audio s / s",
        "vs 1 request",
        "first / complete",
        "audio s / request",
    ):
        table.add_column(column, justify="right")
    for row in result["rows"]:
        table.add_row(
            str(row["requests"]),
            f"{row['first_audio_median_s']:.3f} / {row['first_audio_p95_s']:.3f} s",
            f"{row['rtf_median']:.3f}",
            f"{row['throughput_audio_s_per_s']:.2f}",
            f"{row['throughput_vs_1']:.2f}x",
            f"{row['first_over_complete']:.2f}",
            f"{row['audio_s_per_request']:.2f}",
        )
    Console(width=120).print(table)  # one line a row, in a log too


if __name__ == "__main__":
    main()
