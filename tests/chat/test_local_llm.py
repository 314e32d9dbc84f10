"""The embedded LLM (SmolLM2-135M-Instruct in llama.cpp), run for real on the CPU, in its own
process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from voxserve.chat.llm import LLMError
from voxserve.chat.local_llm import LocalLLM, default_model_path
from voxserve.errors import EngineUnavailableError, InvalidRequestError

QUESTION = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]
COMMON_WORDS = {"the", "a", "an", "is", "of", "to", "and", "in", "it", "you", "i", "paris"}
ASSISTANT_HEADER = 3  # tokens: <|im_start|> assistant \n, which end a prompt and open a reply


@pytest.fixture(scope="module")
def llm():
    with LocalLLM(temperature=0.0, max_tokens=40) as llm:  # greedy: the same reply every run
        llm.load()
        yield llm


async def collect(llm: LocalLLM, messages: list[dict], **options) -> list[str]:
    return [piece async for piece in llm.stream(messages, **options)]


def assert_english(text: str) -> None:
    text = text.strip()
    words = re.findall(r"[a-z']+", text.lower())
    assert len(words) >= 3, text
    assert COMMON_WORDS & set(words), text
    assert sum(c.isascii() for c in text) / len(text) > 0.95, text


def ended(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet has)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_a_reply_streams_in_pieces_of_english(llm: LocalLLM) -> None:
    pieces = await collect(llm, QUESTION)
    assert len(pieces) >= 3, pieces
    assert_english("".join(pieces))


async def test_warming_up_loads_the_model_and_reads_the_prompt() -> None:
    with LocalLLM(temperature=0.0) as llm:
        await llm.warm_up(QUESTION[:1])
        assert llm.loaded
        assert await collect(llm, QUESTION)
        warm_up, first = llm.recent_replies
    # llama.cpp kept the persona prompt it read: the first reply read only the user's words.
    assert warm_up.prompt_tokens > ASSISTANT_HEADER
    assert first.cached_tokens >= warm_up.prompt_tokens - ASSISTANT_HEADER
    assert first.prompt_tokens > first.cached_tokens


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
async def test_replies_are_written_at_a_lower_priority_than_speech(llm: LocalLLM) -> None:
    async with contextlib.aclosing(llm.stream(STORY)) as pieces:
        await anext(pieces)  # llama.cpp's threads are at work now
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        threads = psutil.Process(llm.process_id).threads()
        assert len(threads) >= llm.n_threads
        assert min(os.getpriority(os.PRIO_PROCESS, thread.id) for thread in threads) > ours


async def test_max_tokens_bounds_the_reply(llm: LocalLLM) -> None:
    pieces = await collect(llm, STORY, max_tokens=5)
    assert 1 <= len(pieces) <= 5, pieces
    assert llm.recent_replies[-1].completion_tokens == 5


async def test_closing_early_stops_generation(llm: LocalLLM) -> None:
    stream = llm.stream(STORY, max_tokens=200)
    for _ in range(3):
        await anext(stream)
    await stream.aclose()
    await collect(llm, QUESTION, max_tokens=1)  # answered once the closed one let go
    closed = llm.recent_replies[-2]
    assert closed.stopped
    assert closed.completion_tokens < 30  # nowhere near the 200 tokens it was allowed


async def test_cancelling_the_consumer_stops_generation(llm: LocalLLM) -> None:
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
    await collect(llm, QUESTION, max_tokens=1)
    cancelled = llm.recent_replies[-2]
    assert cancelled.stopped and cancelled.completion_tokens < 30


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


async def test_a_conversation_outgrowing_the_context_lets_go_of_old_turns_in_blocks() -> None:
    said = [
        {"role": ("user", "assistant")[n % 2], "content": f"Line {n}: the sky was blue that day."}
        for n in range(61)
    ]
    system = {"role": "system", "content": "You are a helpful assistant."}
    sizes = range(21, 61, 4)  # a user's line last, four lines more each time
    with LocalLLM(n_ctx=256, temperature=0.0) as small:
        for lines in sizes:
            assert await collect(small, [system, *said[:lines]], max_tokens=1)
        replies = small.recent_replies
    dropped = [reply.dropped_messages for reply in replies]
    assert dropped[0] < dropped[-1]
    # 36 more lines, but the prompt's start (all llama.cpp must read again) moved only a few times.
    moves = sum(before != after for before, after in zip(dropped, dropped[1:], strict=False))
    assert moves <= (sizes[-1] - sizes[0]) // 8 + 1
    assert all(count % 8 == 0 for count in dropped)
    for before, after in zip(replies, replies[1:], strict=False):
        if before.dropped_messages == after.dropped_messages:  # the start stayed: the cache held
            assert after.cached_tokens >= before.prompt_tokens - ASSISTANT_HEADER


async def test_a_long_conversation_keeps_its_latest_turns() -> None:
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
    with LocalLLM(n_ctx=256, temperature=0.0) as small:
        assert "".join(await collect(small, messages, max_tokens=16)).strip()


async def test_a_crashed_llm_fails_its_reply_and_restarts_for_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with LocalLLM(temperature=0.0) as llm, caplog.at_level(logging.WARNING, "voxserve.chat"):
        llm.load()
        crashed = llm.process_id
        pieces = 0
        with pytest.raises(LLMError) as error:
            async for _ in llm.stream(STORY, max_tokens=200):
                pieces += 1
                if pieces == 3:  # mid-reply
                    os.kill(crashed, signal.SIGKILL)
        assert error.value.code == "llm_error" and error.value.retryable
        assert "died (signal 9, SIGKILL)" in error.value.message
        assert [r.levelno for r in caplog.records if "died" in r.getMessage()] == [logging.WARNING]

        assert_english("".join(await collect(llm, QUESTION)))
        assert llm.process_id not in (None, crashed)


def test_closing_ends_the_child() -> None:
    llm = LocalLLM()
    llm.load()
    child = llm.process_id
    llm.close()
    assert ended(child)
    assert not llm.loaded and llm.process_id is None


def test_the_child_ends_when_its_server_is_gone() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            from voxserve.chat.local_llm import LocalLLM
            llm = LocalLLM()
            llm.load()
            print(llm.process_id, flush=True)
            input()  # until killed
        """)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    with server:
        child = int(server.stdout.readline())
        server.kill()  # no shutdown, no close(): only the end of the pipe tells the child
    deadline = time.monotonic() + 30
    while not ended(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ended(child)


async def test_bad_messages_are_refused(llm: LocalLLM) -> None:
    with pytest.raises(InvalidRequestError, match="role"):
        await collect(llm, [{"role": "tool", "content": "hi"}])
    with pytest.raises(InvalidRequestError, match="at least one"):
        await collect(llm, [])
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        await collect(llm, QUESTION, max_tokens=0)


def test_replies_are_written_on_every_core_up_to_four_unless_told() -> None:
    assert LocalLLM().n_threads == min(os.cpu_count() or 1, 4)
    assert LocalLLM(n_threads=1).n_threads == 1


async def test_a_missing_extra_says_which_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child finds this llama_cpp first, as it would find none in an install without it.
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text("raise ImportError('no llama.cpp')\n")
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    with LocalLLM() as llm, pytest.raises(EngineUnavailableError) as error:
        await collect(llm, QUESTION)
    assert "pip install 'voxserve[chat]'" in error.value.message
    assert error.value.code == "llm_not_installed"
    assert error.value.status_code == 503


def test_a_missing_model_package_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(EngineUnavailableError, match=r"voxserve\[chat\]") as error:
        default_model_path()
    assert error.value.code == "llm_not_installed"


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing.gguf")
    with LocalLLM(missing) as llm:
        with pytest.raises(EngineUnavailableError, match="nothing.gguf") as error:
            llm.load()
    assert error.value.code == "llm_model_missing"
