"""What running the embedded LLM in its own process costs: time to a reply's first piece and to
its end, through `LocalLLM` (llama.cpp in a child process, pieces sent back over a pipe) against
the baseline of the same model called in this process, as the server did before. Both are greedy
on the same prompts, and interleaved round by round so that machine noise hits both alike. Also:
how long a restart takes (a new child loading the model), which a crash costs the next turn.
Run: .venv/bin/python bench/llm_process.py [--rounds 10]. Prints a table, writes
bench/results/llm_process.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chat_latency import QUESTIONS  # noqa: E402
from voxserve.chat.local_llm import LocalLLM, default_model_path, default_threads  # noqa: E402

SYSTEM = {"role": "system", "content": "You are Ava, a friendly and concise voice assistant."}
REPLY_TOKENS = 40


def in_process_model():
    from llama_cpp import Llama

    return Llama(
        model_path=default_model_path(), n_ctx=2048, n_threads=default_threads(), verbose=False
    )


def in_process_reply(model, messages: list[dict]) -> tuple[float, float]:
    started, first = time.perf_counter(), None
    for chunk in model.create_chat_completion(
        messages=messages, stream=True, max_tokens=REPLY_TOKENS, temperature=0.0
    ):
        if chunk["choices"][0]["delta"].get("content"):
            first = first or time.perf_counter()
    return first - started, time.perf_counter() - started


async def child_reply(llm: LocalLLM, messages: list[dict]) -> tuple[float, float]:
    started, first = time.perf_counter(), None
    async for _ in llm.stream(messages, max_tokens=REPLY_TOKENS):
        first = first or time.perf_counter()
    return first - started, time.perf_counter() - started


async def restart_seconds(llm: LocalLLM) -> float:
    """The next reply's first piece from a new child, which starts and loads the model first:
    what a crash costs (the child is ended here rather than killed, to time only the restart)."""
    await llm.aclose()
    first, _ = await child_reply(llm, [SYSTEM, {"role": "user", "content": QUESTIONS[0]}])
    return first


async def main(rounds: int) -> dict:
    model = in_process_model()
    llm = LocalLLM(temperature=0.0, max_tokens=REPLY_TOKENS)
    await llm.warm_up([SYSTEM])
    in_process_reply(model, [SYSTEM, {"role": "user", "content": "Hello."}])  # warm alike
    times: dict[str, list[tuple[float, float]]] = {"child process": [], "in process": []}
    for number in range(rounds):
        messages = [SYSTEM, {"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}]
        times["child process"].append(await child_reply(llm, messages))
        times["in process"].append(in_process_reply(model, messages))
    restarts = [await restart_seconds(llm) for _ in range(3)]
    await llm.aclose()
    return {
        name: {
            "first_piece_ms": statistics.median(first for first, _ in pairs) * 1000,
            "whole_reply_ms": statistics.median(whole for _, whole in pairs) * 1000,
        }
        for name, pairs in times.items()
    } | {"restart_to_first_piece_ms": statistics.median(restarts) * 1000}


def print_table(results: dict) -> None:
    child, baseline = results["child process"], results["in process"]
    print(f"{'':16} {'first piece ms':>15} {'whole reply ms':>15}")
    for name in ("child process", "in process"):
        row = results[name]
        print(f"{name:16} {row['first_piece_ms']:15.0f} {row['whole_reply_ms']:15.0f}")
    first = child["first_piece_ms"] / baseline["first_piece_ms"]
    whole = child["whole_reply_ms"] / baseline["whole_reply_ms"]
    print(f"{'ratio':16} {first:15.2f} {whole:15.2f}")
    restart = results["restart_to_first_piece_ms"]
    print(f"a new child (as after a crash), its first piece: {restart:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    results = asyncio.run(main(parser.parse_args().rounds))
    print_table(results)
    output = Path(__file__).resolve().parent / "results" / "llm_process.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
