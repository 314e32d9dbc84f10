"""ElevenLabs' text-to-speech API on loopback, as its API reference and the ``elevenlabs`` SDK
(2.78) speak it.

- ``POST /v1/text-to-speech/{voice_id}/stream?output_format=pcm_<rate>``: raw 16-bit PCM as it
  is made (chunked).
- ``POST /v1/text-to-speech/{voice_id}/stream/with-timestamps?output_format=...``: one JSON
  object a line, ``{"audio_base64", "alignment", "normalized_alignment"}``, each alignment
  ``{"characters", "character_start_times_seconds", "character_end_times_seconds"}`` for the
  characters whose sound starts in that line's audio, timed from the start of the stream.
- ``GET /v1/voices``: ``{"voices": [{"voice_id", "name", "category", "labels", ...}]}``.

The body is the SDK's (``text``, ``model_id``, ``language_code``, ``voice_settings``
{stability, similarity_boost, style 0-1, use_speaker_boost, speed 0.7-1.2}, ``seed``,
``previous_text``, ``next_text``...), checked as ElevenLabs' FastAPI service checks it: a field
out of bounds is its 422, ``{"detail": [{"type", "loc": ["body", ...], "msg", "input"}]}``. Its
own refusals are ``{"detail": {"status", "message"}}``: 401 ``invalid_api_key`` for a wrong
``xi-api-key``, 401 ``quota_exceeded`` on demand, 404 ``voice_not_found``, 400
``max_character_limit_exceeded``, 429 ``too_many_concurrent_requests`` with ``retry-after``.

Billing as ElevenLabs bills: the characters of ``text`` (not of its neighbours), told in the
``x-character-count`` header beside a ``request-id``. Its speech is real: Piper's, at the
requested speed, resampled to the requested rate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tests.providers.loopback import Call, one_per_process, paced, serve
from tests.providers.openai_server import RATE as PIPER_RATE
from tests.providers.openai_server import piper_speech
from voxserve.audio.dsp import StreamResampler, float_to_pcm16

KEY = "sk_loopback0123456789abcdef0123456789abcdef0123KEY"
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MODEL_MAX_CHARS = {"eleven_v3": 5000, "eleven_multilingual_v2": 10000,
                   "eleven_flash_v2_5": 40000, "eleven_turbo_v2_5": 40000,
                   "eleven_flash_v2": 30000, "eleven_turbo_v2": 30000}  # fmt: skip
"""Characters a request, by model (ElevenLabs' models overview); another model is not found."""
PREMADE = {"21m00Tcm4TlvDq8ikWAM": "Rachel", "pNInz6obpgDQGcFmaJgB": "Adam",
           "EXAVITQu4vr4xnSDxMaL": "Sarah", "JBFqnCBsd6RMkjVDRZzb": "George"}  # fmt: skip
CLONED = {"cl0nedV01ceXXXXXXXXX": "My Narrator"}
"""A voice of the account's own, listed by ``GET /v1/voices`` and spoken like the rest."""
LINE_SECONDS = 0.1
"""Audio a line of the timestamped stream."""
PIECE_BYTES = 4801
"""Bytes written at a time (0.1 s of 24 kHz audio): odd, cutting samples and lines in two, as
the network may."""


class VoiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stability: float | None = Field(None, ge=0, le=1)
    similarity_boost: float | None = Field(None, ge=0, le=1)
    style: float | None = Field(None, ge=0, le=1)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(None, ge=0.7, le=1.2)


class SpeechBody(BaseModel):
    """The body ElevenLabs takes (the SDK's fields the engine may send)."""

    model_config = ConfigDict(extra="forbid")

    text: str
    model_id: str = "eleven_multilingual_v2"
    language_code: str | None = None
    voice_settings: VoiceSettings | None = None
    seed: int | None = Field(None, ge=0, le=4294967295)
    previous_text: str | None = None
    next_text: str | None = None


@dataclass(frozen=True)
class Bill:
    model: str
    characters: int
    """What ``x-character-count`` told."""


class ElevenLabsServer:
    """``failures``: statuses to answer first, one a request (429 with ``retry_after``);
    ``pace``: seconds between pieces; ``cut_after``: pieces before the connection drops;
    ``relative_times``: each line's alignment timed from its own audio, not the stream's;
    ``bad_line_after``: lines before one that is not JSON; ``quota_spent``: every request
    refused as over the account's quota; ``voices_fail``: ``GET /v1/voices`` answers 500."""

    def __init__(self, speak: Callable[[str, float], np.ndarray]):
        self.speak = speak
        self.url = ""
        self._made: dict[tuple[str, float, int], bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.calls: list[Call] = []
        self.bills: list[Bill] = []
        self.failures: list[int] = []
        self.retry_after: str | None = None
        self.pace = 0.0
        self.cut_after: int | None = None
        self.relative_times = False
        self.bad_line_after: int | None = None
        self.quota_spent = False
        self.voices_fail = False

    def start(self) -> ElevenLabsServer:
        def routes(app: web.Application) -> None:
            app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)
            app.router.add_post("/v1/text-to-speech/{voice_id}/stream/with-timestamps",
                                self._stream)  # fmt: skip
            app.router.add_get("/v1/voices", self._voices)

        self.url = serve(routes, "ElevenLabs")
        return self

    def speech(self, text: str, speed: float, rate: int) -> bytes:
        """The PCM it answers for ``text`` (made once: Piper is not what is tested)."""
        if (text, speed, rate) not in self._made:
            samples = StreamResampler(PIPER_RATE, rate).process(self.speak(text, speed), last=True)
            self._made[(text, speed, rate)] = float_to_pcm16(samples)
        return self._made[(text, speed, rate)]

    async def _voices(self, request: web.Request) -> web.Response:
        self.calls.append(Call(request.method, request.path_qs, dict(request.headers), {}))
        if (refused := self._unauthorized(request)) is not None:
            return refused
        if self.voices_fail:
            return web.json_response({"detail": "Internal Server Error"}, status=500)
        voices = [_listed(voice_id, name, "premade") for voice_id, name in PREMADE.items()]
        voices += [_listed(voice_id, name, "cloned") for voice_id, name in CLONED.items()]
        return web.json_response({"voices": voices, "has_more": False})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call = Call(request.method, request.path_qs, dict(request.headers), body)
        self.calls.append(call)
        if (refused := self._unauthorized(request)) is not None:
            return refused
        if self.failures:
            status = self.failures.pop(0)
            if status == 429:
                headers = {"retry-after": self.retry_after} if self.retry_after else {}
                return _refusal(429, "too_many_concurrent_requests", "Too many concurrent "
                                "requests for your plan.", headers)  # fmt: skip
            return web.json_response({"detail": "Internal Server Error"}, status=status)
        voice_id = request.match_info["voice_id"]
        parsed = _checked(request.query.get("output_format"), body, voice_id)
        if isinstance(parsed, web.Response):
            return parsed
        speech, rate = parsed
        speed = (speech.voice_settings and speech.voice_settings.speed) or 1.0
        pcm = await asyncio.to_thread(self.speech, speech.text, speed, rate)
        self.bills.append(Bill(speech.model_id, len(speech.text)))
        timed = request.path.endswith("/with-timestamps")
        headers = {
            "Content-Type": "application/json" if timed else "audio/pcm",
            "x-character-count": str(len(speech.text)),
            "request-id": uuid.uuid4().hex,
        }
        answer = web.StreamResponse(headers=headers)
        answer.enable_chunked_encoding()
        await answer.prepare(request)
        sent = self._lines(speech.text, pcm, rate) if timed else pcm
        await paced(request, answer, call, sent, PIECE_BYTES, self.pace, self.cut_after)
        return answer

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("xi-api-key") != KEY:
            return _refusal(401, "invalid_api_key", "Invalid API key")
        if self.quota_spent:
            return _refusal(401, "quota_exceeded", "This request exceeds your quota of 10000. "
                            "You have 3 credits remaining, while 23 credits are required for "
                            "this request.")  # fmt: skip
        return None

    def _lines(self, text: str, pcm: bytes, rate: int) -> bytes:
        """The NDJSON of the timestamped stream: each line a piece of the audio and the
        characters that start in it (spread over the speech in proportion)."""
        seconds = len(pcm) / 2 / rate
        step = seconds / max(len(text), 1)
        starts = [place * step for place in range(len(text))]
        piece = 2 * round(LINE_SECONDS * rate)
        lines: list[bytes] = []
        for number, first in enumerate(range(0, len(pcm), piece)):
            begin, end = first / 2 / rate, (first + piece) / 2 / rate
            places = [place for place, start in enumerate(starts) if begin <= start < end]
            shift = begin if self.relative_times else 0.0
            alignment = {
                "characters": [text[place] for place in places],
                "character_start_times_seconds": [round(starts[p] - shift, 3) for p in places],
                "character_end_times_seconds": [round(starts[p] + step - shift, 3) for p in places],
            }
            line = {"audio_base64": base64.b64encode(pcm[first : first + piece]).decode(),
                    "alignment": alignment, "normalized_alignment": alignment}  # fmt: skip
            if number == self.bad_line_after:
                lines.append(b'{"audio_base64": "AAAA", "alignment": {"characters": [\n')
            lines.append(json.dumps(line).encode() + b"\n")
        return b"".join(lines)


def _checked(
    output_format: str | None, body: Any, voice_id: str
) -> tuple[SpeechBody, int] | web.Response:
    """The request as ElevenLabs reads it, or its refusal."""
    problems: list[dict[str, Any]] = []
    rates = {f"pcm_{rate}": rate for rate in PCM_RATES}
    if output_format not in rates:  # mp3, opus, ulaw: not spoken here, a test's mistake
        problem = {"type": "enum", "loc": ["query", "output_format"], "input": output_format}
        problems.append({**problem, "msg": "Input should be a pcm_ format"})
    try:
        speech = SpeechBody.model_validate(body)
    except ValidationError as error:
        problems += [
            {"type": item["type"], "loc": ["body", *item["loc"]], "msg": item["msg"],
             "input": item.get("input")}
            for item in error.errors()
        ]  # fmt: skip
    if problems:
        return web.json_response({"detail": problems}, status=422)
    if voice_id not in PREMADE and voice_id not in CLONED:
        return _refusal(
            404, "voice_not_found", f"A voice with voice_id '{voice_id}' was not found."
        )
    limit = MODEL_MAX_CHARS.get(speech.model_id)
    if limit is None:
        return _refusal(
            400, "model_not_found", f"A model with model ID {speech.model_id} does not exist."
        )
    if len(speech.text) > limit:
        return _refusal(
            400,
            "max_character_limit_exceeded",
            f"Text is {len(speech.text)} characters, over the limit of {limit}.",
        )
    return speech, rates[output_format]


def _refusal(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    detail = {"type": "invalid_request", "code": code, "status": code, "message": message,
              "request_id": uuid.uuid4().hex}  # fmt: skip
    return web.json_response({"detail": detail}, status=status, headers=headers)


def _listed(voice_id: str, name: str, category: str) -> dict[str, Any]:
    return {"voice_id": voice_id, "name": name, "category": category,
            "labels": {"accent": "american"}, "description": None, "preview_url": None,
            "settings": None, "verified_languages": []}  # fmt: skip


@pytest.fixture(scope="session")
def elevenlabs_service(piper_synthesizer) -> Iterator[ElevenLabsServer]:
    """The stand-in, one a process (the conformance suite and the engine's tests share it)."""
    yield one_per_process(
        "elevenlabs", piper_synthesizer, lambda piper: ElevenLabsServer(piper_speech(piper)).start()
    )
