"""AllTalk TTS v2: speech from an AllTalk server (XTTS and the other engines it hosts), over HTTP.

AllTalk has no client library; its API (``tts_server.py`` on the ``alltalkbeta`` branch, and its
built-in API pages) is spoken with httpx::

    [engines.alltalk]
    base_url = "http://127.0.0.1:7851"   # the default: AllTalk on this machine
    api = "streaming"           # or "openai"
    voice = "female_01.wav"     # offered first (the default voice of the engine)
    language = "auto"           # None (default): the request's, else the voice's; "auto":
                                # AllTalk detects it
    response_format = "wav"     # the openai route's; wav streams, others are decoded whole
    timeout = 120
    voices = ["female_01.wav"]  # offered when AllTalk lists none (or before it is reached)

Two routes:

- ``streaming``: ``GET /api/tts-generate-streaming?text&voice&language&output_file``. AllTalk's
  pages document it as a POST of those form fields, but in its source the POST only writes a file
  and answers ``{"output_file_path"}``; the GET is what streams (and what AllTalk's own pages,
  SillyTavern and its TGWUI extension call). The answer is a WAV written as it is made: a header
  from Python's ``wave`` with sizes of 0, then 16-bit PCM (XTTS: 24 kHz) as each piece of speech
  is generated. It takes no speed (AllTalk passes 1.0), and only XTTS streams: another engine
  loaded makes it answer 400 "Streaming not supported", told here as the ``api`` to change.
- ``openai``: ``POST /v1/audio/speech`` (OpenAI's shape): its voices are the six names AllTalk
  maps to its own (alloy, echo, fable, nova, onyx, shimmer), it takes a speed (0.25-4) but no
  language (AllTalk detects it), and it answers a whole file once it is made.

``load`` asks ``GET /api/ready`` ("Ready" or "Unloaded") and lists ``GET /api/voices``
(``{"status": "success", "voices": [...]}``), kept for ``voices()``, which never calls out.
AllTalk runs on the operator's machine: it is free (``cost`` None). It has no API keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from voxserve.audio.decode import decode_audio
from voxserve.audio.frames import AudioChunk
from voxserve.audio.wav_stream import WavStream
from voxserve.engines import remote
from voxserve.engines.base import (
    Capabilities,
    Engine,
    EngineSettings,
    Segment,
    SettingsGiven,
    Voice,
)
from voxserve.errors import (
    EngineError,
    EngineUnavailableError,
    UpstreamError,
    VoxserveError,
)
from voxserve.net import redact_url, without_credentials

logger = logging.getLogger("voxserve.engines.alltalk")

PROVIDER = "AllTalk"
DEFAULT_BASE_URL = "http://127.0.0.1:7851"
XTTS_LANGUAGES = (
    "en", "es", "fr", "de", "it", "pt", "pl", "tr", "ru", "nl", "cs", "ar", "zh-CN", "ja", "hu",
    "ko", "hi",
)  # fmt: skip
"""XTTS v2's languages (AllTalk's ``languages.json``), AllTalk's usual engine."""
OPENAI_VOICES = ("alloy", "echo", "fable", "nova", "onyx", "shimmer")
"""The only voices AllTalk's ``/v1/audio/speech`` takes (its ``OpenAIInput`` refuses others)."""
OPENAI_SPEEDS = (0.25, 4.0)
OUTPUT_FILE = "voxserve_stream"
"""``output_file``, which the streaming route requires and XTTS does not write while streaming."""
CHECK_TIMEOUT = 10.0
"""Seconds ``load``'s two questions may take."""
FIELDS = {"text": "input", "input": "input", "voice": "voice", "language": "language",
          "speed": "speed"}  # fmt: skip
"""AllTalk's request fields as ours, for the field a refusal names."""
NOT_STREAMING = "Streaming not supported"
"""What AllTalk answers (400) when its loaded engine cannot stream."""


class AllTalkSettings(EngineSettings):
    """``[engines.alltalk]``."""

    base_url: str = Field(DEFAULT_BASE_URL, repr=False)  # a proxy's URL may hold a password
    api: Literal["streaming", "openai"] = "streaming"
    """Which of AllTalk's routes speaks: its streaming one, or its OpenAI-shaped one."""
    voice: str | None = None
    """The voice offered first: the engine's default voice."""
    language: str | None = None
    """Sent as ``language`` on the streaming route: None, the request's, else the voice's;
    ``"auto"``: AllTalk detects it from the text."""
    response_format: Literal["wav", "mp3", "opus", "aac", "flac"] = "wav"
    """What the openai route answers (AllTalk transcodes with ffmpeg): wav is read as it
    arrives, the others are decoded once whole."""
    timeout: float = Field(120.0, gt=0)
    """Seconds without a byte from AllTalk before a call fails."""
    voices: list[str] | None = None
    """Offered until AllTalk lists its own (``GET /api/voices``), or when it lists none."""
    languages: list[str] = Field(default_factory=lambda: list(XTTS_LANGUAGES), min_length=1)
    """What the voices speak (the first is their main language)."""
    sample_rate: int = Field(24000, ge=8000, le=48000)
    """The rate of the loaded engine's speech (XTTS: 24 kHz)."""
    max_input_chars: int = Field(2000, ge=1)
    preferred_chars: int = Field(250, ge=1)
    """XTTS warns past 250 characters of English in one call: a sentence a call."""


class AllTalkEngine(Engine):
    name = "alltalk"
    requires = ("httpx",)
    Settings: ClassVar[type[EngineSettings]] = AllTalkSettings
    voices_listed_at_load = True
    settings: AllTalkSettings

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._connection: dict[str, Any] | None = None
        """httpx.AsyncClient arguments, made by ``load``."""
        self._listed: list[str] = []
        """The voices AllTalk listed when it was loaded."""
        self._clients = remote.PerLoop(
            lambda: httpx.AsyncClient(**self._connection), lambda client: client.aclose()
        )

    @property
    def _openai(self) -> bool:
        return self.settings.api == "openai"

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=self.settings.sample_rate,
            languages=tuple(self.settings.languages),
            max_input_chars=self.settings.max_input_chars,
            preferred_chars=self.settings.preferred_chars,
            speed_range=OPENAI_SPEEDS if self._openai else (1.0, 1.0),
            streaming=not self._openai,  # the openai route answers once all is made
            concurrency=self.settings.concurrency or 1,  # AllTalk generates one at a time
        )

    def voices(self) -> list[Voice]:
        if self._openai:
            ids = list(OPENAI_VOICES)
        else:
            ids = self._listed or list(self.settings.voices or ())
        first = self.settings.voice
        if first in ids:  # the default voice first: the resolver's choice when none is named
            ids = [first] + [voice for voice in ids if voice != first]
        languages = tuple(self.settings.languages)
        return [
            Voice(voice, self.name, voice.removesuffix(".wav"), languages[0], languages=languages)
            for voice in ids
        ]

    def load(self) -> None:
        try:
            base_url, auth = without_credentials(self.settings.base_url.rstrip("/"))
        except httpx.InvalidURL as error:
            raise EngineUnavailableError(
                f"[engines.alltalk] base_url {redact_url(self.settings.base_url)!r} is not a "
                f"valid URL: {error}",
                code="engine_misconfigured",
            ) from None
        timeout = self.settings.timeout
        connection = {
            "base_url": base_url, "auth": auth,
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        }  # fmt: skip
        with httpx.Client(**{**connection, "timeout": CHECK_TIMEOUT}) as client:
            ready = self._ask(client, "/api/ready").text.strip()
            if ready != "Ready":
                raise EngineUnavailableError(
                    f"AllTalk at {redact_url(base_url)} is not ready ({ready or 'no answer'}): "
                    "its engine is loading; try again when GET /api/ready says Ready",
                    code="engine_loading",
                )
            listed = self._listed_voices(self._ask(client, "/api/voices"))
        self._listed, self._connection = listed, connection

    def _ask(self, client: httpx.Client, path: str) -> httpx.Response:
        try:
            response = client.get(path)
        except httpx.HTTPError as error:
            raise EngineUnavailableError(
                f"AllTalk is not reachable at {redact_url(str(client.base_url))} ({error}): start "
                "it, or set [engines.alltalk] base_url",
                code="engine_unreachable",
            ) from None
        if response.status_code != 200:
            raise EngineUnavailableError(
                f"AllTalk answered GET {path} with HTTP {response.status_code}: is "
                f"{redact_url(str(client.base_url))} AllTalk v2?",
                code="engine_unreachable",
            )
        return response

    def _listed_voices(self, response: httpx.Response) -> list[str]:
        """AllTalk's voices; none (a logged reason) when its engine has no voices to list."""
        try:
            answer = response.json()
            if answer.get("status") != "success":
                logger.info("AllTalk lists no voices: %s", remote.provider_detail(answer).message)
                return []
            return [str(voice) for voice in answer["voices"] if voice]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            logger.info("AllTalk's voice list is unreadable (%s)", error)
            return []

    def unload(self) -> None:
        self._connection = None
        self._clients.drop()

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        if self._connection is None:
            raise EngineError("the alltalk engine is not loaded", code="engine_not_loaded")
        client = self._clients.get()
        options = segment.voicing.options
        if self._openai:
            request = client.build_request("POST", "/v1/audio/speech", json={
                "model": "tts-1", "input": segment.text, "voice": options.voice,
                "response_format": self.settings.response_format, "speed": options.speed,
            })  # fmt: skip
        else:
            request = client.build_request("GET", "/api/tts-generate-streaming", params={
                "text": segment.text, "voice": options.voice,
                "language": self._language(segment), "output_file": OUTPUT_FILE,
            })  # fmt: skip
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise remote.unreachable(PROVIDER, error, engine=self.name) from None
        try:
            if response.status_code != 200:
                raise self._refused(response.status_code, response.headers, await response.aread())
            if self.settings.response_format == "wav" or not self._openai:
                async for chunk in self._streamed(response):
                    yield chunk
            else:
                whole = b"".join([piece async for piece in response.aiter_bytes()])
                yield await asyncio.to_thread(decode_audio, whole, self.settings.sample_rate)
        except VoxserveError:
            raise
        except httpx.HTTPError as error:  # a stream cut mid-answer: AllTalk's engine failed
            raise remote.unreachable(PROVIDER, error, engine=self.name) from None
        finally:
            await response.aclose()  # an answer not read to its end closes its connection

    async def _streamed(self, response: httpx.Response) -> AsyncIterator[AudioChunk]:
        wav = WavStream()
        pieces = response.aiter_bytes()
        async with contextlib.aclosing(pieces):
            async for data in pieces:
                try:
                    chunk = wav.feed(data)
                except ValueError as error:
                    raise UpstreamError(
                        f"AllTalk's answer is not a WAV stream: {error}", code="alltalk_bad_audio"
                    ) from None
                if chunk is not None:
                    yield chunk
        if wav.sample_rate is None:  # ended before its header: its engine failed at once
            raise UpstreamError(
                "AllTalk ended the stream before any audio", code="alltalk_truncated",
                retryable=True,
            )  # fmt: skip

    def _language(self, segment: Segment) -> str:
        """AllTalk's code for the segment's language: XTTS's bare codes, and ``zh-cn``."""
        language = self.settings.language or segment.voicing.language or "auto"
        base = language.split("-")[0].lower()
        return "zh-cn" if base == "zh" else base

    def _refused(self, status: int, headers: httpx.Headers, body: bytes) -> VoxserveError:
        detail = remote.provider_detail(body).message
        if status == 400 and NOT_STREAMING in detail:
            return EngineUnavailableError(
                "AllTalk's loaded engine cannot stream: load XTTS in AllTalk, or set "
                '[engines.alltalk] api = "openai"',
                code="alltalk_not_streaming",
            )
        return remote.refusal(
            PROVIDER, status, headers, body, engine=self.name,
            key_from="[engines.alltalk] base_url", fields=FIELDS,
        )  # fmt: skip
