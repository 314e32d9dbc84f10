"""A configurable engine for synthesizer and transport contract tests: no model, exact output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from voxserve.audio.frames import AudioChunk
from voxserve.config import Settings
from voxserve.engines.base import BlockingEngine, Capabilities, SynthesisOptions, Voice, Voicing
from voxserve.engines.registry import EngineRegistry
from voxserve.request import SpeechRequest
from voxserve.synthesis.synthesizer import SpokenSegment, Synthesizer


class FakeEngine(BlockingEngine):
    """Speaks a 220 Hz tone, ``seconds_per_char`` long per character, in ``chunks`` pieces.

    ``delay`` seconds pass before each piece; text containing ``fail_on`` raises; text containing
    ``silent_on`` yields nothing. Every call is recorded in ``calls``. Capabilities are read
    once, on first use: set the constructor's arguments, not the attributes, to change them.
    """

    name = "fake"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        seconds_per_char: float = 0.01,
        chunks: int = 1,
        delay: float = 0.0,
        fail_on: str | None = None,
        silent_on: str | None = None,
        max_input_chars: int = 200,
        cloning: bool = False,
        sampling: bool = False,
        instructions: bool = False,
        **settings,
    ):
        super().__init__(settings)
        self.sample_rate = sample_rate
        self.seconds_per_char = seconds_per_char
        self.chunks = chunks
        self.delay = delay
        self.fail_on = fail_on
        self.silent_on = silent_on
        self.max_input_chars = max_input_chars
        self.cloning = cloning
        self.sampling = sampling
        self.instructions = instructions
        self.options: list[SynthesisOptions] = []
        self.calls: list[str] = []
        self.finished: list[str] = []
        self.loads = 0
        self.last_chunk_at = 0.0
        self._lock = threading.Lock()

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=self.sample_rate,
            languages=("en",),
            max_input_chars=self.max_input_chars,
            speed_range=(0.5, 2.0),
            streaming=self.chunks > 1,
            cloning=self.cloning,
            sampling=self.sampling,
            instructions=self.instructions,
        )

    def voices(self) -> list[Voice]:
        return [Voice("tone", self.name, "tone", "en"), Voice("low", self.name, "low tone", "en")]

    def load(self) -> None:
        time.sleep(0.05)
        self.loads += 1

    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        with self._lock:
            self.calls.append(text)
            self.options.append(options)
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("fake engine failure")
        if self.silent_on and self.silent_on in text:
            return
        total = int(len(text) * self.seconds_per_char / options.speed * self.sample_rate)
        frequency = 110.0 if options.voice == "low" else 220.0
        tone = 0.5 * np.sin(2 * np.pi * frequency * np.arange(total) / self.sample_rate)
        for piece in np.array_split(tone.astype(np.float32), self.chunks):
            time.sleep(self.delay)
            self.last_chunk_at = time.monotonic()
            yield AudioChunk(piece, self.sample_rate)
        with self._lock:
            self.finished.append(text)


def fake_voicing(language: str = "en", engine: FakeEngine | None = None) -> Voicing:
    """The fake's ``tone`` voice, speaking ``language``: for planning text without a synthesizer."""
    voice = Voice("tone", "fake", "tone", language)
    return Voicing(engine or FakeEngine(), voice, 16000, SynthesisOptions(voice="tone"))


class FaultySynthesizer(Synthesizer):
    """The real synthesizer, with a bug: once a segment whose text holds ``fault_on`` has been
    spoken, it raises RuntimeError, mid-stream. (It cannot be the engine's fault: the
    synthesizer turns whatever an engine raises into an EngineError, which transports expect.)"""

    fault_on = "boom"

    async def render(self, *args, **kwargs) -> AsyncIterator:
        async with contextlib.aclosing(super().render(*args, **kwargs)) as items:
            async for item in items:
                yield item
                if isinstance(item, SpokenSegment) and self.fault_on in item.segment.text:
                    raise RuntimeError("a bug after the engine")


def make_synthesizer(
    engine: FakeEngine, synthesizer_class: type[Synthesizer] = Synthesizer, **settings
) -> Synthesizer:
    """A synthesizer whose default engine and voice are the fake's.

    Without a ``data_dir`` it gets a temporary one of its own, removed with it: a test's voices
    and chats never reach the user's data directory, nor another test's.
    """
    own_dir = None if "data_dir" in settings else tempfile.mkdtemp(prefix="voxserve-test-")
    defaults = {"default_engine": "fake", "default_voice": "tone", "data_dir": own_dir}
    settings = Settings(**{**defaults, **settings})
    registry = EngineRegistry(settings)
    registry.register(engine)
    synthesizer = synthesizer_class(settings, registry)
    if own_dir is not None:
        weakref.finalize(synthesizer, shutil.rmtree, own_dir, ignore_errors=True)
    return synthesizer


async def collect(synthesizer: Synthesizer, request: SpeechRequest, progress=None) -> np.ndarray:
    """All of a request's audio as one array."""
    chunks = [chunk async for chunk in synthesizer.stream(request, progress)]
    return np.concatenate([chunk.samples for chunk in chunks])


def fake_chat_llm(reply: Callable[[list[dict]], str], delay: float = 0.01):
    """An OpenAI-compatible chat server (the real streaming protocol) whose replies ``reply``
    makes from the request's messages; ``app.state.requests`` records what it was asked, and
    ``app.state.streamed`` whether each reply was streamed to its end (False: the client left)."""
    app = FastAPI()
    app.state.requests = []
    app.state.streamed = []

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        app.state.requests.append(body)
        words = reply(body["messages"]).split(" ")

        async def events():
            finished = False
            try:
                yield _sse_chunk({"role": "assistant", "content": ""})
                for number, word in enumerate(words):
                    await asyncio.sleep(delay)
                    yield _sse_chunk({"content": (" " if number else "") + word})
                yield "data: [DONE]\n\n"
                finished = True
            finally:
                app.state.streamed.append(finished)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def _sse_chunk(delta: dict) -> str:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


def without_module(monkeypatch, name: str) -> None:
    """As if the package ``name`` were not installed (an extra left out), as far as
    ``importlib.util.find_spec`` tells: how voxserve asks before promising what needs it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda found, *rest: None if found == name else find_spec(found),
    )
