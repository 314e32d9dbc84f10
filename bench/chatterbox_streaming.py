"""Chatterbox streamed: first audio against the whole clip, for a text of three sentences.

The engine on a random checkpoint (``voxserve.engines.chatterbox.random_model``: the real
classes, a one-layer T3 and a small S3Gen; or ``--model-path`` for real weights), one call
speaking ``TEXT`` whole, as the planner would hand it a paragraph:

    first audio     seconds from the call to its first chunk
    whole clip      seconds until its last chunk: what a response that does not stream waits for
    ratio           first audio / whole clip (the issue's target: at most 0.25)

with the watermark off and on (it holds back a quarter second, marked with the audio after it).
A random T3 never samples its stop token: the clip runs to ``--tokens`` (25 a second), so the
work timed is a real clip's. Numbers on a CPU say how streaming divides the work, not how fast a
GPU is.

Run: .venv/bin/python bench/chatterbox_streaming.py [--tokens 200] [--device cpu]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.chatterbox import ChatterboxEngine  # noqa: E402
from voxserve.engines.chatterbox.random_model import build_checkpoint  # noqa: E402

TEXT = (
    "The birds sing at dawn, long before the town wakes. The river runs to the sea, past "
    "the mill and the old stone bridge. We walk home along the shore as the lamps are lit."
)


def timed_call(engine: ChatterboxEngine) -> tuple[float, float, float]:
    """(first audio, whole clip, audio seconds) of one call."""
    start = time.perf_counter()
    first, samples = None, 0
    for chunk in engine.synthesize(TEXT, SynthesisOptions("chatterbox")):
        first = first or time.perf_counter() - start
        samples += len(chunk.samples)
    return first or 0.0, time.perf_counter() - start, samples / 24000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-path", help="a real checkpoint directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.model_path or str(build_checkpoint(Path(scratch)))
        common = {"model_path": path, "device": args.device, "seed": 1}
        common["max_new_tokens"] = args.tokens
        print(f"{'watermark':<10} {'first audio':>12} {'whole clip':>11} {'audio':>7} {'ratio':>6}")
        for watermark in (False, True):
            engine = ChatterboxEngine({**common, "watermark": watermark})
            engine.load()
            timed_call(engine)  # warm-up
            first, whole, audio = timed_call(engine)
            print(
                f"{'on' if watermark else 'off':<10} {first:>11.2f}s {whole:>10.2f}s "
                f"{audio:>6.1f}s {first / whole:>6.2f}"
            )


if __name__ == "__main__":
    main()
