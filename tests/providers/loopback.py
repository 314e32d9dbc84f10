"""What the AllTalk and Zyphra stand-ins share: an aiohttp app served in a thread of its own, and
the record of each request (what came, when, and when its client went away)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import free_port


@dataclass
class Call:
    """One request as the stand-in saw it."""

    method: str
    path: str
    headers: dict[str, str]
    fields: dict[str, Any]
    """Its query, form or JSON body."""
    at: float = field(default_factory=time.monotonic)
    pieces: int = 0
    """Pieces of the answer's body written."""
    closed: threading.Event = field(default_factory=threading.Event)
    closed_at: float | None = None
    """``time.monotonic()`` when the client went away mid-answer."""

    def gone(self) -> None:
        self.closed_at = time.monotonic()
        self.closed.set()


_started: dict[str, Any] = {}


def one_per_process(name: str, piper_synthesizer: Any, start: Callable[[Any], Any]) -> Any:
    """The stand-in ``start`` makes from the loaded Piper engine, made once a process: the
    conformance suite and an engine's own tests import its session fixture, which pytest then
    runs once for each module that holds it."""
    if name not in _started:
        piper = piper_synthesizer.registry.get("piper")
        piper.load()
        _started[name] = start(piper)
    return _started[name]


def serve(routes: Callable[[web.Application], None], name: str) -> str:
    """Serve the app ``routes`` builds on a free loopback port, in a daemon thread; its URL."""
    ready = threading.Event()
    port = free_port()

    async def run() -> None:
        app = web.Application()
        routes(app)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(run(),), daemon=True).start()
    if not ready.wait(30):
        raise RuntimeError(f"the {name} stand-in did not start")
    return f"http://127.0.0.1:{port}"


async def paced(
    request: web.Request,
    answer: web.StreamResponse,
    call: Call,
    body: bytes,
    piece_bytes: int,
    pace: float,
    cut_after: int | None,
) -> None:
    """Write ``body`` in pieces ``pace`` seconds apart; drop the connection after ``cut_after``
    pieces (a failure mid-answer); note when the client goes away."""
    try:
        for start in range(0, len(body), piece_bytes):
            await answer.write(body[start : start + piece_bytes])
            call.pieces += 1
            if call.pieces == cut_after:
                assert request.transport is not None
                request.transport.close()
                return
            await asyncio.sleep(pace)
        await answer.write_eof()
    except ConnectionError:  # aiohttp's ClientConnectionResetError: the client went away
        call.gone()


def wav_file(pcm: bytes, rate: int) -> bytes:
    """16-bit mono PCM as a WAV file, as Python's ``wave`` writes it (both services use it)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return buffer.getvalue()
