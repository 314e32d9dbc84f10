"""AllTalk TTS v2 on loopback, as its ``tts_server.py`` (branch ``alltalkbeta``) answers.

- ``GET /api/ready``: the text ``Ready`` (``Unloaded`` while its engine loads), no JSON.
- ``GET /api/voices``: ``{"status": "success", "voices": [...]}``; an engine without voices:
  ``{"status": "error", "message": ...}``, still a 200.
- ``GET /api/tts-generate-streaming?text&voice&language&output_file``: a ``StreamingResponse`` of
  ``audio/wav``: the header Python's ``wave`` writes for no frames (sizes 0), then 16-bit PCM at
  24 kHz as XTTS makes it. A missing parameter is FastAPI's 422 (``{"detail": [{"loc": ["query",
  name], ...}]}``); an engine that cannot stream is a 400 ``{"error": "Invalid value: Streaming
  not supported by current TTS engine"}``. A voice it has no file for fails inside the stream (the
  generator runs after the 200 went out): the connection closes with no body.
- ``POST /api/tts-generate-streaming`` (the form its pages document): writes a file, answers
  ``{"output_file_path": ...}``: no audio.
- ``POST /v1/audio/speech``: OpenAI's body, voices alloy echo fable nova onyx shimmer, speed
  0.25-4; the whole file (``FileResponse``). Its refusals go through ``response.status_code(...)``,
  calling an int: every refusal reaches the client as Starlette's 500 ``Internal Server Error``.

Its speech is real: Piper's, resampled to 24 kHz.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from tests.providers.loopback import Call, one_per_process, paced, serve, wav_file
from tests.providers.openai_server import piper_speech
from voxserve.audio.dsp import float_to_pcm16

RATE = 24000
VOICES = ["female_01.wav", "male_01.wav"]
OPENAI_VOICES = ("alloy", "echo", "fable", "nova", "onyx", "shimmer")
STREAM_FIELDS = ("text", "voice", "language", "output_file")
PIECE_BYTES = 4801
"""Bytes a piece (0.1 s): odd, so that pieces cut samples in two, as the network may."""


class AllTalkServer:
    """``failures``: statuses to answer first, one a request; ``pace``: seconds between pieces;
    ``cut_after``: pieces before the connection drops; ``streaming``: whether the loaded engine
    streams; ``ready``: what ``/api/ready`` says."""

    def __init__(self, speak: Callable[[str, float], np.ndarray]):
        self.speak = speak
        self.calls: list[Call] = []
        self.url = ""
        self._made: dict[tuple[str, float], bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.calls = []
        self.failures: list[int] = []
        self.refusal: tuple[int, Any] | None = None
        """An answer (status, JSON body) for the next speech request, as AllTalk gives it."""
        self.pace = 0.0
        self.cut_after: int | None = None
        self.streaming = True
        self.ready = "Ready"
        self.voices: list[str] | None = list(VOICES)

    def start(self) -> AllTalkServer:
        def routes(app: web.Application) -> None:
            app.router.add_get("/api/ready", self._ready)
            app.router.add_get("/api/voices", self._voices)
            app.router.add_get("/api/tts-generate-streaming", self._stream)
            app.router.add_post("/api/tts-generate-streaming", self._to_file)
            app.router.add_post("/v1/audio/speech", self._openai)

        self.url = serve(routes, "AllTalk")
        return self

    def speech(self, text: str, speed: float = 1.0) -> bytes:
        """The PCM it sends for ``text`` (made once: Piper is not what is tested)."""
        if (text, speed) not in self._made:
            self._made[(text, speed)] = float_to_pcm16(self.speak(text, speed))
        return self._made[(text, speed)]

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(text=self.ready, content_type="text/plain")

    async def _voices(self, request: web.Request) -> web.Response:
        if self.voices is None:
            said = "The currently loaded TTS engine 'piper' does not support multiple voices."
            return web.json_response({"status": "error", "message": said})
        return web.json_response({"status": "success", "voices": self.voices})

    def _record(self, request: web.Request, fields: dict[str, Any]) -> Call:
        call = Call(request.method, request.path, dict(request.headers), fields)
        self.calls.append(call)
        return call

    def _planned(self) -> web.Response | None:
        if self.failures:
            status = self.failures.pop(0)
            return web.json_response({"error": "An internal runtime error occurred"}, status=status)
        if self.refusal is not None:
            (status, body), self.refusal = self.refusal, None
            return web.json_response(body, status=status)
        return None

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        call = self._record(request, query)
        missing = [name for name in STREAM_FIELDS if name not in query]
        if missing:
            return web.json_response({"detail": [
                {"type": "missing", "loc": ["query", name], "msg": "Field required", "input": None}
                for name in missing
            ]}, status=422)  # fmt: skip
        if (planned := self._planned()) is not None:
            return planned
        if not self.streaming:
            return web.json_response({"error": "Invalid value: Streaming not supported by "
                                      "current TTS engine"}, status=400)  # fmt: skip
        answer = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        if query["voice"] not in (self.voices or ()):  # XTTS fails in the generator: no body
            assert request.transport is not None
            request.transport.close()
            return answer
        await answer.write(_empty_wav_header())  # XTTS yields the header before any speech
        pcm = await asyncio.to_thread(self.speech, query["text"])
        await paced(request, answer, call, pcm, PIECE_BYTES, self.pace, self.cut_after)
        return answer

    async def _to_file(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self._record(request, form)
        return web.json_response({"output_file_path": str(form.get("output_file"))})

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call = self._record(request, body)
        if (planned := self._planned()) is not None:
            return planned
        speed = body.get("speed", 1.0)
        valid = (
            isinstance(body.get("model"), str) and isinstance(body.get("input"), str)
            and len(body["input"]) <= 4096 and body.get("voice") in OPENAI_VOICES
            and isinstance(speed, (int, float)) and 0.25 <= speed <= 4.0
            and body.get("response_format", "wav") == "wav"  # ffmpeg's other formats: not here
        )  # fmt: skip
        if not valid:  # ``response.status_code(status_code)``: a TypeError, Starlette's 500
            return web.Response(status=500, text="Internal Server Error")
        audio = wav_file(await asyncio.to_thread(self.speech, body["input"], float(speed)), RATE)
        answer = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        answer.content_length = len(audio)
        await answer.prepare(request)
        await paced(request, answer, call, audio, PIECE_BYTES, self.pace, self.cut_after)
        return answer


def _empty_wav_header() -> bytes:
    """What XTTS' streaming sends first: ``wave`` writing a file of no frames."""
    return wav_file(b"", RATE)


@pytest.fixture(scope="session")
def alltalk_service(piper_synthesizer) -> Iterator[AllTalkServer]:
    """The stand-in, one a process (the conformance suite and the engine's tests share it)."""
    yield one_per_process(
        "alltalk", piper_synthesizer, lambda piper: AllTalkServer(piper_speech(piper)).start()
    )
