"""ElevenLabs' text to speech (``POST /v1/text-to-speech/{voice_id}/stream``), with word timings.

    [engines.elevenlabs]
    api_key = "sk_..."                   # or ELEVENLABS_API_KEY
    model_id = "eleven_multilingual_v2"  # eleven_v3, eleven_flash_v2_5, eleven_turbo_v2_5, ...
    timestamps = true                    # the with-timestamps stream: words timed (default)
    base_url = "https://api.elevenlabs.io"
    timeout = 60
    [engines.elevenlabs.prices]
    eleven_multilingual_v2 = 100.0       # USD per million characters; see ``ELEVENLABS_PRICES``

The official ``elevenlabs`` SDK (2.78) is used where it does the job: ``GET /v1/voices`` at load
(its own retries off) and the raw audio stream (``timestamps = false``: its
``text_to_speech.stream``, which opens the request and hands the body on as it comes, without
retries of its own). The timestamped stream, ``POST .../stream/with-timestamps``, goes over httpx
on the same connection pool: the SDK's iterator for it drops every line it cannot parse (an
``except Exception: pass`` around each line, in ``text_to_speech/raw_client.py``), and a line
lost there is audio and words lost without a word. Both requests are the same: the query's
``output_format`` and the JSON body the SDK sends, with the ``xi-api-key`` header.

- Audio is ``pcm_<rate>`` (16-bit mono), at the voicing's rate where ElevenLabs offers it
  (``PCM_RATES``; 44.1 kHz needs a Pro plan), else 24 kHz, decoded as it streams.
- Words: from the character alignment of each line of the timestamped stream
  (``elevenlabs_words.py``). A line that is not the JSON documented fails the call
  (``elevenlabs_bad_stream``, tried again while none of the audio has gone out); a line whose
  audio is good but whose alignment is not keeps its audio, its words lost with a warning.
- Voice settings (``ElevenLabsOptions``, ``engine_options`` of a request or a voice profile):
  ``stability``, ``similarity_boost``, ``style``, ``use_speaker_boost`` and ``speed`` (0.7-1.2,
  times the request's speed) as ``voice_settings``; ``model_id`` and ``seed`` as they are.
- ``language_code`` (the request's language, or the one detected in its text) is sent only to
  the models that take it (``LANGUAGE_CODE_MODELS``): ElevenLabs documents it as not supported
  by the multilingual v2 models, which tell the language from the text.
- Continuity: each segment is sent with the texts of its neighbours in the plan
  (``previous_text``, ``next_text``; ``Segment.neighbours``); what is billed is ``text``, as
  its ``x-character-count`` header counts it.
- Voices: the premade voices (``PREMADE_VOICES``), by id or by name ("Rachel"), and once loaded
  the account's own (``GET /v1/voices``: premade, cloned, designed), listed only with a key set.

ElevenLabs' refusals are ``{"detail": {"status", "message"}}`` or, for a body that fails its
model, FastAPI's 422 list; a spent quota is its 401 ``quota_exceeded``, told as such rather than
as a refused key.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator

from voxserve.audio.decode import Pcm16Stream
from voxserve.audio.frames import AudioChunk
from voxserve.engines import remote
from voxserve.engines.base import (
    Capabilities,
    Cost,
    Engine,
    EngineOptions,
    EngineSettings,
    Segment,
    SettingsGiven,
    SynthesisOptions,
    Voice,
)
from voxserve.engines.elevenlabs_words import Timeline, parse_line
from voxserve.errors import (
    EngineError,
    InvalidRequestError,
    UpstreamError,
    VoxserveError,
)

logger = logging.getLogger("voxserve.engines.elevenlabs")

PROVIDER = "ElevenLabs"
KEY_ENVIRONMENT = "ELEVENLABS_API_KEY"
DEFAULT_BASE_URL = "https://api.elevenlabs.io"
DEFAULT_MODEL = "eleven_multilingual_v2"
DEFAULT_RATE = 24000
PCM_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""The ``pcm_<rate>`` output formats the SDK's ``output_format`` lists."""
SPEED_RANGE = (0.7, 1.2)
"""``voice_settings.speed``, as ElevenLabs bounds it."""
DEFAULT_CONCURRENCY = 2
"""The free plan's concurrent requests; ElevenLabs answers 429 past a plan's."""
VOICE_LIST_TIMEOUT = 10.0

MULTILINGUAL_V2_LANGUAGES = (
    "en", "ja", "zh", "de", "hi", "fr", "ko", "pt", "it", "es", "id", "nl", "tr", "fil", "pl",
    "sv", "bg", "ro", "ar", "cs", "el", "fi", "hr", "ms", "sk", "da", "ta", "uk", "ru",
)  # fmt: skip
FLASH_V2_5_LANGUAGES = (*MULTILINGUAL_V2_LANGUAGES, "hu", "no", "vi")
MODEL_LANGUAGES = {
    "eleven_multilingual_v2": MULTILINGUAL_V2_LANGUAGES,
    "eleven_flash_v2_5": FLASH_V2_5_LANGUAGES,
    "eleven_turbo_v2_5": FLASH_V2_5_LANGUAGES,
    "eleven_flash_v2": ("en",),
    "eleven_turbo_v2": ("en",),
    # v3 speaks 70-odd languages; listed here are those ElevenLabs names for flash v2.5 (set
    # ``languages`` for more).
    "eleven_v3": FLASH_V2_5_LANGUAGES,
}
"""What each model speaks (ElevenLabs' models overview); another model: multilingual v2's."""
MODEL_MAX_CHARS = {
    "eleven_v3": 5000,
    "eleven_multilingual_v2": 10000,
    "eleven_flash_v2_5": 40000,
    "eleven_turbo_v2_5": 40000,
    "eleven_flash_v2": 30000,
    "eleven_turbo_v2": 30000,
}
"""Characters one request takes, by model (ElevenLabs' models overview)."""
OTHER_MODEL_MAX_CHARS = 5000
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5", "eleven_v3"})
"""Models that take ``language_code``: the API reference has it unsupported by multilingual v2;
the English-only models have nothing to choose."""
ELEVENLABS_PRICES = {
    # https://elevenlabs.io/pricing/api (text to speech), as published in 2026: $0.10 per 1,000
    # characters for Multilingual v2 and v3, $0.05 for Flash and Turbo. A voice with a credit
    # multiplier (some Voice Library voices) costs more.
    "eleven_multilingual_v2": 100.0,
    "eleven_v3": 100.0,
    "eleven_flash_v2_5": 50.0,
    "eleven_turbo_v2_5": 50.0,
    "eleven_flash_v2": 50.0,
    "eleven_turbo_v2": 50.0,
}
"""USD per million characters, by model."""
PREMADE_VOICES = {
    "Sarah": "EXAVITQu4vr4xnSDxMaL", "Laura": "FGY2WhTYpPnrIDTdsKH5",
    "Charlie": "IKne3meq5aSn9XLyUdCD", "George": "JBFqnCBsd6RMkjVDRZzb",
    "Callum": "N2lVS1w4EtoT3dr4eOWO", "River": "SAz9YHcvj6GT2YYXdXww",
    "Harry": "SOYHLrjzK2X1ezoPC6cr", "Liam": "TX3LPaxmHKxFdv7VOQHJ",
    "Alice": "Xb7hH8MSUJpSbSDYk0k2", "Matilda": "XrExE9yKIg1WjnnlVkGX",
    "Will": "bIHbv24MWmeRgasZH58o", "Jessica": "cgSgspJ2msm6clMCkdW9",
    "Eric": "cjVigY5qzO86Huf0OWal", "Bella": "hpp4J3VqNfWAUOO0d1Us",
    "Chris": "iP95p4xoKVk53GoZ742B", "Brian": "nPczCjzI2devNBz1zQrb",
    "Daniel": "onwK4e9ZLuTAKqWW03F9", "Lily": "pFZP5JQG7iQjIQuC4Bku",
    "Adam": "pNInz6obpgDQGcFmaJgB", "Bill": "pqHfZKP75CvOlQylNhV4",
    "Roger": "CwhRBWXzGAHq8TQ4Fs17",
    # Legacy premade voices: still spoken, listed by /v1/voices only with show_legacy.
    "Rachel": "21m00Tcm4TlvDq8ikWAM", "Aria": "9BWtsMINqrJLrRacOk9x",
    "Charlotte": "XB0fDUnXU5powFXDhCwa", "Drew": "29vD33N1CtxCmqQRPOHJ",
    "Clyde": "2EiwWnXFnvU5JabPnv8n", "Paul": "5Q0t7uMcjvnagumLfvZi",
    "Domi": "AZnzlk1XvdvUeBnXmlld", "Dave": "CYw3kZ02Hs0563khs1Fj",
    "Fin": "D38z5RcWu1voky8WS1ja", "Antoni": "ErXwobaYiN019PkySvjV",
    "Thomas": "GBv7mTt0atIp3Br8iCZE", "Elli": "MF3mGyEYCl7XYWbV9V6O",
    "Josh": "TxGEqnHWrfWFTfGW9XjX", "Arnold": "VR6AewLTigWG4xSOukaG",
    "Sam": "yoZ06aMxZJJ28mfd3POQ",
}  # fmt: skip
"""ElevenLabs' premade voices, by name: every account may speak with them."""
STATUS_FIELDS = {
    "voice_not_found": "voice_id",
    "max_character_limit_exceeded": "text",
    "model_not_found": "model_id",
}
"""Refusals of ElevenLabs' that name no field, by their ``detail.status``: the field each is
about."""


class ElevenLabsOptions(EngineOptions):
    """``engine_options`` for elevenlabs: its ``voice_settings``, a model and a seed."""

    model_id: str | None = Field(None, min_length=1)
    """Another model for this request (``[engines.elevenlabs] model_id`` otherwise)."""
    stability: float | None = Field(None, ge=0, le=1)
    similarity_boost: float | None = Field(None, ge=0, le=1)
    style: float | None = Field(None, ge=0, le=1)
    use_speaker_boost: bool | None = None
    speed: float | None = Field(None, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    """The voice's pace at speed 1.0; the request's speed multiplies it."""
    seed: int | None = Field(None, ge=0, le=4294967295)


class ElevenLabsSettings(EngineSettings):
    """``[engines.elevenlabs]``."""

    api_key: SecretStr | None = None
    model_id: str = Field(DEFAULT_MODEL, min_length=1)
    timestamps: bool = True
    """The with-timestamps stream (words timed); false: the plain audio stream."""
    base_url: str = Field(DEFAULT_BASE_URL, repr=False)  # a proxy's URL may hold a password
    timeout: float = Field(60.0, gt=0)
    """Seconds without a byte from ElevenLabs before a call fails."""
    list_voices: bool = True
    """Ask ``GET /v1/voices`` at load for the account's voices (cloned ones too)."""
    languages: list[str] | None = Field(None, min_length=1)
    """What the voices speak; None: the model's (``MODEL_LANGUAGES``)."""
    max_input_chars: int | None = Field(None, ge=1)
    """Characters a request; None: the model's (``MODEL_MAX_CHARS``). The free plan takes
    fewer (2500 on multilingual v2)."""
    prices: dict[str, float] = Field(default_factory=lambda: dict(ELEVENLABS_PRICES))
    """USD per million characters, by model; a model not in it is free."""

    @field_validator("prices", mode="before")
    @classmethod
    def _over_the_published(cls, given: Any) -> Any:
        """A table naming some models changes theirs; the others keep the published prices."""
        return {**ELEVENLABS_PRICES, **given} if isinstance(given, dict) else given


@dataclass
class _Connection:
    """One event loop's: an httpx client, and the SDK's client on it."""

    http: httpx.AsyncClient
    sdk: Any


class ElevenLabsEngine(Engine):
    name = "elevenlabs"
    extra = "elevenlabs"
    requires = ("elevenlabs",)
    Settings: ClassVar[type[EngineSettings]] = ElevenLabsSettings
    voices_listed_at_load = True
    settings: ElevenLabsSettings
    Options: ClassVar[type[EngineOptions] | None] = ElevenLabsOptions

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._key: str | None = None
        self._secrets: tuple[str, ...] = ()
        self._listed: list[Voice] | None = None
        """The account's voices, listed by ``load`` (None: the premade ones alone)."""
        self._connections = remote.PerLoop(self._connect, lambda made: made.http.aclose())

    @property
    def _languages(self) -> tuple[str, ...]:
        configured = self.settings.languages
        model = self.settings.model_id
        return tuple(configured or MODEL_LANGUAGES.get(model, MULTILINGUAL_V2_LANGUAGES))

    def describe(self) -> Capabilities:
        model = self.settings.model_id
        return Capabilities(
            sample_rate=DEFAULT_RATE,
            languages=self._languages,
            max_input_chars=self.settings.max_input_chars
            or MODEL_MAX_CHARS.get(model, OTHER_MODEL_MAX_CHARS),
            speed_range=SPEED_RANGE,
            streaming=True,
            concurrency=self.settings.concurrency or DEFAULT_CONCURRENCY,
            word_timings=self.settings.timestamps,
        )

    def voices(self) -> list[Voice]:
        # Without a key, in no voice list: a voice named for another engine must not land
        # here (the resolver tries every engine's voices) only to be refused.
        if not (self.settings.api_key or os.environ.get(KEY_ENVIRONMENT)):
            return []
        listed = self._listed or []
        # The premade ones too: an account's list leaves out the legacy ones (Rachel), which
        # it still speaks, and a name must find the same voice before a load as after.
        ids = {voice.id for voice in listed}
        premade = [self._voice(voice_id, name, "premade")
                   for name, voice_id in PREMADE_VOICES.items() if voice_id not in ids]  # fmt: skip
        return listed + premade

    def find_voice(self, spec: str) -> Voice | None:
        """A voice by id or alias, else by its name, in any case ("rachel"): the account's
        first."""
        found = super().find_voice(spec)
        if found is not None:
            return found
        return next((voice for voice in self.voices() if voice.name.lower() == spec.lower()), None)

    def _voice(self, voice_id: str, name: str, category: str) -> Voice:
        languages = self._languages
        return Voice(voice_id, self.name, name, languages[0], f"ElevenLabs {category} voice",
                     languages=languages)  # fmt: skip

    def load(self) -> None:
        key = remote.api_key(self.name, self.settings.api_key, KEY_ENVIRONMENT)
        url = remote.http_url(self.name, self.settings.base_url)
        self._key = key
        self._secrets = tuple(secret for secret in (key, url.password) if secret)
        self._listed = self._list_voices() if self.settings.list_voices else None

    def _list_voices(self) -> list[Voice] | None:
        """The account's voices (``GET /v1/voices``, the SDK's, not retried); None when they
        cannot be had: the premade voices are offered then."""
        from elevenlabs.client import ElevenLabs

        with httpx.Client(timeout=VOICE_LIST_TIMEOUT) as http:
            client = ElevenLabs(api_key=self._key, base_url=self._base_url, httpx_client=http,
                                timeout=VOICE_LIST_TIMEOUT)  # fmt: skip
            try:
                listed = client.voices.get_all(request_options={"max_retries": 0}).voices
            except Exception as error:  # the SDK's ApiError, httpx's, a body not its model
                logger.warning(
                    "ElevenLabs lists no voices (%s): offering its premade voices",
                    remote.redact(str(error) or type(error).__name__, self._secrets),
                )
                return None
        voices = [
            self._voice(voice.voice_id, voice.name or voice.voice_id, voice.category or "account")
            for voice in listed
            if voice.voice_id
        ]
        return voices or None

    @property
    def _base_url(self) -> str:
        return self.settings.base_url.rstrip("/")

    def _connect(self) -> _Connection:
        from elevenlabs.client import AsyncElevenLabs

        timeout = self.settings.timeout
        http = httpx.AsyncClient(
            base_url=self._base_url,
            headers={"xi-api-key": self._key or ""},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )
        # The SDK's own timeout (240 s unless given) would replace the client's on each call.
        sdk = AsyncElevenLabs(api_key=self._key, base_url=self._base_url, httpx_client=http,
                              timeout=timeout)  # fmt: skip
        return _Connection(http, sdk)

    def unload(self) -> None:
        self._key = None
        self._connections.drop()

    def _model(self, options: SynthesisOptions) -> str:
        return getattr(options.engine_options, "model_id", None) or self.settings.model_id

    def cost(self, text: str, options: SynthesisOptions) -> Cost | None:
        price = self.settings.prices.get(self._model(options))
        if price is None:
            return None
        return Cost(len(text), "characters", len(text) * price / 1e6)

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        if self._key is None:
            raise EngineError("the elevenlabs engine is not loaded", code="engine_not_loaded")
        options = segment.voicing.options
        rate = segment.voicing.sample_rate
        rate = rate if rate in PCM_RATES else DEFAULT_RATE
        body = self._body(segment)
        connection = self._connections.get()
        make = self._timed if self.settings.timestamps else self._plain
        try:
            async with contextlib.aclosing(make(connection, options, rate, body)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except VoxserveError:
            raise
        except Exception as error:
            raise self._as_ours(error, options) from None

    async def _plain(
        self, connection: _Connection, options: SynthesisOptions, rate: int, body: dict[str, Any]
    ) -> AsyncIterator[AudioChunk]:
        """The raw audio stream, through the SDK: PCM as it comes."""
        from elevenlabs import VoiceSettings

        fields = dict(body)
        if "voice_settings" in fields:
            fields["voice_settings"] = VoiceSettings(**fields["voice_settings"])
        pcm = Pcm16Stream(rate)
        speech = connection.sdk.text_to_speech
        pieces = speech.stream(
            options.voice, output_format=f"pcm_{rate}", **fields,
            request_options={"chunk_size": 2 * rate // 10},  # 0.1 s a piece, not its 1 KiB
        )  # fmt: skip
        async with contextlib.aclosing(pieces):
            async for data in pieces:
                if (chunk := pcm.feed(data)) is not None:
                    yield chunk

    async def _timed(
        self, connection: _Connection, options: SynthesisOptions, rate: int, body: dict[str, Any]
    ) -> AsyncIterator[AudioChunk]:
        """The with-timestamps stream, over httpx: a JSON object a line, its audio with its
        words."""
        path = f"/v1/text-to-speech/{quote(options.voice, safe='')}/stream/with-timestamps"
        query = {"output_format": f"pcm_{rate}"}
        request = connection.http.build_request("POST", path, params=query, json=body)
        response = await connection.http.send(request, stream=True)
        try:
            if response.status_code != 200:
                said = await response.aread()
                raise self._refused(response.status_code, response.headers, said, options)
            timeline = Timeline(rate)
            lines = response.aiter_lines()
            async with contextlib.aclosing(lines):
                async for line in lines:
                    if line.strip():
                        timeline.feed(*parse_line(line))
                        for chunk in timeline.ready():
                            yield chunk
            for chunk in timeline.finish():
                yield chunk
        finally:
            await response.aclose()  # an answer not read to its end closes its connection

    def _body(self, segment: Segment) -> dict[str, Any]:
        """The JSON body the SDK sends: only what is set."""
        options = segment.voicing.options
        extra = options.engine_options
        model = self._model(options)
        given = extra.model_dump(exclude_none=True) if extra is not None else {}
        voice_settings = {
            name: given[name]
            for name in ("stability", "similarity_boost", "style", "use_speaker_boost")
            if name in given
        }
        if "speed" in given or options.speed != 1.0:
            voice_settings["speed"] = _speed(given.get("speed", 1.0), options.speed)
        previous, following = segment.neighbours
        body: dict[str, Any] = {
            "text": segment.text,
            "model_id": model,
            "language_code": _base(options.language) if model in LANGUAGE_CODE_MODELS else None,
            "voice_settings": voice_settings or None,
            "seed": given.get("seed"),
            "previous_text": previous or None,
            "next_text": following or None,
        }
        return {name: value for name, value in body.items() if value is not None}

    def _refused(
        self, status: int, headers: Mapping[str, str], body: Any, options: SynthesisOptions
    ) -> VoxserveError:
        """ElevenLabs' error answer as ours: its refused fields named as ours, a spent quota
        told as one."""
        body = _naming_its_field(_parsed(body))
        detail = body.get("detail") if isinstance(body, dict) else None
        if status == 401 and isinstance(detail, dict) and detail.get("status") == "quota_exceeded":
            said = remote.redact(str(detail.get("message") or ""), self._secrets)
            return UpstreamError(
                f"ElevenLabs: the account's quota is spent: {said}",
                code="elevenlabs_quota_exceeded",
            )
        extra = options.engine_options
        given = set(extra.model_fields_set) if extra is not None else set()
        fields = {
            "text": "input", "previous_text": "input", "next_text": "input", "voice_id": "voice",
            "language_code": "language", "output_format": "sample_rate",
            "speed": "engine_options.speed" if "speed" in given else "speed",
            **{name: f"engine_options.{name}" for name in ElevenLabsOptions.model_fields
               if name != "speed"},
        }  # fmt: skip
        return remote.refusal(
            PROVIDER, status, headers, body, engine=self.name,
            key_from=remote.key_setting(self.name, KEY_ENVIRONMENT), fields=fields,
            secrets=self._secrets,
        )  # fmt: skip

    def _as_ours(self, error: Exception, options: SynthesisOptions) -> Exception:
        """The SDK's and httpx's failures as ours, with no key in them."""
        from elevenlabs.core.api_error import ApiError

        if isinstance(error, ApiError):
            return self._refused(error.status_code or 500, error.headers or {}, error.body, options)
        if isinstance(error, (httpx.HTTPError, OSError)):
            return remote.unreachable(PROVIDER, error, engine=self.name, secrets=self._secrets)
        return EngineError(
            remote.redact(f"engine {self.name!r} failed: {error}", self._secrets),
            code="engine_failed",
        )


def _speed(base: float, speed: float) -> float:
    """``voice_settings.speed``: the options' pace, faster by the request's speed; a pace
    ElevenLabs does not take is refused naming what made it."""
    pace = round(base * speed, 3)
    low, high = SPEED_RANGE
    if not low <= pace <= high:
        raise InvalidRequestError(
            f"speed {speed:g} makes a voice_settings.speed of {pace:g}, and ElevenLabs takes "
            f"{low:g} to {high:g} (engine_options.speed is {base:g})",
            param="speed",
        )
    return pace


def _base(language: str | None) -> str | None:
    """The ISO 639-1 code of a language tag ("pt-BR" -> "pt"); None for none."""
    return language.split("-")[0].lower() if language else None


def _parsed(body: Any) -> Any:
    """An error body as JSON where it is JSON, else as it came."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


def _naming_its_field(body: Any) -> Any:
    """ElevenLabs' ``{"detail": {"status": "voice_not_found"}}`` with the field it is about as
    ``param``, which ``remote.refusal`` names as ours."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, dict) and not detail.get("param"):
        field = STATUS_FIELDS.get(str(detail.get("status")))
        if field is not None:
            return {**body, "detail": {**detail, "param": field}}
    return body
