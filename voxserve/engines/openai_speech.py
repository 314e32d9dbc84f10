"""OpenAI's speech API (``POST /audio/speech``), and any server that speaks it.

Two engines on one code path, the official ``openai`` SDK (``AsyncOpenAI``, its own retries off:
``Engine.stream`` retries, and only before audio, so that nothing is billed twice):

- ``openai``: OpenAI itself (or Azure OpenAI's v1 endpoint, or a proxy, by ``base_url``)::

      [engines.openai]
      api_key = "sk-..."          # or OPENAI_API_KEY
      model = "gpt-4o-mini-tts"   # tts-1, tts-1-hd
      stream_format = "sse"       # "audio": raw chunks; default: sse where the model has it
      [engines.openai.prices.tts-1]
      characters = 15.0           # USD per million; see ``Price``

- ``openai_compatible``: a server speaking the same API (Kokoro-FastAPI, speaches,
  openedai-speech, another voxserve)::

      [engines.openai_compatible]
      base_url = "http://localhost:8880/v1"
      model = "kokoro"
      voices = ["af_bella"]       # used when the server lists none at GET /audio/voices
      sample_rate = 24000         # of its pcm

Audio is asked for as ``pcm`` (signed 16-bit little-endian mono) and handed on as it arrives:
raw chunks (``stream_format: audio``), or the base64 ``speech.audio.delta`` events of a
``text/event-stream`` (``sse``), which ends with ``speech.audio.done`` and its token ``usage``.
Closing the stream closes the HTTP response, and with it the connection.

Cost: tts-1 and tts-1-hd bill input characters; gpt-4o-mini-tts bills text tokens in and audio
tokens out, estimated here (``estimate_tokens``) since they are known only after the call.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from voxserve.audio.decode import Pcm16Stream
from voxserve.audio.frames import AudioChunk
from voxserve.engines import remote
from voxserve.engines.base import (
    Capabilities,
    Cost,
    Engine,
    EngineSettings,
    Segment,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.errors import EngineError, EngineUnavailableError, UpstreamError, VoxserveError

logger = logging.getLogger("voxserve.engines.openai_speech")

OPENAI_BASE_URL = "https://api.openai.com/v1"
PCM_RATE = 24000
"""OpenAI's ``pcm``: 24 kHz."""
MAX_INPUT_CHARS = 4096
"""OpenAI's limit on ``input``."""
SPEED_RANGE = (0.25, 4.0)
DEFAULT_CONCURRENCY = 4
VOICE_LIST_TIMEOUT = 10.0
TOKEN_MODELS = frozenset({"gpt-4o-mini-tts"})
"""Models that take ``instructions`` and ``stream_format: sse``, billed by tokens."""
VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
    "verse", "marin", "cedar",
)  # fmt: skip
TTS1_VOICES = frozenset(VOICES) - {"ballad", "verse", "marin", "cedar"}
"""What tts-1 and tts-1-hd speak with (OpenAI's text-to-speech guide)."""
WHISPER_LANGUAGES = (
    "en", "af", "ar", "hy", "az", "be", "bs", "bg", "ca", "zh", "hr", "cs", "da", "nl", "et",
    "fi", "fr", "gl", "de", "el", "he", "hi", "hu", "is", "id", "it", "ja", "kn", "kk", "ko",
    "lv", "lt", "mk", "ms", "mr", "mi", "ne", "no", "fa", "pl", "pt", "ro", "ru", "sr", "sk",
    "sl", "es", "sw", "sv", "tl", "ta", "th", "tr", "uk", "ur", "vi", "cy",
)  # fmt: skip
"""OpenAI: its voices "generally follow the Whisper model in terms of language support", optimised
for English (the text-to-speech guide); these are Whisper's languages as that guide lists them."""

CHARS_PER_TOKEN = 4.0
"""OpenAI's rule of thumb for English text: a token is about four characters."""
AUDIO_TOKENS_PER_SECOND = 1250 / 60
"""gpt-4o-mini-tts: OpenAI estimates $0.015 a minute of audio at $12 per million audio tokens,
that is 1250 tokens a minute."""
CHARS_PER_SECOND = 17.5
"""Speech at about 170 words a minute, English words being six characters with their space: the
audio a text makes, for the audio tokens it is billed before anyone hears it."""
FIELDS = {"input": "input", "voice": "voice", "speed": "speed", "instructions": "instructions"}
"""OpenAI's request fields as ours, for the field a 400 names."""


class Price(BaseModel):
    """What a model costs, in USD per million units: characters in, or text tokens in and audio
    tokens out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    characters: float | None = Field(None, ge=0)
    input_tokens: float | None = Field(None, ge=0)
    audio_tokens: float | None = Field(None, ge=0)


OPENAI_PRICES = {
    # https://platform.openai.com/docs/pricing (text-to-speech), as published in 2025.
    "tts-1": Price(characters=15.0),
    "tts-1-hd": Price(characters=30.0),
    "gpt-4o-mini-tts": Price(input_tokens=0.60, audio_tokens=12.0),
}


class SpeechAPISettings(EngineSettings):
    """What both engines' tables hold."""

    api_key: SecretStr | None = None
    base_url: str | None = Field(None, repr=False)  # a proxy's URL may hold a password
    model: str = "tts-1"
    timeout: float = Field(60.0, gt=0)
    """Seconds without a byte from the server before a call fails."""
    stream_format: Literal["audio", "sse"] | None = None
    """``audio``: raw chunks; ``sse``: server-sent events; None: sse where the model has it."""
    prices: dict[str, Price] = Field(default_factory=dict)
    """USD per million units, by model; a model not in it is free."""
    languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1)
    """What the voices speak (the first is their main language)."""


class OpenAISettings(SpeechAPISettings):
    """``[engines.openai]``."""

    base_url: str | None = Field(OPENAI_BASE_URL, repr=False)
    model: Literal["tts-1", "tts-1-hd", "gpt-4o-mini-tts"] = "gpt-4o-mini-tts"
    prices: dict[str, Price] = Field(default_factory=lambda: dict(OPENAI_PRICES))
    languages: list[str] = Field(default_factory=lambda: list(WHISPER_LANGUAGES), min_length=1)

    @field_validator("prices", mode="before")
    @classmethod
    def _over_the_published(cls, given: Any) -> Any:
        """A table naming some models changes theirs; the others keep the published prices."""
        return {**OPENAI_PRICES, **given} if isinstance(given, dict) else given

    @model_validator(mode="after")
    def _sse_where_the_model_has_it(self) -> OpenAISettings:
        if self.stream_format == "sse" and self.model not in TOKEN_MODELS:
            raise ValueError(f"stream_format 'sse' is not offered for {self.model}")
        return self


class OpenAICompatibleSettings(SpeechAPISettings):
    """``[engines.openai_compatible]``: unset ``base_url``, the engine offers nothing."""

    voices: list[str] | None = None
    """Offered when the server lists none (``GET {base_url}/audio/voices``)."""
    sample_rate: int = Field(PCM_RATE, ge=8000, le=48000)
    """The rate of the server's ``pcm``."""
    stream_format: Literal["audio", "sse"] = "audio"
    max_input_chars: int = Field(MAX_INPUT_CHARS, ge=1)


class OpenAIEngine(Engine):
    name = "openai"
    extra = "openai"
    requires = ("openai",)
    Settings: ClassVar[type[EngineSettings]] = OpenAISettings
    settings: SpeechAPISettings
    provider: ClassVar[str] = "OpenAI"
    key_environment: ClassVar[str | None] = "OPENAI_API_KEY"

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._connection: dict[str, Any] | None = None
        """AsyncOpenAI arguments, made by ``load``."""
        self._secrets: tuple[str, ...] = ()
        self._keyless = False
        self._clients = remote.PerLoop(self._new_client, lambda client: client.close())

    @property
    def token_billed(self) -> bool:
        return self.settings.model in TOKEN_MODELS

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=PCM_RATE,
            languages=tuple(self.settings.languages),
            max_input_chars=MAX_INPUT_CHARS,
            speed_range=SPEED_RANGE,
            streaming=True,
            instructions=self.token_billed,
            concurrency=self.settings.concurrency or DEFAULT_CONCURRENCY,
        )

    def voices(self) -> list[Voice]:
        # Without a key, in no voice list: a request for "alloy" on another engine must not
        # land here (the resolver tries other engines' own voices) only to be refused.
        if not (self.settings.api_key or os.environ.get(self.key_environment or "")):
            return []
        # The tts-1 models refuse the newer voices: listing only theirs, a request naming
        # another is a 400 naming ``voice`` before anything is sent.
        ids = VOICES if self.token_billed else [v for v in VOICES if v in TTS1_VOICES]
        return [self._voice(voice) for voice in ids]

    def _voice(self, voice_id: str, name: str | None = None) -> Voice:
        languages = tuple(self.settings.languages)
        return Voice(voice_id, self.name, name or voice_id.capitalize(), languages[0],
                     languages=languages)  # fmt: skip

    def load(self) -> None:
        key = remote.api_key(self.name, self.settings.api_key, self.key_environment or "")
        self._connect(key)

    def _connect(self, key: str) -> None:
        base_url = self.settings.base_url or ""
        url = remote.http_url(self.name, base_url)
        self._secrets = tuple(s for s in (key, url.password) if s)
        timeout = self.settings.timeout
        self._keyless = not key
        self._connection = {
            # The SDK insists on a key; a server needing none gets no Authorization (``_body``).
            "api_key": key or "unused",
            "base_url": base_url,
            "max_retries": 0,
            "timeout": _sdk_http().Timeout(timeout, connect=min(timeout, 10.0)),
        }

    def _new_client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(**self._connection)

    def unload(self) -> None:
        self._connection = None
        self._clients.drop()

    def cost(self, text: str, options: SynthesisOptions) -> Cost | None:
        price = self.settings.prices.get(self.settings.model)
        if price is None:
            return None
        if price.characters is not None:
            return Cost(len(text), "characters", len(text) * price.characters / 1e6)
        instructions = options.instructions if self.token_billed else None
        text_tokens, audio_tokens = estimate_tokens(text, instructions, options.speed)
        usd = text_tokens * (price.input_tokens or 0) + audio_tokens * (price.audio_tokens or 0)
        return Cost(text_tokens + audio_tokens, "tokens", usd / 1e6)

    def _sse(self) -> bool:
        stream_format = self.settings.stream_format
        return stream_format == "sse" if stream_format else self.token_billed

    def _body(self, text: str, options: SynthesisOptions) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.settings.model, "input": text, "voice": options.voice,
            "response_format": "pcm",
        }  # fmt: skip
        if options.speed != 1.0:
            body["speed"] = options.speed
        if options.instructions and self.capabilities.instructions:
            body["instructions"] = options.instructions
        if self._sse():
            body["stream_format"] = "sse"
        if self._keyless:
            from openai import omit

            body["extra_headers"] = {"Authorization": omit}
        return body

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        if self._connection is None:
            raise EngineError(f"the {self.name} engine is not loaded", code="engine_not_loaded")
        speech = self._clients.get().audio.speech.with_streaming_response
        pcm = Pcm16Stream(self.capabilities.sample_rate)
        try:
            async with speech.create(**self._body(segment.text, segment.voicing.options)) as answer:
                pieces = (
                    _deltas(answer, self.provider, self.name)
                    if self._sse()
                    else (answer.iter_bytes())
                )
                async with contextlib.aclosing(pieces):
                    async for data in pieces:
                        if (chunk := pcm.feed(data)) is not None:
                            yield chunk
        except VoxserveError:
            raise
        except Exception as error:
            raise self._as_ours(error) from None

    def _as_ours(self, error: Exception) -> Exception:
        """The SDK's failures as ours, with no key in them."""
        import openai

        if isinstance(error, openai.APIStatusError):
            response = error.response
            return remote.refusal(
                self.provider, response.status_code, response.headers, response.content,
                engine=self.name, key_from=remote.key_setting(self.name, self.key_environment),
                fields=FIELDS, secrets=self._secrets,
            )  # fmt: skip
        # A stream cut mid-answer is the HTTP library's own error, not the SDK's.
        if isinstance(error, (openai.APIConnectionError, _sdk_http().HTTPError, OSError)):
            return remote.unreachable(self.provider, error, engine=self.name, secrets=self._secrets)
        return EngineError(
            remote.redact(f"engine {self.name!r} failed: {error}", self._secrets),
            code="engine_failed",
        )


class OpenAICompatibleEngine(OpenAIEngine):
    name = "openai_compatible"
    Settings: ClassVar[type[EngineSettings]] = OpenAICompatibleSettings
    voices_listed_at_load = True
    settings: OpenAICompatibleSettings
    provider: ClassVar[str] = "the OpenAI-compatible server"
    key_environment: ClassVar[str | None] = None
    """None: OPENAI_API_KEY is OpenAI's, never sent to another server."""

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._listed: list[Voice] | None = None
        """The server's own voices, listed by ``load``."""

    def describe(self) -> Capabilities:
        return Capabilities(
            sample_rate=self.settings.sample_rate,
            languages=tuple(self.settings.languages),
            max_input_chars=self.settings.max_input_chars,
            speed_range=SPEED_RANGE,
            streaming=True,
            instructions=self.token_billed,
            concurrency=self.settings.concurrency or DEFAULT_CONCURRENCY,
        )

    def voices(self) -> list[Voice]:
        if self.settings.base_url is None:  # unconfigured: in no voice list
            return []
        if self._listed:
            return self._listed
        return [self._voice(voice, voice) for voice in self.settings.voices or ()]

    def load(self) -> None:
        if self.settings.base_url is None:
            raise EngineUnavailableError(
                "the openai_compatible engine needs [engines.openai_compatible] base_url",
                code="engine_not_configured",
            )
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        self._connect(key)
        self._listed = self._list_voices(key)

    def _list_voices(self, key: str) -> list[Voice] | None:
        """The server's voices: Kokoro-FastAPI's ``{"voices": ["af_bella", ...]}`` or voxserve's
        ``{"voices": [{"id", "name", "engine", ...}]}``; None when it lists none."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        url = f"{self.settings.base_url.rstrip('/')}/audio/voices"
        try:
            response = httpx.get(url, headers=headers, timeout=VOICE_LIST_TIMEOUT)
            response.raise_for_status()
            listed = response.json()["voices"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            logger.info(
                "%s lists no voices (%s): offering [engines.openai_compatible] voices",
                self.provider, remote.redact(str(error) or type(error).__name__, self._secrets),
            )  # fmt: skip
            return None
        entries = [{"id": e} if isinstance(e, str) else e for e in listed if e]
        # voxserve lists every engine's voices: those of the engine named as the model, if any.
        own = [e for e in entries if isinstance(e, dict) and e.get("engine") == self.settings.model]
        voices = [
            self._voice(str(e["id"]), str(e.get("name") or e["id"]))
            for e in own or entries
            if isinstance(e, dict) and e.get("id")
        ]
        return voices or None


def _sdk_http():
    """The HTTP library the SDK is built on: httpx2 from openai 3 on, httpx before."""
    try:
        import httpx2
    except ImportError:
        return httpx
    return httpx2


def estimate_tokens(text: str, instructions: str | None, speed: float) -> tuple[int, int]:
    """gpt-4o-mini-tts' bill for ``text``, estimated: text tokens in (text and instructions, at
    ``CHARS_PER_TOKEN``) and audio tokens out (the seconds the text takes to say at
    ``CHARS_PER_SECOND``, faster by ``speed``, at ``AUDIO_TOKENS_PER_SECOND``)."""
    said = len(text) + len(instructions or "")
    text_tokens = math.ceil(said / CHARS_PER_TOKEN)
    seconds = len(text) / CHARS_PER_SECOND / speed
    return text_tokens, math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


async def _deltas(answer: Any, provider: str, engine: str) -> AsyncIterator[bytes]:
    """The audio of a speech event stream: ``data: {"type": "speech.audio.delta", "audio":
    base64}`` events, ending with ``speech.audio.done``; a stream cut before it is passing."""
    async for line in answer.iter_lines():
        if not line.startswith("data:"):
            continue  # event names, comments, blank separators
        event = json.loads(line[5:].strip())
        kind = event.get("type")
        if kind == "speech.audio.delta":
            yield base64.b64decode(event["audio"])
        elif kind == "speech.audio.done":
            return
        elif kind == "error":
            said = remote.redact(remote.provider_detail(event).message, ())
            raise UpstreamError(
                f"{provider} failed mid-stream: {said}",
                code=f"{engine}_http_error",
                retryable=True,
            )
    raise UpstreamError(
        f"{provider} ended the stream before speech.audio.done",
        code=f"{engine}_truncated",
        retryable=True,
    )
