"""Kokoro targets (issue 14), each against a baseline measured in the same run.

    throughput    a long text through POST /v1/audio/speech (kokoro, jm_kumo, pcm) vs raw
                  ``kokoro_onnx.Kokoro.create`` on the same text and voice
    first audio   time to first byte of a three-sentence reply vs raw kokoro-onnx on its first
                  sentence alone
    memory        server RSS with Kokoro loaded, and over a request making ``--minutes`` of audio
    intelligibility  Whisper round-trip word error rate on CORPUS, kokoro jm_kumo beside piper joe
    timestamps    each word kokoro (and piper) timed against where Whisper's word timestamps
                  place it, and where forced alignment of the text places it (pocketsphinx,
                  ``voxserve.audio.align``: the text is known, so only its timing is guessed)

Run: .venv/bin/python bench/kokoro.py [--quick]. Prints a table, writes bench/results/kokoro.json.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.core import REPLY, long_text, rss_during, rss_summary, start_server, timed  # noqa: E402
from voxserve.audio import StreamResampler  # noqa: E402
from voxserve.audio.align import align_words  # noqa: E402
from voxserve.audio.transcribe import WHISPER_SAMPLE_RATE, Transcriber  # noqa: E402
from voxserve.engines.kokoro_model import packaged_model, packaged_voices  # noqa: E402
from voxserve.engines.onnx_runtime import session_options  # noqa: E402
from voxserve.errors import EngineError  # noqa: E402
from voxserve.text import normalize_for, split_sentences  # noqa: E402

VOICE = "jm_kumo"
FIRST_SENTENCE = split_sentences(REPLY)[0]
# Numbers, times, money, dates and abbreviations: what the text normalizer and the engine's
# phonemizer must get right for Whisper to hear the words.
CORPUS = [
    "The train leaves at 7:45 in the morning from platform 3.",
    "Dr. Smith will see you on Tuesday at 2:30 p.m.",
    "The invoice came to $1,250, due by March 15th.",
    "Our office is at 221 Baker St., on the second floor.",
    "Please call me back at 10 a.m. or after 4 in the afternoon.",
    "The recipe needs 2 cups of flour and 3 eggs.",
    "Mr. Jones paid 45 dollars for the concert tickets.",
    "The meeting moved from 9:00 to 11:15 on Friday.",
    "We expect about 1,500 guests at the conference in June.",
    "The temperature dropped to 12 degrees overnight.",
    "She ran 5 km in just under 24 minutes.",
    "Flight 208 to Chicago is delayed by 40 minutes.",
    "The package weighs 3.5 kg and ships on Monday.",
    "Prof. Lee teaches the course on the 1st and 3rd Thursday of each month.",
    "The store is open from 8 a.m. to 9 p.m., seven days a week.",
    "Version 2.1 fixed 17 bugs and added 3 new features.",
    "The population grew by 12 percent between 2010 and 2020.",
    "Turn left on Oak Ave. and drive for 2 miles.",
    "The appointment is on the 22nd of November at noon.",
    "He was born on July 4, 1990, in a small town.",
    "The recipe says to bake it for 35 minutes at 180 degrees.",
    "Gen. Carter arrived at 6:20 with 12 officers.",
    "Our team answered 300 calls and closed 98 percent of them.",
    "The lease costs $950 a month, plus a $200 deposit.",
]
TIMED_PORT = 18890


def raw_kokoros() -> tuple[Any, Any]:
    """kokoro-onnx on the packaged int8 model and voices: as its README loads it (the library's
    session), and on a session tuned as the engine's is (explicit threads, no spinning)."""
    import onnxruntime
    from kokoro_onnx import Kokoro

    model = str(packaged_model(Path(tempfile.gettempdir()) / "voxserve-bench-kokoro"))
    voices = packaged_voices()
    assert voices is not None, "pip install 'voxserve[kokoro]'"
    options = session_options(onnxruntime, os.cpu_count() or 1, spinning=False)
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    session._model_path = model  # what Kokoro.from_session reads
    return Kokoro(model, str(voices)), Kokoro.from_session(session, str(voices))


def server_speech(client: httpx.Client, body: dict) -> tuple[float, float, int]:
    """(wall seconds, seconds to first byte, bytes) for one streamed pcm request."""
    started = time.perf_counter()
    first, total = None, 0
    with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        for data in response.iter_bytes():
            if first is None:
                first = time.perf_counter() - started
            total += len(data)
    return time.perf_counter() - started, first, total


def server_timed(
    client: httpx.Client, text: str, model: str, voice: str
) -> tuple[np.ndarray, list[dict]]:
    """Whole audio at 16 kHz and its word timestamps (seconds from the start) from the server."""
    body = {"input": text, "model": model, "voice": voice, "response_format": "pcm",
            "stream": False, "timestamps": True}  # fmt: skip
    answer = client.post("/v1/audio/speech", json=body)
    answer.raise_for_status()
    made = answer.json()
    pcm = np.frombuffer(base64.b64decode(made["audio"]), dtype=np.int16)
    samples = pcm.astype(np.float32) / 32768
    resampler = StreamResampler(made["sample_rate"], WHISPER_SAMPLE_RATE)
    return resampler.process(samples, last=True), made["timestamps"]


def words_of(text: str) -> list[str]:
    """``text`` as spoken words, lowercase without punctuation: reference and transcript are both
    normalized, so "7:45" and "seven forty-five" compare equal."""
    return re.findall(r"[a-z0-9']+", normalize_for(text, "en").lower().replace("-", " "))


def bare(word: str) -> str:
    return re.sub(r"[^a-z0-9']", "", word.lower())


def errors(reference: list[str], heard: list[str]) -> int:
    """Word edit distance (substitutions, insertions, deletions)."""
    row = list(range(len(heard) + 1))
    for i, said in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, got in enumerate(heard, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (said != got))
    return row[-1]


def start_offsets(timed_words: list[dict], reference: list[tuple[str, float]]) -> list[float]:
    """Engine start - reference start in seconds for the words both give, matched in order;
    ``reference`` is (word, start) pairs."""
    ours = [bare(word["word"]) for word in timed_words]
    theirs = [bare(word) for word, _ in reference]
    matcher = difflib.SequenceMatcher(a=ours, b=theirs, autojunk=False)
    return [
        timed_words[block.a + k]["start"] - reference[block.b + k][1]
        for block in matcher.get_matching_blocks()
        for k in range(block.size)
    ]


def offset_summary(offsets: list[float], prefix: str) -> dict:
    """Median and p90 of |offset| (ms) and the median offset (bias), keys led by ``prefix``."""
    if not offsets:
        return {}
    distances = [abs(offset) for offset in offsets]
    return {
        f"{prefix}matched_words": len(offsets),
        f"{prefix}start_offset_ms_median": round(1000 * statistics.median(distances), 1),
        f"{prefix}start_offset_ms_p90": round(1000 * statistics.quantiles(distances, n=10)[-1], 1),
        # Positive: the engine places words later than the reference does.
        f"{prefix}start_bias_ms_median": round(1000 * statistics.median(offsets), 1),
    }


def round_trip(client: httpx.Client, whisper, model: str, voice: str) -> dict:
    """WER of Whisper hearing ``voice`` speak CORPUS, and its timed words' start offsets from
    Whisper's word timestamps and from the forced alignment of the text (what the server
    spoke: CORPUS normalized, as the synthesizer normalizes it)."""
    wrong = total = 0
    whisper_offsets: list[float] = []
    aligned_offsets: list[float] = []
    timed_count = unaligned = 0
    for sentence in CORPUS:
        audio, timed_words = server_timed(client, sentence, model, voice)
        segments, _ = whisper.transcribe(
            audio, beam_size=5, word_timestamps=True, condition_on_previous_text=False
        )
        segments = list(segments)
        heard = " ".join(segment.text for segment in segments)
        reference = words_of(sentence)
        wrong += errors(reference, words_of(heard))
        total += len(reference)
        timed_count += len(timed_words)
        heard_words = [(w.word, w.start) for s in segments for w in s.words or ()]
        whisper_offsets += start_offsets(timed_words, heard_words)
        try:
            aligned = align_words(audio, WHISPER_SAMPLE_RATE, normalize_for(sentence, "en"))
        except EngineError:  # speech that is not the text (a word skipped): no reference
            unaligned += 1
        else:
            aligned_offsets += start_offsets(timed_words, [(w.text, w.start) for w in aligned])
    return {
        "wer": round(wrong / total, 3),
        "words": total,
        "timed_words": timed_count,
        **offset_summary(whisper_offsets, ""),
        "unaligned_sentences": unaligned,
        **offset_summary(aligned_offsets, "aligned_"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller texts, for a smoke run")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved raw/server rounds")
    parser.add_argument("--minutes", type=float, default=None, help="audio for the memory run")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    minutes = args.minutes or (2 if args.quick else 30)
    words = 60 if args.quick else 1000
    text = long_text(words)

    defaults, tuned = raw_kokoros()
    for kokoro in (defaults, tuned):
        kokoro.create("Warm up.", voice=VOICE)
    transcriber = Transcriber()
    transcriber.load()
    # The loaded faster-whisper model: Transcriber's own API gives text, not word timestamps.
    whisper = transcriber._model
    speech = {"model": "kokoro", "voice": VOICE, "response_format": "pcm"}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        # Kokoro is the default engine, so it is loaded before the first RSS sample. No segment
        # cache: the texts repeat their sentences, and a lookup is not the engine path.
        settings = {"VOXSERVE_CACHE_MB": "0", "VOXSERVE_DEFAULT_ENGINE": "kokoro",
                    "VOXSERVE_DEFAULT_VOICE": VOICE}  # fmt: skip
        server = start_server(TIMED_PORT, data_dir, settings)
        process = psutil.Process(server.pid)
        client = httpx.Client(base_url=f"http://127.0.0.1:{TIMED_PORT}", timeout=3600)
        try:
            rss_loaded = process.memory_info().rss / 2**20
            server_speech(client, speech | {"input": "Warm up."})
            # Interleaved rounds, so drift on a shared machine hits raw and server alike. Walls
            # for the same text: the server's audio also holds its pauses between sentences.
            walls: dict[str, list[float]] = {"defaults": [], "tuned": [], "server": []}
            first_ms: dict[str, list[float]] = {"defaults": [], "tuned": [], "server": []}
            for _ in range(rounds):
                for name, kokoro in (("defaults", defaults), ("tuned", tuned)):
                    walls[name].append(timed(kokoro.create, text, VOICE))
                    first_ms[name] += [1000 * timed(kokoro.create, FIRST_SENTENCE, VOICE)]
                walls["server"].append(server_speech(client, speech | {"input": text})[0])
                first_ms["server"] += [1000 * server_speech(client, speech | {"input": REPLY})[1]]
            audio, rate = tuned.create(text, VOICE)
            raw_audio = len(audio) / rate
            median = statistics.median
            server_wall, server_ttfa = median(walls["server"]), median(first_ms["server"])
            results["throughput"] = {"words": words, "raw_audio_seconds": round(raw_audio, 1)}
            results["first_audio"] = {"server_ttfa_ms_median": round(server_ttfa, 1)}
            for name in ("defaults", "tuned"):
                results["throughput"] |= {
                    f"raw_{name}_x_realtime": round(raw_audio / median(walls[name]), 2),
                    f"server_speed_vs_raw_{name}": round(median(walls[name]) / server_wall, 3),
                }
                results["first_audio"] |= {
                    f"raw_{name}_first_sentence_ms": round(median(first_ms[name]), 1),
                    f"overhead_vs_{name}_ms": round(server_ttfa - median(first_ms[name]), 1),
                }
            results["memory"] = memory_run(client, process, speech, minutes) | {
                "rss_loaded_mb": round(rss_loaded, 1)
            }
            results["kokoro"] = round_trip(client, whisper, "kokoro", VOICE)
            results["piper"] = round_trip(client, whisper, "piper", "joe")
        finally:
            client.close()
            server.terminate()
            server.wait(timeout=10)

    print_table(results)
    out = Path(__file__).parent / "results" / "kokoro.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


REQUEST_CHARS = 3500
"""A memory run's text goes in requests of at most this much (the server's input limit is
4096 characters); one after another, on one connection, as a long reading would."""


def memory_run(client: httpx.Client, process: psutil.Process, speech: dict, minutes: float):
    """Server RSS sampled while it makes about ``minutes`` of audio, request after request."""
    requests, current = [], ""
    for sentence in split_sentences(long_text(int(minutes * 60 * 2.7))):  # ~2.7 words a second
        if current and len(current) + 1 + len(sentence) > REQUEST_CHARS:
            requests.append(current)
            current = ""
        current = f"{current} {sentence}".strip()
    requests.append(current)

    def speak_all() -> tuple[float, int]:
        wall = size = 0
        for text in requests:
            seconds, _, made = server_speech(client, speech | {"input": text})
            wall, size = wall + seconds, size + made
        return wall, size

    (wall, size), samples = rss_during(process, speak_all)
    rate = 24000  # kokoro's, which the server sends unresampled
    return {
        "audio_minutes": round(size / 2 / rate / 60, 1),
        "requests": len(requests),
        **rss_summary(samples),
        "x_realtime": round(size / 2 / rate / wall, 2),
    }


def print_table(results: dict[str, dict]) -> None:
    t, f, m = results["throughput"], results["first_audio"], results["memory"]
    raws = (("tuned", "baseline", ">= 0.95"), ("defaults", "", ""))
    rows = [
        row
        for name, baseline, target in raws
        for row in (
            (f"throughput: raw kokoro-onnx ({name}) x realtime",
             f"{t[f'raw_{name}_x_realtime']}x", baseline),
            (f"throughput: server speed / raw {name} (same text)",
             f"{t[f'server_speed_vs_raw_{name}']}", target),
        )
    ]  # fmt: skip
    rows.append(("first audio: server TTFA median", f"{f['server_ttfa_ms_median']} ms", ""))
    for name, baseline, _ in raws:
        rows += [
            (f"first audio: raw {name} first sentence",
             f"{f[f'raw_{name}_first_sentence_ms']} ms", baseline),
            (f"first audio: server - raw {name} first sentence",
             f"{f[f'overhead_vs_{name}_ms']} ms", "<= 20 ms" if baseline else ""),
        ]  # fmt: skip
    rows += [
        ("memory: RSS kokoro loaded", f"{m['rss_loaded_mb']} MB", "report"),
        (
            f"memory: RSS first/last tenth of {m['audio_minutes']} min",
            f"{m['rss_first_tenth_mb']} / {m['rss_last_tenth_mb']} MB",
            "flat",
        ),
        ("memory: RSS peak", f"{m['rss_peak_mb']} MB", ""),
    ]
    for name, voice in (("kokoro", VOICE), ("piper", "joe")):
        r = results[name]
        rows.append((f"WER {name} {voice} ({r['words']} words)", f"{r['wer']:.1%}", "report"))
    for name in ("kokoro", "piper"):
        r = results[name]
        for prefix, reference in (("", "Whisper"), ("aligned_", "aligned")):
            if f"{prefix}matched_words" not in r:
                continue
            rows.append((
                f"timestamps {name}: |start - {reference}| median / p90 "
                f"({r[f'{prefix}matched_words']} words)",
                f"{r[f'{prefix}start_offset_ms_median']} / {r[f'{prefix}start_offset_ms_p90']} ms",
                "<= 80 ms" if name == "kokoro" else "",
            ))  # fmt: skip
            rows.append((f"timestamps {name}: start - {reference}, median (bias)",
                         f"{r[f'{prefix}start_bias_ms_median']:+} ms", ""))  # fmt: skip
        if r["unaligned_sentences"]:
            rows.append((f"timestamps {name}: sentences the aligner could not align",
                         f"{r['unaligned_sentences']}", ""))  # fmt: skip
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':>18}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>18}  {target}")


if __name__ == "__main__":
    main()
