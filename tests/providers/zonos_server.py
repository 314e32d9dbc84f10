"""Zyphra's text-to-speech API on loopback, as the ``zyphra`` client (0.1.6) speaks to it.

``POST /v1/audio/text-to-speech`` with ``X-API-Key`` and the JSON of the client's ``TTSParams``
(``text``; ``speaker_audio`` base64; ``speaking_rate`` 5-35; ``fmax`` 0-24000; ``vqscore``
0.6-0.8; ``pitch_std`` 0-500; ``emotion`` weights 0-1; ``language_iso_code`` en-us fr-fr de ja ko
cmn; ``mime_type``; ``model`` zonos-v0.1-transformer or -hybrid; ``speaker_noised``;
``default_voice_name``). The answer is the whole file in the ``mime_type`` asked for, sent once
it is made. Zyphra publishes no error schema (the client passes a refusal's body on as text): its
refusals here are FastAPI's shapes, ``{"detail": "..."}`` (401 for a missing or wrong key, 429
with ``retry-after``) and the 422 of a body that fails its model (``{"detail": [{"loc": ["body",
field], "msg", "type"}]}``); a 500 is ``{"detail": "Internal Server Error"}``.

Billing as Zyphra bills: minutes of speech made. Its speech is real: Piper's, at the
``speaking_rate``'s speed (15 is Piper's 1.0), resampled to 44.1 kHz 16-bit WAV.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from pydantic import ValidationError
from zyphra.models.audio import TTSParams

from tests.providers.loopback import Call, one_per_process, paced, serve, wav_file
from tests.providers.openai_server import piper_speech
from voxserve.audio.dsp import StreamResampler, float_to_pcm16

KEY = "zsk-loopback0123456789abcdef0123456789abcdefKEY"
SPEECH_PATH = "/v1/audio/text-to-speech"
RATE = 44100
LANGUAGES = ("en-us", "fr-fr", "de", "ja", "ko", "cmn")
DEFAULT_VOICES = (
    "american_female", "american_male", "anime_girl", "british_female", "british_male",
    "energetic_boy", "energetic_girl", "japanese_female", "japanese_male",
)  # fmt: skip
AUDIO_MAGIC = (b"RIFF", b"ID3", b"OggS", b"fLaC", b"\x1aE\xdf\xa3")
"""How the files Zyphra decodes begin: WAV, MP3, Ogg, FLAC, WebM."""
PIECE_BYTES = 8821
"""Bytes a piece (0.1 s): odd, as the network may cut."""


@dataclass(frozen=True)
class Bill:
    model: str
    seconds: float
    """Of speech made: what Zyphra bills (by the minute)."""


class ZonosServer:
    """``failures``: statuses to answer first, one a request (429 with ``retry_after``);
    ``pace``: seconds between pieces of an answer; ``cut_after``: pieces before it drops."""

    def __init__(self, speak: Callable[[str, float], np.ndarray]):
        self.speak = speak
        self.url = ""
        self._made: dict[tuple[str, float], bytes] = {}
        self.reset()

    def reset(self) -> None:
        self.calls: list[Call] = []
        self.bills: list[Bill] = []
        self.failures: list[int] = []
        self.retry_after: str | None = None
        self.pace = 0.0
        self.cut_after: int | None = None

    def start(self) -> ZonosServer:
        self.url = serve(lambda app: app.router.add_post(SPEECH_PATH, self._speech), "Zyphra")
        self.url += "/v1"
        return self

    def speech(self, text: str, speaking_rate: float) -> bytes:
        """The WAV it answers for ``text`` (made once: Piper is not what is tested)."""
        if (text, speaking_rate) not in self._made:
            samples = self.speak(text, speaking_rate / 15.0)
            resampled = StreamResampler(24000, RATE).process(samples, last=True)
            self._made[(text, speaking_rate)] = wav_file(float_to_pcm16(resampled), RATE)
        return self._made[(text, speaking_rate)]

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        call = Call(request.method, request.path, dict(request.headers), body)
        self.calls.append(call)
        if request.headers.get("X-API-Key") != KEY:
            return web.json_response({"detail": "Invalid API key"}, status=401)
        if self.failures:
            status = self.failures.pop(0)
            if status == 429:
                headers = {"retry-after": self.retry_after} if self.retry_after else {}
                return web.json_response({"detail": "Rate limit exceeded: 10 per 1 minute"},
                                         status=429, headers=headers)  # fmt: skip
            return web.json_response({"detail": "Internal Server Error"}, status=status)
        if (refused := _refusal(body)) is not None:
            return refused
        params = TTSParams(**body)
        rate = params.speaking_rate or 15.0
        audio = await asyncio.to_thread(self.speech, params.text, rate)
        self.bills.append(Bill(params.model or "", (len(audio) - 44) / 2 / RATE))
        answer = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        answer.content_length = len(audio)
        await answer.prepare(request)
        await paced(request, answer, call, audio, PIECE_BYTES, self.pace, self.cut_after)
        return answer


def _refusal(body: Any) -> web.Response | None:
    """What the service refuses in a body, as a FastAPI service on the client's model says so."""
    try:
        params = TTSParams(**body)
    except (ValidationError, TypeError) as error:
        problems = error.errors() if isinstance(error, ValidationError) else []
        return web.json_response({"detail": [
            {"type": item["type"], "loc": ["body", *item["loc"]], "msg": item["msg"]}
            for item in problems
        ]}, status=422)  # fmt: skip
    if not params.text.strip():
        return _invalid("text", "Text must not be empty")
    if params.language_iso_code is not None and params.language_iso_code not in LANGUAGES:
        return _invalid("language_iso_code", f"Unsupported language: {params.language_iso_code}")
    if params.default_voice_name is not None and params.default_voice_name not in DEFAULT_VOICES:
        return _invalid("default_voice_name", f"Unknown voice: {params.default_voice_name}")
    if params.speaker_audio is not None:
        try:
            clip = base64.b64decode(params.speaker_audio, validate=True)
        except ValueError:
            clip = b""
        if not clip.startswith(AUDIO_MAGIC):
            return _invalid("speaker_audio", "could not decode speaker_audio as audio")
    if params.mime_type != "audio/wav":  # webm, mp3, ogg: not spoken here, a test's mistake
        return _invalid("mime_type", "the stand-in answers audio/wav only")
    return None


def _invalid(field: str, message: str) -> web.Response:
    return web.json_response(
        {"detail": [{"type": "value_error", "loc": ["body", field], "msg": message}]}, status=422
    )


@pytest.fixture(scope="session")
def zonos_service(piper_synthesizer) -> Iterator[ZonosServer]:
    """The stand-in, one a process (the conformance suite and the engine's tests share it)."""
    yield one_per_process(
        "zonos", piper_synthesizer, lambda piper: ZonosServer(piper_speech(piper)).start()
    )
