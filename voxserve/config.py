"""The one home of configuration: defaults < TOML file < VOXSERVE_* environment < CLI flags.

Nested keys use a double underscore in the environment: ``VOXSERVE_ENGINES__PIPER__THREADS=2``
sets ``[engines.piper] threads = 2``. Values that look like JSON objects or lists are parsed
as JSON. A plain string given for a list setting is its comma-separated items:
``VOXSERVE_ENGINES__RUNPOD__VOICES=joe,warm_female``. Each ``[engines.NAME]`` table is checked
against that engine's ``Settings`` model when the configuration loads.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from voxserve.net import is_loopback
from voxserve.setting_values import split_list_strings

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
    """A faster-whisper (CTranslate2) model directory, or a bundled model: ``tiny.en`` (None, the
    default) or ``base`` (multilingual, the whisper-base extra)."""
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
    llm_api_key: SecretStr | None = None
    """Sent to the endpoint only; never logged or shown."""
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
    preload: bool = False
    """Warm the chat's models (Whisper, the LLM, the characters' voices) when the server starts;
    off: the first chat connection warms them. Either way they are warmed once per process."""
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


Scope = Literal["speech", "admin"]


class ApiKey(BaseModel):
    """One API key (``[[auth.api_keys]]``); a plain string in the list is a ``speech`` key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr
    """Sent as ``Authorization: Bearer KEY``; never logged or shown (``voxserve keys new``)."""
    scope: Scope = "speech"
    """``speech``: every route but the admin ones; ``admin``: those too (deleting voices,
    ``/metrics``)."""
    name: str | None = None
    """A label for the operator; the key itself is never used as one."""
    requests_per_minute: int | None = Field(None, ge=1)
    """This key's own limit; None: ``auth.requests_per_minute``."""
    characters_per_minute: int | None = Field(None, ge=1)
    """This key's own limit; None: ``auth.characters_per_minute``."""
    monthly_budget_usd: float | None = Field(None, ge=0)
    """What this key may spend on paid engines in a calendar month (UTC); None: no limit. A
    request whose estimate would pass it is refused (429 ``insufficient_quota``)."""

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if len(secret) < 8 or secret != secret.strip():
            raise ValueError("an API key needs 8 or more characters and no surrounding spaces")
        return value


class AuthSettings(BaseModel):
    """Access control (``[auth]``). With no keys, nothing asks for one: fine on loopback, refused
    on any other address unless ``insecure`` is set."""

    model_config = ConfigDict(extra="forbid")

    api_keys: list[ApiKey] = Field(default_factory=list)
    """Keys: strings (scope ``speech``) or tables with ``key``, ``scope``, ``name`` and limits."""
    api_keys_file: Path | None = None
    """A file of keys, one a line: ``KEY`` or ``KEY admin``; ``#`` starts a comment. Read at
    start, beside ``api_keys``."""
    open_listing: bool = True
    """``GET /v1/models``, ``/v1/audio/models`` and ``/v1/audio/voices`` need no key: Open WebUI
    lists voices and models without sending its key."""
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins (``https://app.example.com``, or ``*``) whose pages may call the API; empty:
    only the server's own pages. WebSockets and state-changing requests (POST, PATCH, DELETE)
    from another origin are refused."""
    allowed_hosts: list[str] = Field(default_factory=list)
    """Names clients may reach the server by (the ``Host`` header; ``*``: any). Empty: any name
    when keys are configured; without keys, IP addresses, ``localhost`` and the machine's own
    name only, so that a web page cannot rebind its own DNS name to this server."""
    requests_per_minute: int | None = Field(None, ge=1)
    """Requests (and WebSocket connections) a key, or an address without a key, may start per
    minute; None: no limit."""
    characters_per_minute: int | None = Field(None, ge=1)
    """Characters of text to speak a key, or an address without a key, may send per minute."""
    insecure: bool = False
    """Serve a non-loopback address with no keys (``voxserve serve --insecure``): anyone who
    can reach the port can use it."""

    @field_validator("api_keys", mode="before")
    @classmethod
    def _strings_are_speech_keys(cls, value: Any) -> Any:
        # (A comma-separated string was already made a list, as for every list setting.)
        if isinstance(value, list):
            return [{"key": item} if isinstance(item, str) else item for item in value]
        return value


class ConnectionSettings(BaseModel):
    """What one client may hold open (``[connections]``; environment
    ``VOXSERVE_CONNECTIONS__MAX_WEBSOCKETS_PER_CLIENT`` and so on). A client is its socket's peer
    address: behind a proxy, every client is the proxy."""

    model_config = ConfigDict(extra="forbid")

    max_websockets_per_client: int = Field(16, ge=1)
    """WebSockets one address may have open at once; the next is refused at the handshake (429)."""
    max_websockets: int = Field(256, ge=1)
    """WebSockets open at once, all clients together."""
    max_requests_per_client: int = Field(64, ge=1)
    """HTTP requests one address may have in progress at once; the next gets 429."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds a connection may take to send a request's headers (from its opening, or from the
    end of its previous response) before it is closed."""
    body_timeout: float = Field(10.0, gt=0)
    """Seconds a request's body may pause between two pieces before the request gets 408."""


class WyomingSettings(BaseModel):
    """The Wyoming server for Home Assistant (``[wyoming]``; environment
    ``VOXSERVE_WYOMING__PORT`` and so on): speech both ways over the Wyoming protocol.

    Wyoming has no credentials: a connection is its address, with the per-address limits of
    ``[auth]``. So it listens on loopback unless ``allow_unauthenticated`` says otherwise."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)
    """Wyoming's TCP port (Home Assistant's add-ons use 10200); None: no Wyoming server."""
    zeroconf: bool = False
    """Announce the server on the local network (mDNS ``_wyoming._tcp``), so Home Assistant
    offers to add it."""
    zeroconf_name: str = "voxserve"
    allow_unauthenticated: bool = False
    """Listen on a non-loopback ``host``: anyone who can reach the port can use it, API keys or
    not (Wyoming cannot carry one)."""
    engines: list[str] = Field(default_factory=list)
    """Engines whose voices Wyoming offers; empty: the default engine and every engine with an
    ``[engines.NAME]`` table."""
    stt_languages: list[str] = Field(default_factory=lambda: ["en"])
    """The languages the speech-to-text model (``[stt]``) hears: tiny.en, bundled, hears
    English."""
    max_audio_seconds: float = Field(60.0, gt=0)
    """The longest speech one ``transcribe`` may send."""

    @model_validator(mode="before")
    @classmethod
    def _strings_for_lists(cls, data: Any) -> Any:
        return split_list_strings(cls, data)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> WyomingSettings:
        if self.port is not None and not self.allow_unauthenticated and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve Wyoming on {self.host}: Wyoming cannot carry an API key, so "
                "anyone who can reach it could use it. Set wyoming.allow_unauthenticated = true "
                "(VOXSERVE_WYOMING__ALLOW_UNAUTHENTICATED) if that is what you want."
            )
        return self


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
    language_mismatch: Literal["pick_voice", "refuse", "ignore"] = "pick_voice"
    """A request without ``language`` to an engine of several languages has its text's language
    detected; when its voice does not speak it: ``pick_voice`` speaks with the engine's first
    voice that does (an engine voice only: a profile or clone is kept), ``refuse`` answers 400
    naming ``language``, ``ignore`` goes on with the voice asked for."""

    max_input_chars: int = Field(4096, ge=1)
    max_spoken_chars: int = Field(8192, ge=1)
    """Characters a speech input may read as once normalized (numbers, symbols and units said as
    words): "1" * 4096 reads as 16,383, "<" * 4096 as 40,959, and would run for minutes."""
    max_dialogue_chars: int = Field(100_000, ge=1)
    """A dialogue (a podcast, a scene) may be longer than one speech request."""
    max_stream_chars: int = Field(100_000, ge=1)
    """Text one utterance of ``/v1/audio/speech/stream`` may hold, from its ``start`` to its
    ``end`` (as much as a dialogue: a long reply read as it is written). Over it the utterance is
    refused (``utterance_too_long``) and the connection takes the next one."""
    max_websocket_message_bytes: int = Field(1 << 20, ge=64 * 1024)
    """The largest WebSocket message a client may send (uvicorn's ``ws_max_size``); a larger one
    closes the connection (1009). A text message is refused well before that, at 4 x
    ``max_input_chars`` + 4096 characters (``message_too_large``), and the connection goes on."""
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
            # CSM has two speakers: the TTS-provider server's mapping, 0 and 2 to the first.
            "csm": ["csm_0", "csm_1", "csm_0", "csm_1"],
            # The packaged voices have one man: the second is him with a woman's quarter.
            "kokoro": ["jm_kumo", "jf_alpha", "jm_kumo(3)+jf_nezumi(1)", "jf_gongitsune"],
            "edge": [
                "en-US-GuyNeural", "en-US-JennyNeural", "en-US-DavisNeural", "en-GB-SoniaNeural"
            ],
        }
    )
    """Per engine, the voices for the TTS-provider speaker roles 0-3: primary male, primary female,
    secondary male, secondary female."""

    voice_paths: list[Path] = Field(default_factory=list)
    """Directories whose audio files ``voice`` may name to clone (``"/srv/voices/ann.wav"``), for
    trusted clients only: they may read any clip in them. Empty: ``voice`` is never a path."""
    allow_voice_paths: bool = False
    """Replaced by ``voice_paths``: true, which let a client name any file, is refused."""
    reference_min_seconds: float = Field(3.0, gt=0)
    reference_max_seconds: float = Field(30.0, gt=0)
    """Speech a voice profile's reference clip must hold, after silence is trimmed."""

    stt: SttSettings = Field(default_factory=SttSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    runpod: RunpodSettings = Field(default_factory=RunpodSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    connections: ConnectionSettings = Field(default_factory=ConnectionSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)

    allow_downloads: bool = False
    """Let an engine the operator set up (the default engine, or one with an ``[engines.NAME]``
    table) fetch its model weights from the Hugging Face Hub when it first loads. Off: weights
    come from local directories and the Hugging Face cache only, and a request for an engine
    whose weights are not here gets 400 ``engine_not_configured``."""
    # Out of the repr: a table may hold an engine's API key, and the engine's own model (with
    # its keys as SecretStr) is what the engine keeps.
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)
    """Per-engine tables, e.g. ``[engines.piper] threads = 2``; each engine's ``Settings`` model
    says what its table takes."""

    @model_validator(mode="before")
    @classmethod
    def _strings_for_lists(cls, data: Any) -> Any:
        return split_list_strings(cls, data)

    @field_validator("allow_voice_paths")
    @classmethod
    def _replaced_by_voice_paths(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "replaced by voice_paths, the directories whose clips a client may name as "
                'voice: voice_paths = ["/srv/voices"]'
            )
        return value

    @field_validator("voice_aliases", mode="before")
    @classmethod
    def _keep_default_aliases(cls, value: Any) -> Any:
        # A user adding one alias should not lose the OpenAI names.
        if isinstance(value, Mapping):
            return {**OPENAI_VOICE_DEFAULTS, **value}
        return value

    @field_validator("engines")
    @classmethod
    def _engine_tables(cls, tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        # Imported here: the registry's engine modules import this one.
        from voxserve.engines.registry import ENGINE_CLASSES, engine_class
        from voxserve.errors import EngineUnavailableError

        problems = []
        for name, table in tables.items():
            if name not in ENGINE_CLASSES:
                problems.append(
                    f"unknown engine {name!r} (engines: {', '.join(sorted(ENGINE_CLASSES))})"
                )
                continue
            try:
                engine_class(name).settings_from(table)
            except EngineUnavailableError as error:
                problems.append(error.message)
        if problems:
            raise ValueError("; ".join(problems))
        return tables

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
        # Not chained: pydantic's error repeats the input, keys and passwords included.
        raise ConfigError(f"invalid configuration: {problems}") from None


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
