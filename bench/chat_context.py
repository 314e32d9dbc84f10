"""A long voice chat with the embedded LLM: time to a reply's first word as the conversation grows.

Past `build_messages`' 40 turns, and past the 2048 tokens of SmolLM2's context, old turns must go.
Let go one turn a turn, the prompt's start changes before every reply, and llama.cpp, which keeps
only the longest prefix it has read, reads the whole conversation again each time. voxserve lets
old turns go in blocks, so the start stays put for many replies. The baseline, in the same run,
is the window sliding one turn a turn. Both converse with the same questions, greedily.
Run: .venv/bin/python bench/chat_context.py [--exchanges 48]. Prints a table, writes
bench/results/chat_context.json.
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
from voxserve.chat import local_llm  # noqa: E402
from voxserve.chat.characters import USER, Character, ChatTurn, build_messages  # noqa: E402

AVA = Character("Ava", "warm_female", "You are Ava, a friendly and concise voice assistant.")
MAX_TURNS = 40  # build_messages' default
REPLY_TOKENS = 60


def sliding_one_turn_a_turn(history: list[ChatTurn]) -> list[dict]:
    """The baseline: the last MAX_TURNS turns, the window moving with every turn."""
    return build_messages(AVA, history[-MAX_TURNS:], max_turns=len(history[-MAX_TURNS:]))


def in_blocks(history: list[ChatTurn]) -> list[dict]:
    return build_messages(AVA, history, max_turns=MAX_TURNS)


async def converse(exchanges: int, messages_for, drop_block: int) -> list[float]:
    """Seconds to the first word of each reply."""
    local_llm._DROP_BLOCK = drop_block
    llm = local_llm.LocalLLM(temperature=0.0, max_tokens=REPLY_TOKENS)
    await llm.warm_up(messages_for([]))
    history: list[ChatTurn] = []
    first_words = []
    for number in range(exchanges):
        question = f"{QUESTIONS[number % len(QUESTIONS)]} (question {number + 1})"
        history.append(ChatTurn(USER, question))
        asked, first, reply = time.perf_counter(), None, ""
        async for piece in llm.stream(messages_for(history)):
            first = first or time.perf_counter()
            reply += piece
        first_words.append(first - asked)
        history.append(ChatTurn(AVA.name, reply.strip()))
    return first_words


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=48)
    args = parser.parse_args()
    default_block = local_llm._DROP_BLOCK
    results = {
        "voxserve: in blocks": asyncio.run(converse(args.exchanges, in_blocks, default_block)),
        "baseline: one turn a turn": asyncio.run(
            converse(args.exchanges, sliding_one_turn_a_turn, 1)
        ),
    }
    ours, baseline = results.values()
    print(f"time to a reply's first word, median ms, {args.exchanges} exchanges (embedded LLM)")
    print(f"{'exchanges':12s} {'in blocks':>10s} {'baseline':>10s} {'ratio':>7s}")
    for start in range(0, args.exchanges, 12):
        part = slice(start, start + 12)
        mine, theirs = statistics.median(ours[part]), statistics.median(baseline[part])
        label = f"{start + 1}-{min(start + 12, args.exchanges)}"
        print(f"{label:12s} {mine * 1000:10.0f} {theirs * 1000:10.0f} {mine / theirs:7.2f}")
    out = Path(__file__).parent / "results" / "chat_context.json"
    out.parent.mkdir(exist_ok=True)
    milliseconds = {name: [round(s * 1000) for s in values] for name, values in results.items()}
    out.write_text(json.dumps(milliseconds, indent=2))


if __name__ == "__main__":
    main()
