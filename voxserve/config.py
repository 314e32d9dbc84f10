"""The one home of configuration: defaults < TOML file < VOXSERVE_* environment < CLI flags.

Nested keys use a double underscore in the environment: ``VOXSERVE_ENGINES__PIPER__THREADS=2``
sets ``[engines.piper] threads = 2``. Values that look like JSON objects or lists are parsed
as JSON.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "VOXSERVE_"
DEFAULT_CONFIG_FILE = Path("~/.config/voxserve/config.toml")

# OpenAI's voice names -> the embedded voice and the built-ins rendered from it, by character.
OPENAI_VOICE_DEFAULTS = {
    "alloy": "joe", "ash": "joe", "ballad": "storyteller_male", "coral": "warm_female",
    "echo": "joe", "fable": "storyteller_male", "nova": "warm_female", "onyx": "deep_male",
    "sage": "professional_female", "shimmer": "soft_female", "verse": "joe",
    "marin": "professional_female", "cedar": "deep_male",
}  # fmt: skip


class SttSettings(BaseModel):
    """Speech to text (``[stt]``): reference transcripts and the voice chat's ears."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = None
    """A faster-whisper (CTranslate2) model directory; None: the bundled Whisper tiny.en."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto``."""
    compute_type: str = "int8"
    """CTranslate2's: ``int8``, ``int8_float16``, ``float16``, ``float32``..."""
    cpu_threads: int = Field(2, ge=0)
    """Threads per transcription on the CPU; 0: CTranslate2's default (4). On two cores, two hear
    a voice-chat question with tiny.en in ~190 ms where one takes ~235 (the LLM and the voice
    wait for its words anyway); a bigger model wants more."""


class ChatSettings(BaseModel):
    """The voice chat (``[chat]``; environment ``VOXSERVE_CHAT__LLM_BASE_URL`` and so on)."""

    model_config = ConfigDict(extra="forbid")

    llm_base_url: str | None = None
    """An OpenAI-compatible endpoint (Ollama, llama.cpp's server, vLLM, OpenRouter...); None: the
    embedded SmolLM2 (the ``chat`` extra)."""
    llm_api_key: str | None = None
    llm_model: str = "default"
    llm_first_token_timeout: float = Field(15.0, gt=0)
    """Seconds to wait for the first word of a reply before telling the user the LLM is slow."""
    llm_timeout: float = Field(30.0, gt=0)
    """Seconds to wait to connect, and between two pieces of a reply."""
    max_reply_tokens: int = Field(200, ge=1)
    barge_in: bool = True
    """User speech while the assistant talks interrupts it."""
    barge_in_min_ms: int = Field(300, ge=0)
    end_of_speech_ms: int = Field(500, ge=100)
    """Silence that ends the user's turn."""
    speculate: bool = True
    """Start the reply in a short pause (``speculate_after_ms``), held back until the end of speech
    is certain and dropped if the user speaks on; off: replies start at the end of speech."""
    speculate_after_ms: int = Field(64, ge=0)
    min_speech_ms: int = Field(200, ge=0)
    """Shorter sounds are not an utterance (a cough, a click)."""
    partial_interval_ms: int = Field(1000, ge=100)
    """How often a draft transcript is made while the user speaks."""
    vad_threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability at which the voice activity detector hears speech start."""
    stt_window_s: float = Field(10.0, ge=5, le=30)
    """Seconds of audio Whisper hears an utterance in. 30 is Whisper's own window, and costs the
    same for any utterance; 10 hears a short question ~3x faster, about as well. A longer
    utterance, or a transcript that loops, is heard again in the full 30 s."""
    stt_beam_size: int = Field(1, ge=1, le=10)
    """Whisper's beam for the user's words. 1 (greedy) heard 44 spoken questions and commands
    with the same word error rate as 5, ~80 ms sooner on two cores (tiny.en)."""
    llm_threads: int | None = Field(None, ge=1)
    """CPU threads of the embedded LLM; None: every core, up to four (its threads yield to the
    voice's)."""
    policy: str = "round_robin"
    keep_history: bool = True
    """Save conversations, so that they can be listed and resumed."""
    database_url: str | None = None
    """Where conversations are saved: any SQLAlchemy URL (``postgresql+psycopg://user@host/db``,
    with its driver installed); None: ``chat.db`` (SQLite) in the data directory."""
    characters: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {
                "name": "Ava",
                "voice": "warm_female",
                "persona": "You are Ava, a friendly and concise voice assistant.",
            },
        ]  # fmt: skip
    )


class RunpodSettings(BaseModel):
    """The RunPod serverless worker (``[runpod]``; environment ``VOXSERVE_RUNPOD__MAX_AUDIO_MB``
    and so on). The ``runpod`` engine that calls such a worker is set in ``[engines.runpod]``."""

    model_config = ConfigDict(extra="forbid")

    max_audio_mb: float = Field(20.0, gt=0)
    """Largest reference clip a job's ``audio_url`` may download."""
    fetch_timeout: float = Field(30.0, gt=0)
    """Seconds the whole download of ``audio_url`` may take, redirects included."""
    allow_private_urls: bool = False
    """Let ``audio_url`` reach private, loopback and link-local addresses (trusted clients only:
    otherwise a job could read the cloud's metadata service or the network behind the worker)."""


class Settings(BaseModel):
    """Every setting voxserve has, with its default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    host: str = "127.0.0.1"
    port: int = Field(8880, ge=0, le=65535)
    log_level: str = "info"
    data_dir: Path = Path("~/.local/share/voxserve")
    """Voice profiles, extra voices and job outputs live here."""

    default_engine: str = "piper"
    default_voice: str = "joe"
    voice_aliases: dict[str, str] = Field(default_factory=lambda: dict(OPENAI_VOICE_DEFAULTS))
    """OpenAI voice names (and any other alias) -> a voxserve voice."""

    max_input_chars: int = Field(4096, ge=1)
    max_dialogue_chars: int = Field(100_000, ge=1)
    """A dialogue (a podcast, a scene) may be longer than one speech request."""
    dialogue_delimiter: str = "|||"
    """Separates speaker and text in a dialogue line: ``Alice|||Hello!``."""
    dialogue_in_speech: bool = True
    """Speak ``/v1/audio/speech`` input that holds dialogue lines as a dialogue."""
    sentence_pause: float = Field(0.2, ge=0, le=5)
    """Seconds of silence between sentences."""
    clause_pause: float = Field(0.05, ge=0, le=5)
    """Seconds of silence where a long sentence was cut at a clause to fit an engine."""
    first_fragment_small: bool = True
    """Synthesize the first clause on its own so audio starts sooner."""
    lookahead: int = Field(2, ge=1, le=16)
    """Segments synthesized ahead of the one being encoded and sent."""
    preload: bool = True
    """Load the default engine when the server starts rather than on the first request."""
    keep_alive: float = 300.0
    """Seconds an idle engine stays loaded (negative: forever). The default engine stays unless
    its own table sets ``keep_alive``."""
    max_streams_per_engine: int = Field(8, ge=1)
    """Requests one engine synthesizes at once, sharing it segment by segment."""
    cache_mb: float = Field(32.0, ge=0)
    """Memory for recently synthesized segments (repeated phrases are not synthesized again)."""
    max_queue: int = Field(32, ge=0)
    """Requests waiting for a stream place; beyond this they get 429 with Retry-After."""

    speakers: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "piper": ["joe", "warm_female", "storyteller_male", "professional_female"],
            "higgs": ["deep_male", "warm_female", "storyteller_male", "professional_female"],
        }
    )
    """Per engine, the voices for the TTS-provider speaker roles 0-3: primary male, primary female,
    secondary male, secondary female."""

    allow_voice_paths: bool = False
    """Let ``voice`` name an audio file on the server to clone (only for trusted clients)."""
    reference_min_seconds: float = Field(3.0, gt=0)
    reference_max_seconds: float = Field(30.0, gt=0)
    """Speech a voice profile's reference clip must hold, after silence is trimmed."""

    stt: SttSettings = Field(default_factory=SttSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    runpod: RunpodSettings = Field(default_factory=RunpodSettings)

    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-engine tables, e.g. ``[engines.piper] threads = 2``."""

    @field_validator("voice_aliases", mode="before")
    @classmethod
    def _keep_default_aliases(cls, value: Any) -> Any:
        # A user adding one alias should not lose the OpenAI names.
        if isinstance(value, Mapping):
            return {**OPENAI_VOICE_DEFAULTS, **value}
        return value

    def engine_settings(self, name: str) -> dict[str, Any]:
        return dict(self.engines.get(name, {}))

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser()


class ConfigError(ValueError):
    """The configuration file or environment holds something invalid."""


def load_settings(
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from every layer, later layers winning."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    _deep_merge(merged, _read_toml(config_file, environ))
    _deep_merge(merged, _read_environment(environ))
    _deep_merge(
        merged, {key: value for key, value in (overrides or {}).items() if value is not None}
    )
    try:
        return Settings.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from error


def _read_toml(config_file: str | os.PathLike | None, environ: Mapping[str, str]) -> dict:
    explicit = config_file or environ.get(ENV_PREFIX + "CONFIG")
    path = Path(explicit or DEFAULT_CONFIG_FILE).expanduser()
    if not path.exists():
        if explicit:
            raise ConfigError(f"config file not found: {path}")
        return {}
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error


def _read_environment(environ: Mapping[str, str]) -> dict:
    layer: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        target = layer
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = _parse_env_value(raw)
    return layer


def _parse_env_value(raw: str) -> Any:
    if raw[:1] in "{[":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            pass
    return raw


def _deep_merge(into: dict, layer: Mapping) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
