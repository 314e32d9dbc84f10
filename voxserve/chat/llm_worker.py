"""The embedded LLM's own process: llama.cpp runs here, so that a crash in its native code ends
this process and not the server. ``voxserve.chat.local_llm`` starts it
(``python -m voxserve.chat.llm_worker CONFIG``) and restarts it after a crash.

The protocol is JSON lines. Requests come on stdin:

    {"op": "load", "id": 1}
    {"op": "generate", "id": 2, "messages": [...], "max_tokens": 200}
    {"op": "stop", "id": 2}

and each request's answers go out on stdout, ending with exactly one ``done`` or ``error``:

    {"id": 2, "text": "Hello"}     a piece of the reply, as soon as it is generated
    {"id": 2, "done": {...}}       the reply's counts (`_Model.counts`); null for a load
    {"id": 2, "error": {"kind": "unavailable" or "llm", "code", "message", "retryable"}}

One llama.cpp context serves one reply at a time, and its prompt cache lives on from one reply
to the next, so requests are served one after another, in order, by the main thread. A second
thread reads stdin meanwhile: a stop reaches the reply being generated between two tokens. At
the end of stdin (the server closed it, or is gone) the process exits at once: it never outlives
the server.

Only the standard library is imported before llama.cpp: this module starts on every restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

MISSING_EXTRA = (
    "the embedded LLM needs the chat extra: `make serve` builds it portably (by hand: "
    "pip install 'voxserve[chat]' with CMAKE_ARGS set to the Makefile's LLAMA_CMAKE_ARGS)"
)
_MESSAGE_OVERHEAD = 8  # tokens a chat template adds around each message (ChatML: ~5)
_LLM_NICENESS = 10  # see _yield_to_speech

Send = Callable[[dict], None]


class _Failure(Exception):
    """A request that failed, as the server should report it (see local_llm._failure)."""

    def __init__(self, message: str, *, code: str, kind: str = "llm", retryable: bool = False):
        super().__init__(message)
        self.payload = {"kind": kind, "code": code, "message": message, "retryable": retryable}


class _Model:
    """The ``Llama`` object, loaded on the first request, and the replies it writes."""

    def __init__(self, config: dict) -> None:
        self.model_path: str = config["model_path"]
        self.n_ctx: int = config["n_ctx"]
        self.n_threads: int = config["n_threads"]
        self.temperature: float = config["temperature"]
        self.drop_block: int = config["drop_block"]
        self.llama: Any = None
        self.counts: dict[str, int] = {}

    def serve(self, request: dict, stop: threading.Event, send: Send) -> None:
        request_id = request["id"]
        try:
            self._load()
            counts = None
            if request["op"] == "generate" and not stop.is_set():
                counts = self._generate(request, stop, send)
        except _Failure as failure:
            send({"id": request_id, "error": failure.payload})
        except Exception as error:  # llama-cpp-python's own, or a chat template's (jinja2)
            message = f"the embedded LLM failed: {type(error).__name__}: {error}"
            failure = _Failure(message, code="llm_error")
            send({"id": request_id, "error": failure.payload})
        else:
            send({"id": request_id, "done": counts})

    def _generate(self, request: dict, stop: threading.Event, send: Send) -> dict:
        max_tokens = request["max_tokens"]
        self.counts = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0}
        fitted, dropped = self._fit_context(request["messages"], max_tokens)
        stopped = False
        try:
            chunks = self.llama.create_chat_completion(
                messages=fitted,
                stream=True,
                max_tokens=max_tokens,
                temperature=self.temperature,
            )
            try:
                for chunk in chunks:
                    if stop.is_set():
                        stopped = True
                        break
                    text = _delta_text(chunk)
                    if text:
                        send({"id": request["id"], "text": text})
            finally:
                chunks.close()  # releases llama-cpp-python's generator at once
        except ValueError as error:  # llama-cpp-python: the prompt does not fit, and the like
            message = f"the embedded LLM could not answer: {error}"
            raise _Failure(message, code="llm_error") from error
        except RuntimeError as error:  # llama.cpp failed to decode
            message = f"the embedded LLM failed mid-reply: {error}"
            raise _Failure(message, code="llm_error", retryable=True) from error
        return {**self.counts, "dropped_messages": dropped, "stopped": stopped}

    def _fit_context(self, messages: list[dict], max_tokens: int) -> tuple[list[dict], int]:
        """``messages`` without the oldest turns that leave no room for the reply, and how many
        were left out.

        Turns are let go ``drop_block`` at a time, counted from the oldest, so that the prompt's
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
            block = droppable[dropped : dropped + self.drop_block]
            total -= sum(sizes[index] for index in block)
            dropped += len(block)
        gone = set(droppable[:dropped])
        fitted = [message for index, message in enumerate(messages) if index not in gone]
        # Dropping a turn can leave two messages of one role side by side.
        return merge_consecutive(fitted), dropped

    def _count_tokens(self, text: str) -> int:
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _counted_generate(self, generate: Callable, tokens: Sequence[int], *args, **kwargs):
        """llama-cpp-python's ``generate``, counting what a reply costs: its prompt's tokens,
        those the prompt cache already holds (llama.cpp reads only the others again), and the
        tokens written. The server logs them; the tests see the cache at work through them."""
        held = self.llama._input_ids  # what the context holds, from the replies before
        cached = 0
        for old, new in zip(held, tokens, strict=False):  # as llama-cpp-python compares them
            if old != new:
                break
            cached += 1
        cached = min(cached, len(tokens) - 1)  # it reads the last again, for its logits
        self.counts = {"prompt_tokens": len(tokens), "cached_tokens": cached}
        self.counts["completion_tokens"] = 0
        for token in generate(tokens, *args, **kwargs):
            self.counts["completion_tokens"] += 1
            yield token

    def _load(self) -> None:
        if self.llama is not None:
            return
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise _Failure(MISSING_EXTRA, kind="unavailable", code="llm_not_installed") from error
        path = self.model_path
        if not os.path.isfile(path):
            message = f"the embedded LLM's model file {path} does not exist"
            raise _Failure(message, kind="unavailable", code="llm_model_missing")
        try:
            llama = Llama(
                model_path=path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,  # llama.cpp's load and timing reports on stderr
            )
        except (ValueError, RuntimeError) as error:
            message = f"could not load the embedded LLM from {path}: {error}"
            raise _Failure(message, kind="unavailable", code="llm_model_missing") from error
        generate = llama.generate
        llama.generate = lambda *args, **kwargs: self._counted_generate(generate, *args, **kwargs)
        self.llama = llama


def merge_consecutive(messages: list[dict]) -> list[dict]:
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


def _yield_to_speech() -> None:
    """Lower this process's priority, so that on a busy CPU the voice goes first.

    A reply's text runs ahead of its speech: a token a little later is never heard, a voice that
    waits is. On two cores, synthesizing a reply's first sentence while the LLM writes the next
    took ~300 ms at equal priority, ~190 ms with the LLM niced. Called before any other thread
    starts: on Linux a thread has its own nice value, and the threads it starts (the stdin
    reader, llama.cpp's) inherit it.
    """
    with contextlib.suppress(AttributeError, OSError):  # no setpriority on Windows
        os.setpriority(os.PRIO_PROCESS, 0, _LLM_NICENESS)


def _read_requests(
    lines: BinaryIO, jobs: queue.SimpleQueue, stops: dict[int, threading.Event]
) -> None:
    for line in lines:
        request = json.loads(line)
        if request["op"] == "stop":
            stop = stops.get(request["id"])
            if stop is not None:  # else the request is over already
                stop.set()
        else:
            stops[request["id"]] = threading.Event()
            jobs.put(request)
    # The server closed our stdin, or is gone: what is half-written is no use to anyone.
    os._exit(0)


def _protocol_output() -> Callable[[dict], None]:
    """A sender on our stdout, which from now on only it writes: fd 1 is pointed at stderr, so
    that whatever llama.cpp or a library prints cannot break a line of the protocol."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def send(message: dict) -> None:
        out.write(json.dumps(message).encode() + b"\n")
        out.flush()

    return send


def main(config: dict) -> None:
    _yield_to_speech()
    # Ctrl+C in the server's terminal reaches us too; the server shuts us down as it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    send = _protocol_output()
    model = _Model(config)
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    stops: dict[int, threading.Event] = {}
    reader = threading.Thread(
        target=_read_requests, args=(sys.stdin.buffer, jobs, stops), daemon=True
    )
    reader.start()
    while True:
        request = jobs.get()
        model.serve(request, stops[request["id"]], send)
        del stops[request["id"]]


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
