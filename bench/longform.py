"""Long-form targets (issue: audiobooks and podcasts as jobs), each against a baseline in the
same run.

    throughput   a book through POST /v1/jobs (chapters, loudness, M4B) vs raw Piper on the same
                 paragraphs (target >= 0.95)
    memory       the server's RSS over the job, warmed with a paragraph first: first vs last
                 tenth (target: within 5%)
    loudness     the book as downloaded, decoded: integrated LUFS (target -16, BS.1770 by
                 pyloudnorm) and its true peak (ceiling -1 dBTP), vs Piper's own level
    resume       a server killed with SIGKILL mid-book, started again: pieces spoken again that
                 the first run had finished (target: at most one piece in flight)
    fair share   live first audio of a short reply while a book renders vs idle (target <= 1.5x)

Run: .venv/bin/python bench/longform.py [--quick] [--minutes M]. Prints a table, writes
bench/results/longform.json. Full mode is a one-hour audiobook with Piper's joe.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import REPLY, long_text, rss_during, rss_summary, start_server  # noqa: E402
from voxserve.engines.base import SynthesisOptions  # noqa: E402
from voxserve.engines.piper import PiperEngine  # noqa: E402

WORDS_PER_MINUTE = 160  # joe's pace, about
PARAGRAPH_WORDS = 60
PORT = 18931
URL = f"http://127.0.0.1:{PORT}"


def book_text(minutes: float, edition: int = 0) -> tuple[str, list[str]]:
    """A Markdown book of about ``minutes`` of speech: chapters of ten paragraphs. long_text
    repeats its ten sentences, which the segment cache would serve the job (and not raw Piper):
    every eighth word is followed by its number, so each sentence (13 words or more) is said
    once; an ``edition`` numbers other words, so no two books share a sentence either."""
    words = long_text(round(minutes * WORDS_PER_MINUTE)).split()
    words = [f"{word} {n}" if n % 8 == edition else word for n, word in enumerate(words)]
    paragraphs = [
        " ".join(words[i : i + PARAGRAPH_WORDS]) for i in range(0, len(words), PARAGRAPH_WORDS)
    ]
    chapters = [paragraphs[i : i + 10] for i in range(0, len(paragraphs), 10)]
    markdown = "\n\n".join(
        f"# Chapter {n}\n\n" + "\n\n".join(chapter) for n, chapter in enumerate(chapters, 1)
    )
    return markdown, paragraphs


def raw_piper(paragraphs: list[str]) -> tuple[float, float]:
    """(wall seconds, audio seconds) of the raw engine speaking every paragraph."""
    engine = PiperEngine()
    engine.load()
    started, samples = time.perf_counter(), 0
    for paragraph in paragraphs:
        samples += sum(
            len(c.samples) for c in engine.synthesize(paragraph, SynthesisOptions("joe"))
        )
    return time.perf_counter() - started, samples / 22050


def submit(markdown: str) -> str:
    files = {"file": ("book.md", markdown.encode(), "text/markdown")}
    response = httpx.post(f"{URL}/v1/jobs", files=files, data={"voice": "joe"}, timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def job(job_id: str) -> dict:
    return httpx.get(f"{URL}/v1/jobs/{job_id}", timeout=30).json()


def wait(job_id: str, *states: str) -> dict:
    while (current := job(job_id))["status"] not in states:
        time.sleep(0.2)
    return current


def book_loudness(job_id: str, some_paragraphs: list[str]) -> dict:
    """The downloaded book's loudness and true peak, and raw Piper's loudness (the baseline)."""
    import av
    import numpy as np
    import pyloudnorm

    from voxserve.audio.limiter import true_peaks

    book = httpx.get(f"{URL}/v1/jobs/{job_id}/audio", timeout=300).content
    with av.open(io.BytesIO(book)) as container:
        rate = container.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    engine = PiperEngine()
    engine.load()
    options = SynthesisOptions("joe")
    spoken = (engine.synthesize(paragraph, options) for paragraph in some_paragraphs)
    raw = np.concatenate([chunk.samples for chunks in spoken for chunk in chunks])
    meter, raw_meter = pyloudnorm.Meter(rate), pyloudnorm.Meter(22050)
    return {
        "book_lufs": round(meter.integrated_loudness(samples.astype(np.float64)), 2),
        "true_peak_dbtp": round(20 * float(np.log10(np.max(true_peaks(samples)))), 2),
        "raw_piper_lufs": round(raw_meter.integrated_loudness(raw.astype(np.float64)), 2),
        "raw_piper_peak_dbfs": round(20 * float(np.log10(np.max(np.abs(raw)))), 2),
    }


def first_audio_seconds(repeats: int, round_: int) -> float:
    """Median time to the first audio byte of a short reply, each one new (none cached)."""
    times = []
    for repeat in range(repeats):
        started = time.perf_counter()
        reply = f"{REPLY} That was answer {round_ * 100 + repeat}."
        body = {"input": reply, "response_format": "pcm", "voice": "joe"}
        with httpx.stream("POST", f"{URL}/v1/audio/speech", json=body, timeout=60) as response:
            next(response.iter_bytes())
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 minutes of audio, not 60")
    parser.add_argument("--minutes", type=float)
    args = parser.parse_args()
    minutes = args.minutes or (3 if args.quick else 60)
    markdown, paragraphs = book_text(minutes)
    results: dict[str, dict] = {}

    raw_wall, raw_audio = raw_piper(paragraphs)
    data_dir = tempfile.mkdtemp(prefix="voxserve-longform-")
    server = start_server(PORT, data_dir)
    try:
        idle = first_audio_seconds(15, 1)
        # One paragraph as long as the book's: the engine's buffers grow to their working size
        # on the first long input, which is warming up, not memory the job holds on to.
        warm = {"input": book_text(1, edition=2)[1][0], "voice": "joe", "response_format": "pcm"}
        httpx.post(f"{URL}/v1/audio/speech", json=warm, timeout=120).raise_for_status()
        began = time.perf_counter()
        job_id = submit(markdown)
        done, samples = rss_during(
            psutil.Process(server.pid), lambda: wait(job_id, "done", "failed")
        )
        wall = time.perf_counter() - began
        assert done["status"] == "done", done
        audio = done["progress"]["audio_seconds"]
        results["throughput"] = {
            "raw_audio_s_per_s": round(raw_audio / raw_wall, 2),
            "job_audio_s_per_s": round(audio / wall, 2),
            "ratio": round((audio / wall) / (raw_audio / raw_wall), 3),
            "audio_minutes": round(audio / 60, 1),
        }
        results["memory"] = rss_summary(samples)
        results["loudness"] = book_loudness(job_id, paragraphs[:20])

        busy_id = submit(book_text(minutes, edition=1)[0])
        wait(busy_id, "running")
        time.sleep(1)
        busy = first_audio_seconds(15, 2)
        results["fair_share"] = {"idle_s": round(idle, 3), "during_job_s": round(busy, 3),
                                 "ratio": round(busy / idle, 2)}  # fmt: skip
        pieces = Path(data_dir) / "jobs" / busy_id / "pieces"
        while len(list(pieces.glob("*.wav"))) < 2:
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        finished = len(list(pieces.glob("*.wav")))
        server = start_server(PORT, data_dir)
        resumed = wait(busy_id, "done", "failed")["progress"]
        total = resumed["pieces_total"]
        results["resume"] = {
            "pieces_total": total, "finished_when_killed": finished,
            "spoken_after_restart": resumed["pieces_made"],
            "rework": resumed["pieces_made"] - (total - finished),
        }  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/longform.json").write_text(json.dumps(results, indent=2))
    for name, values in results.items():
        print(f"{name:12} " + "  ".join(f"{key} {value}" for key, value in values.items()))


if __name__ == "__main__":
    main()
