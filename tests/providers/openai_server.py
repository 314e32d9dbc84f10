"""OpenAI's speech API on loopback, as the API reference and the ``openai`` SDK describe it.

``POST /v1/audio/speech`` with ``Authorization: Bearer <key>`` and a JSON body (``model``,
``input`` of up to 4096 characters, ``voice``, ``instructions``, ``response_format``, ``speed``
0.25 to 4, ``stream_format``). Audio goes out as it is made: raw bytes in a chunked response, or
with ``stream_format: "sse"`` (gpt-4o-mini-tts only) a ``text/event-stream`` of ``data:`` lines,
``{"type": "speech.audio.delta", "audio": base64}`` then ``{"type": "speech.audio.done",
"usage": {"input_tokens", "output_tokens", "total_tokens"}}``. Errors are
``{"error": {"message", "type", "param", "code"}}``: 401 for a wrong key (echoing the key: the
real service masks it; echoing it whole shows that we never repeat it), 400 naming the ``param``,
404 for an unknown model, 429 with ``retry-after``, 500.

Billing as an account is billed: characters received for tts-1 and tts-1-hd; for gpt-4o-mini-tts
the tokens its ``usage`` reports (text tokens of input and instructions, audio tokens of the
speech at 1250 a minute). Its speech is real: Piper's, resampled to 24 kHz ``pcm``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from tests.providers.loopback import one_per_process, serve
from voxserve.audio.dsp import StreamResampler, float_to_pcm16
from voxserve.engines.base import BlockingEngine, SynthesisOptions

KEY = "sk-proj-loopback0123456789abcdefKEY"
SPEECH_PATH = "/v1/audio/speech"
RATE = 24000
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
TOKEN_MODEL = "gpt-4o-mini-tts"
VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
    "verse", "marin", "cedar",
)  # fmt: skip
NEW_VOICES = ("ballad", "verse", "marin", "cedar")
"""Not spoken by tts-1 and tts-1-hd."""
AUDIO_TOKENS_PER_SECOND = 1250 / 60
CHUNK_BYTES = 4801
"""Bytes a piece (0.1 s of audio): odd, so that pieces cut samples in two, as the network may."""
TOKEN = re.compile(r"\w+|[^\w\s]")
"""Text tokens as a BPE tokenizer counts English: a word or a punctuation mark each."""


@dataclass(frozen=True)
class Bill:
    model: str
    characters: int
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class Call:
    """One request as the service saw it."""

    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    pieces: int = 0
    """Audio pieces sent."""
    closed: threading.Event = field(default_factory=threading.Event)
    closed_at: float | None = None
    """``time.monotonic()`` when the client went away mid-answer."""


class OpenAIServer:
    """The service in a thread of its own. ``failures``: statuses to answer first, one a request
    (429 with ``retry_after`` in ``retry-after``); ``pace``: seconds between audio pieces."""

    def __init__(self, speak: Callable[[str, float], np.ndarray]):
        self.speak = speak
        self.calls: list[Call] = []
        self.bills: list[Bill] = []
        self.failures: list[int] = []
        self.retry_after: str | None = None
        self.pace = 0.0
        self.cut_after: int | None = None
        """Drop the connection after this many audio pieces (a network failure mid-answer)."""
        self.voices_listed: list[Any] | None = None
        """What ``GET /v1/audio/voices`` answers (``{"voices": ...}``); None: 404, as OpenAI."""
        self._cache: dict[tuple[str, float], bytes] = {}
        self.url = ""

    def reset(self) -> None:
        self.calls.clear()
        self.bills.clear()
        self.failures.clear()
        self.retry_after, self.pace, self.cut_after, self.voices_listed = None, 0.0, None, None

    def start(self) -> OpenAIServer:
        def routes(app: web.Application) -> None:
            app.router.add_post(SPEECH_PATH, self._speech)
            app.router.add_get("/v1/audio/voices", self._voices)

        self.url = serve(routes, "OpenAI") + "/v1"
        return self

    async def _voices(self, request: web.Request) -> web.Response:
        if self.voices_listed is None:
            return _error(404, "Invalid URL (GET /v1/audio/voices)", None, None)
        return web.json_response({"voices": self.voices_listed})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call = Call(dict(request.headers), body)
        self.calls.append(call)
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return _error(401, "You didn't provide an API key.", None, None)
        given = authorization.removeprefix("Bearer ")
        if given != KEY:
            return _error(401, f"Incorrect API key provided: {given}. You can find your API key "
                          "at https://platform.openai.com/account/api-keys.", None,
                          "invalid_api_key")  # fmt: skip
        if self.failures:
            return self._failure(self.failures.pop(0))
        if (refused := _refusal(body)) is not None:
            return refused
        model, text = body["model"], body["input"]
        speed = float(body.get("speed", 1.0))
        pcm = await asyncio.to_thread(self.spoken, text, speed)
        if model == TOKEN_MODEL:
            said = text + (body.get("instructions") or "")
            usage = {
                "input_tokens": len(TOKEN.findall(said)),
                "output_tokens": round(len(pcm) / 2 / RATE * AUDIO_TOKENS_PER_SECOND),
            }
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]  # fmt: skip
        else:
            usage = None
        self.bills.append(Bill(model, len(text), *(
            (usage["input_tokens"], usage["output_tokens"]) if usage else ()
        )))  # fmt: skip
        sse = body.get("stream_format") == "sse"
        answer = web.StreamResponse(
            headers={"Content-Type": "text/event-stream" if sse else "application/octet-stream"}
        )
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        try:
            for start in range(0, len(pcm), CHUNK_BYTES):
                piece = pcm[start : start + CHUNK_BYTES]
                if sse:
                    audio = base64.b64encode(piece).decode()
                    delta = {"type": "speech.audio.delta", "audio": audio}
                    await answer.write(f"data: {json.dumps(delta)}\n\n".encode())
                else:
                    await answer.write(piece)
                call.pieces += 1
                if call.pieces == self.cut_after:
                    assert request.transport is not None
                    request.transport.close()
                    return answer
                await asyncio.sleep(self.pace)
            if sse:
                done = {"type": "speech.audio.done", "usage": usage}
                await answer.write(f"data: {json.dumps(done)}\n\n".encode())
            await answer.write_eof()
        except ConnectionError:  # aiohttp's ClientConnectionResetError: the client went away
            call.closed_at = time.monotonic()
            call.closed.set()
        return answer

    def _failure(self, status: int) -> web.Response:
        if status == 429:
            headers = {"retry-after": self.retry_after} if self.retry_after else {}
            return _error(429, "Rate limit reached for gpt-4o-mini-tts on requests per min "
                          "(RPM): Limit 3, Used 3, Requested 1.", None, "rate_limit_exceeded",
                          kind="requests", headers=headers)  # fmt: skip
        return _error(status, "The server had an error while processing your request. Sorry "
                      "about that!", None, None, kind="server_error")  # fmt: skip

    def spoken(self, text: str, speed: float) -> bytes:
        key = (text, speed)
        if key not in self._cache:
            self._cache[key] = float_to_pcm16(self.speak(text, speed))
        return self._cache[key]


def _refusal(body: dict[str, Any]) -> web.Response | None:
    """What the service refuses in a request, as it says so."""
    model, text, voice = body.get("model"), body.get("input"), body.get("voice")
    if model not in MODELS:
        return _error(404, f"The model `{model}` does not exist or you do not have access to it.",
                      None, "model_not_found")  # fmt: skip
    if not isinstance(text, str) or not text:
        return _error(400, "Missing required parameter: 'input'.", "input",
                      "missing_required_parameter")  # fmt: skip
    if len(text) > 4096:
        return _error(400, f"Invalid 'input': string too long. Expected a string with maximum "
                      f"length 4096, but got a string with length {len(text)} instead.",
                      "input", "string_above_max_length")  # fmt: skip
    tts1 = model != TOKEN_MODEL
    if voice not in VOICES or (tts1 and voice in NEW_VOICES):
        return _error(400, f"Invalid value for 'voice' = {voice}.", "voice", "invalid_value")
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return _error(400, f"Invalid 'speed': {speed}. Expected a value between 0.25 and 4.0.",
                      "speed", "invalid_value")  # fmt: skip
    if tts1 and body.get("instructions"):
        return _error(400, "Instructions are not supported for this model.", "instructions", None)
    if tts1 and body.get("stream_format") == "sse":
        return _error(400, "Unsupported stream_format 'sse' for this model.", "stream_format", None)
    if body.get("response_format") != "pcm":
        # Only pcm is spoken here: anything else is a test's mistake, made loud.
        return _error(400, "the stand-in speaks only pcm", "response_format", None)
    return None


def _error(
    status: int, message: str, param: str | None, code: str | None, *,
    kind: str = "invalid_request_error", headers: dict[str, str] | None = None,
) -> web.Response:  # fmt: skip
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


def piper_speech(engine: BlockingEngine, voice: str = "joe") -> Callable[[str, float], np.ndarray]:
    """Piper's speech at 24 kHz, at the requested speed."""

    def speak(text: str, speed: float) -> np.ndarray:
        chunks = list(engine.synthesize(text, SynthesisOptions(voice, speed=speed)))
        resampler = StreamResampler(chunks[0].sample_rate, RATE)
        return resampler.process(np.concatenate([chunk.samples for chunk in chunks]), last=True)

    return speak


@pytest.fixture(scope="session")
def openai_service(piper_synthesizer) -> Iterator[OpenAIServer]:
    """The stand-in, one a process (the conformance suite and the engine's tests share it)."""
    yield one_per_process(
        "openai", piper_synthesizer, lambda piper: OpenAIServer(piper_speech(piper)).start()
    )
