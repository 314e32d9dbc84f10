"""Zonos on Zyphra's hosted API (``POST /v1/audio/text-to-speech``), cloning from a clip.

    [engines.zonos]
    api_key = "zsk-..."               # or ZYPHRA_API_KEY
    model = "zonos-v0.1-transformer"  # or "zonos-v0.1-hybrid"
    base_url = "https://api.zyphra.com/v1"
    timeout = 120
    [engines.zonos.prices.zonos-v0.1-transformer]
    per_minute = 0.00737              # USD a minute of speech; see ``ZYPHRA_PRICES``

The request is what the ``zyphra`` client (0.1.6) sends: its own ``TTSParams`` model builds the
JSON body (``text``, ``speaker_audio`` base64, ``speaking_rate`` 5-35, ``language_iso_code``,
``mime_type``, ``model``, ``default_voice_name``, ``emotion``, ``fmax``, ``vqscore``,
``pitch_std``, ``speaker_noised``; fields not set are not sent), with its ``X-API-Key`` header.
The client's transport is not used: its URL is fixed in module constants (``API_BASE_URL`` +
``ENDPOINTS["tts"]``, no setting), and spells ``http://api.zyphra.com``, sending the key in
clear text; and its ``ZyphraError`` keeps a refusal's status and text but not its headers, so a
429's ``Retry-After`` would be lost. The same request goes here over httpx, to ``https`` (or
``base_url``), its refusals told with their headers.

- Voices: Zyphra's default voices (``default_voice_name``), and any voice profile with a clip,
  cloned (the clip as ``speaker_audio``; ``Capabilities.cloning``).
- Speed is ``speaking_rate`` (phonemes a second, 15 by default: speed 1.0); the voicing's
  language is ``language_iso_code``. The rest is the engine's own per-request options
  (``ZonosOptions``, ``engine_options`` of a request or a profile): emotion weights, a base
  ``speaking_rate``, ``fmax``, ``vqscore``, ``pitch_std``, ``speaker_noised``.
- Audio: Zyphra answers a whole file once it is made, in the ``mime_type`` asked for (webm by
  default, mp3, ogg, wav): wav here, the cheapest to decode (in a worker thread), at 44.1 kHz.
- Speaker roles (``/ws/tts``'s ``speaker``: 0-3, then higher ids), as the TTS-provider server
  mapped ``0.wav``, ``1.wav``...: the top-level ``speakers`` setting names a voice profile (a
  clip, cloned) for each role, ``speakers = {zonos = ["alice", "bob", "carol", "dana", "eve"]}``
  for roles 0 to 4; without it every role is the first default voice, and the ids after 3 are
  the other default voices.

Zonos itself (the open model, run here) has no engine: it is not installable from a package
registry (PyPI's ``zonos`` is an empty placeholder; the model installs from Zyphra's GitHub
repository with its own CUDA builds), so there is no local adapter to test or ship.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from voxserve.audio.decode import decode_audio
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
from voxserve.errors import EngineError, InvalidRequestError, UpstreamError

logger = logging.getLogger("voxserve.engines.zonos")

PROVIDER = "Zyphra"
KEY_ENVIRONMENT = "ZYPHRA_API_KEY"
DEFAULT_BASE_URL = "https://api.zyphra.com/v1"
SPEECH_PATH = "/audio/text-to-speech"
MODELS = ("zonos-v0.1-transformer", "zonos-v0.1-hybrid")
"""The ``zyphra`` client's ``SupportedModel``."""
RATE = 44100
"""Zonos' speech: its autoencoder's 44.1 kHz."""
BASE_RATE = 15.0
"""``speaking_rate`` at speed 1.0: Zyphra's default, in phonemes a second."""
RATE_RANGE = (5.0, 35.0)
"""``speaking_rate`` as the client's ``TTSParams`` bounds it."""
MAX_INPUT_CHARS = 2000
"""Zyphra states no limit; this keeps one call to a couple of minutes of speech."""
PREFERRED_CHARS = 400
"""A few sentences a call: Zonos keeps its prosody across them, and a call's speech is ready
only when all of it is."""
DEFAULT_CONCURRENCY = 4
LANGUAGES = {"en-US": "en-us", "fr-FR": "fr-fr", "de": "de", "ja": "ja", "ko": "ko", "zh": "cmn"}
"""The languages Zyphra's API documents (``language_iso_code``: en-us, fr-fr, de, ja, ko, cmn),
by the tags requests use."""
DEFAULT_VOICES = {
    "american_female": "en-US", "american_male": "en-US", "anime_girl": "en-US",
    "british_female": "en-US", "british_male": "en-US", "energetic_boy": "en-US",
    "energetic_girl": "en-US", "japanese_female": "ja", "japanese_male": "ja",
}  # fmt: skip
"""Zyphra's default voices (``default_voice_name``) and the language each was recorded in; any
of them speaks every language in ``LANGUAGES``."""
CHARS_PER_PHONEME = 1.17
"""English text has about 0.85 phonemes a written character (spaces and punctuation included):
at ``speaking_rate`` 15 that is 17.5 characters of text a second, the audio a text makes, which
is what Zyphra bills before anyone hears it."""
ZYPHRA_PRICES_PER_MINUTE = 7.0 / 1e6 * CHARS_PER_PHONEME * BASE_RATE * 60
"""Zyphra bills its API by minutes of speech made (its plans are minutes a month; the free one,
100). Its own price page is not in the stored copies this was written from, so the default is
the published price of the same two models on OpenRouter, $7 a million characters, as a minute
of speech at speed 1.0 (1053 characters): $0.00737. Set ``prices`` to your plan's."""


class Emotion(BaseModel):
    """Zonos' emotion conditioning (the client's ``EmotionWeights``), each weight 0 to 1; a
    weight not given is Zyphra's default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    happiness: float | None = Field(None, ge=0, le=1)
    sadness: float | None = Field(None, ge=0, le=1)
    disgust: float | None = Field(None, ge=0, le=1)
    fear: float | None = Field(None, ge=0, le=1)
    surprise: float | None = Field(None, ge=0, le=1)
    anger: float | None = Field(None, ge=0, le=1)
    other: float | None = Field(None, ge=0, le=1)
    neutral: float | None = Field(None, ge=0, le=1)


class ZonosOptions(EngineOptions):
    """``engine_options`` for zonos (bounds as the client's ``TTSParams``); emotion and
    ``pitch_std`` are the transformer model's, ``speaker_noised`` the hybrid's."""

    speaking_rate: float | None = Field(None, ge=RATE_RANGE[0], le=RATE_RANGE[1])
    """Phonemes a second at speed 1.0 (the request's speed multiplies it); default 15."""
    emotion: Emotion | None = None
    fmax: int | None = Field(None, ge=0, le=24000)
    vqscore: float | None = Field(None, ge=0.6, le=0.8)
    pitch_std: float | None = Field(None, ge=0, le=500)
    speaker_noised: bool | None = None


class ZonosPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    per_minute: float = Field(ge=0)
    """USD a minute of speech."""


ZYPHRA_PRICES = {model: ZonosPrice(per_minute=ZYPHRA_PRICES_PER_MINUTE) for model in MODELS}


class ZonosSettings(EngineSettings):
    """``[engines.zonos]``."""

    api_key: SecretStr | None = None
    model: Literal["zonos-v0.1-transformer", "zonos-v0.1-hybrid"] = "zonos-v0.1-transformer"
    base_url: str = Field(DEFAULT_BASE_URL, repr=False)  # a proxy's URL may hold a password
    timeout: float = Field(120.0, gt=0)
    """Seconds without a byte from Zyphra before a call fails (it answers once all is made)."""
    prices: dict[str, ZonosPrice] = Field(default_factory=lambda: dict(ZYPHRA_PRICES))
    """USD a minute of speech, by model; a model not in it is free."""

    @field_validator("prices", mode="before")
    @classmethod
    def _over_the_published(cls, given: Any) -> Any:
        """A table naming one model changes its price; the other keeps the default."""
        return {**ZYPHRA_PRICES, **given} if isinstance(given, dict) else given


class ZonosEngine(Engine):
    name = "zonos"
    extra = "zonos"
    requires = ("zyphra",)
    Settings: ClassVar[type[EngineSettings]] = ZonosSettings
    settings: ZonosSettings
    Options: ClassVar[type[EngineOptions] | None] = ZonosOptions

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        super().__init__(settings, data_dir=data_dir)
        self._connection: dict[str, Any] | None = None
        """httpx.AsyncClient arguments, made by ``load``."""
        self._secrets: tuple[str, ...] = ()
        self._clients = remote.PerLoop(
            lambda: httpx.AsyncClient(**self._connection), lambda client: client.aclose()
        )

    def describe(self) -> Capabilities:
        low, high = RATE_RANGE
        return Capabilities(
            sample_rate=RATE,
            languages=tuple(LANGUAGES),
            max_input_chars=MAX_INPUT_CHARS,
            preferred_chars=PREFERRED_CHARS,
            speed_range=(low / BASE_RATE, high / BASE_RATE),
            cloning=True,
            concurrency=self.settings.concurrency or DEFAULT_CONCURRENCY,
        )

    def voices(self) -> list[Voice]:
        # Without a key, in no voice list: a voice named for another engine must not land
        # here (the resolver tries every engine's voices) only to be refused.
        if not (self.settings.api_key or os.environ.get(KEY_ENVIRONMENT)):
            return []
        languages = tuple(LANGUAGES)
        return [
            Voice(
                voice, self.name, voice.replace("_", " ").capitalize(), language,
                "a Zyphra default voice",
                languages=(language, *[other for other in languages if other != language]),
            )
            for voice, language in DEFAULT_VOICES.items()
        ]  # fmt: skip

    def load(self) -> None:
        key = remote.api_key(self.name, self.settings.api_key, KEY_ENVIRONMENT)
        url = remote.http_url(self.name, self.settings.base_url)
        from zyphra.client import BaseClient  # the client's own headers: X-API-Key, JSON

        self._secrets = tuple(secret for secret in (key, url.password) if secret)
        timeout = self.settings.timeout
        self._connection = {
            "base_url": self.settings.base_url.rstrip("/"),
            "headers": BaseClient(key)._headers,
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        }

    def unload(self) -> None:
        self._connection = None
        self._clients.drop()

    def cost(self, text: str, options: SynthesisOptions) -> Cost | None:
        price = self.settings.prices.get(self.settings.model)
        if price is None:
            return None
        seconds = len(text) / (CHARS_PER_PHONEME * _speaking_rate(options))
        return Cost(round(seconds, 2), "seconds", seconds / 60 * price.per_minute)

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        if self._connection is None:
            raise EngineError("the zonos engine is not loaded", code="engine_not_loaded")
        body = await self._body(segment)
        client = self._clients.get()
        request = client.build_request("POST", SPEECH_PATH, json=body)
        try:
            response = await client.send(request, stream=True)
            try:
                if response.status_code != 200:
                    raise self._refused(response, await response.aread(), segment.voicing.options)
                pieces = response.aiter_bytes()
                async with contextlib.aclosing(pieces):
                    audio = b"".join([piece async for piece in pieces])
            finally:
                await response.aclose()  # an answer not read to its end closes its connection
        except httpx.HTTPError as error:
            raise remote.unreachable(
                PROVIDER, error, engine=self.name, secrets=self._secrets
            ) from None
        try:
            yield await asyncio.to_thread(decode_audio, audio, RATE)
        except ValueError as error:
            raise UpstreamError(
                f"Zyphra's answer is not the WAV asked for: {error}", code="zonos_bad_audio"
            ) from None

    async def _body(self, segment: Segment) -> dict[str, Any]:
        """The JSON the ``zyphra`` client sends, made by its own ``TTSParams``."""
        from zyphra.models.audio import TTSParams

        options = segment.voicing.options
        extra = options.engine_options
        fields: dict[str, Any] = {
            "model": self.settings.model,
            "mime_type": "audio/wav",
            "speaking_rate": _speaking_rate(options),
        }
        if (language := _language_code(segment.voicing.language)) is not None:
            fields["language_iso_code"] = language
        if extra is not None:
            fields |= extra.model_dump(exclude_none=True, exclude={"speaking_rate"})
        if options.reference_audio:
            clip = await asyncio.to_thread(Path(options.reference_audio).read_bytes)
            fields["speaker_audio"] = base64.b64encode(clip).decode("ascii")
        else:
            fields["default_voice_name"] = options.voice
        return TTSParams(text=segment.text, **fields).model_dump(exclude_unset=True)

    def _refused(
        self, response: httpx.Response, body: bytes, options: SynthesisOptions
    ) -> Exception:
        rate_field = (
            "engine_options.speaking_rate"
            if options.engine_options is not None and options.engine_options.speaking_rate
            else "speed"
        )
        fields = {
            "text": "input", "speaking_rate": rate_field, "language_iso_code": "language",
            "default_voice_name": "voice", "speaker_audio": "voice",
            **{name: f"engine_options.{name}" for name in ("fmax", "vqscore", "pitch_std",
                                                           "speaker_noised", "emotion")},
            **{name: f"engine_options.emotion.{name}" for name in Emotion.model_fields},
        }  # fmt: skip
        return remote.refusal(
            PROVIDER, response.status_code, response.headers, body, engine=self.name,
            key_from=remote.key_setting(self.name, KEY_ENVIRONMENT), fields=fields,
            secrets=self._secrets,
        )  # fmt: skip


def _speaking_rate(options: SynthesisOptions) -> float:
    """Phonemes a second: the options' base rate (else Zyphra's 15), faster by the speed; a rate
    Zyphra does not take is refused naming what made it."""
    extra = options.engine_options
    base = getattr(extra, "speaking_rate", None) or BASE_RATE
    rate = round(base * options.speed, 3)  # the range's own ends, not a hair past them
    low, high = RATE_RANGE
    if not low <= rate <= high:
        raise InvalidRequestError(
            f"speed {options.speed} makes a speaking_rate of {rate:g} phonemes a second, and "
            f"Zyphra takes {low:g} to {high:g} (engine_options.speaking_rate is {base:g})",
            param="speed",
        )
    return rate


def _language_code(language: str) -> str | None:
    """Zyphra's ``language_iso_code`` for a language tag; None (Zyphra's default) for none."""
    base = language.split("-")[0].lower()
    return next((code for tag, code in LANGUAGES.items() if tag.split("-")[0].lower() == base),
                None)  # fmt: skip
