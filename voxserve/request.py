"""What every transport builds: OpenAI's speech API fields plus voxserve's extensions, and
dialogues (turns, each in its speaker's voice)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from voxserve.text.languages import KOKORO_LANG_CODES
from voxserve.text.speakable import drop_control_characters, has_something_to_say

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
# An IETF language tag's shape ("en", "en-US", "zh-Hant-TW"; "_" as in locale names): engines
# match it against the languages they speak, and error messages quote it.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{1,8}){0,4}")


class Sampling(BaseModel):
    """Sampling for engines that generate by sampling (``higgs``); unset fields keep the engine's
    configured values. Other engines refuse it."""

    # NaN passes every bound check unnoticed ("should be <= 2" said of NaN): say it must be finite.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float | None = Field(None, gt=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # what every random generator takes


class SpeechOptions(BaseModel):
    """How to speak: everything of a speech request but the text."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    voice: str | None = None
    """A voice id or alias; None means the configured default voice. OpenAI's newer SDKs send
    ``{"id": "..."}``: that is read as its id."""
    model: str | None = None
    """An engine name; OpenAI's model names (tts-1, tts-1-hd, gpt-4o-mini-tts) mean the default."""
    response_format: AudioFormat = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None
    """Style instructions; used by engines that can. The rest accept them and name them in the
    ``X-Ignored-Fields`` response header (OpenAI's clients send them by default)."""
    sample_rate: int | None = Field(None, ge=8000, le=48000)
    """Resample to this rate; None keeps the engine's native rate."""
    language: str | None = Field(None, validation_alias=AliasChoices("language", "lang_code"))
    """A language tag (``en``, ``en-US``), for engines that speak several; ``lang_code``, as
    Kokoro-FastAPI names it, is read as this. None: the voice's own, or (engines of several
    languages) the text's, detected (``language_mismatch``)."""
    normalize: bool = True
    """Read numbers, dates, units, URLs... as words; drop markdown and emoji."""
    sampling: Sampling | None = None
    volume_multiplier: float = Field(1.0, gt=0, le=4)
    """Gain on the output (Kokoro-FastAPI's field): 2 is about +6 dB; samples are clipped."""
    engine_options: dict[str, Any] | None = None
    """Options of the chosen engine's own (ElevenLabs' voice settings, Zonos' emotion), checked
    against its ``Options``: a wrong one is a 400 naming ``engine_options.<key>``."""

    @field_validator("voice", mode="before")
    @classmethod
    def _voice_object(cls, value: object) -> object:
        if isinstance(value, dict):
            if not isinstance(value.get("id"), str):
                raise ValueError('a voice object needs an "id" string: {"id": "joe"}')
            return value["id"].strip() or None
        return value

    @field_validator("voice", "model", "language", "instructions", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("instructions")
    @classmethod
    def _none_is_none(cls, value: str | None) -> str | None:
        # Home Assistant's OpenAI TTS integration sends its unset option as the string "None".
        return None if value is not None and value.strip() == "None" else value

    @field_validator("language")
    @classmethod
    def _language_tag(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Kokoro-FastAPI's clients send Kokoro's one-letter codes ("a": American English).
        value = KOKORO_LANG_CODES.get(value.lower(), value)
        if not LANGUAGE_TAG.fullmatch(value):
            raise ValueError("should be a language tag such as en or en-US")
        return value


class Delivery(BaseModel):
    """How an answer goes out: streamed or whole, audio or SSE events, with word timestamps."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    stream_format: Literal["audio", "sse"] = "audio"
    stream: bool = True
    """Stream audio while it is synthesized (False: one complete response)."""
    timestamps: bool = False
    """With ``stream`` false: answer JSON, the audio (base64) and when each word is spoken, for
    engines that time their words. Streamed SSE answers carry word events either way. Words
    asked for of an engine that times none are aligned to its audio (each segment's audio then
    goes out once the segment is whole)."""
    captions: Literal["srt", "vtt", "json"] | None = None
    """With ``stream`` false: answer JSON with the audio and a captions file of its words
    (SubRip, WebVTT, or a JSON document of words and sentences), timed as ``timestamps``."""

    @property
    def wants_words(self) -> bool:
        return self.timestamps or self.captions is not None

    @property
    def words_field(self) -> str:
        """The field that asks for words, for errors to name."""
        return "captions" if self.captions is not None else "timestamps"


class SpeechRequest(SpeechOptions, Delivery):
    """Text to speak and how to speak it. The same fields as ``POST /v1/audio/speech``."""

    input: str = Field(min_length=1)
    """The text to speak."""
    input_format: Literal["text", "ssml"] | None = None
    """``ssml``: ``input`` is an SSML document (``voxserve.text.ssml``: the subset spoken);
    ``text``: plain text, even if it opens with ``<speak``; None: SSML if it does."""

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = drop_control_characters(value)
        if not value.strip():
            raise ValueError("input is empty, or only whitespace and control characters")
        return value


class DialogueTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speaker: str = ""
    text: str = Field(min_length=1)
    voice: str | None = None

    @field_validator("text")
    @classmethod
    def _something_to_say(cls, value: str) -> str:
        value = drop_control_characters(value)
        if not has_something_to_say(value):
            raise ValueError("the turn has nothing to say (no letter or digit)")
        return value


class DialogueRequest(SpeechOptions, Delivery):
    """``POST /v1/audio/dialogue``: turns, each spoken in its speaker's voice."""

    turns: list[DialogueTurn] = Field(min_length=1, max_length=2000)
    voices: dict[str, str] = Field(default_factory=dict)
    """Speaker name -> voice, for speakers without a profile of their name."""
    pause_between_turns: float = Field(0.4, ge=0.0, le=5.0)
