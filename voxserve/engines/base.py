"""The contract every engine meets, and what it declares about itself.

An engine is handed one ``Segment`` at a time: a piece of text already normalized and cut to
the engine's size, and its ``Voicing`` (the voice and options it is spoken with, resolved once
by ``voxserve.voices.resolution``). ``Engine.stream(segment)`` yields its audio as it is made.

Two kinds of engine meet it:

- ``BlockingEngine``: a library that blocks (Piper's ONNX Runtime, torch). It writes a blocking
  generator, ``synthesize(text, options)``; the base runs it in a worker thread with a per-call
  timeout.
- natively async engines (network ones): they write ``generate(segment)`` as an async generator,
  cancellable at every ``await``.

Either way ``stream`` retries a failure marked ``retryable`` while none of the segment's audio has
gone out, turns an unexpected exception into an ``EngineError``, and refuses a segment the engine
made no audio of (``NoAudioError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxserve.audio.frames import AudioChunk
from voxserve.engines.threads import iterate_in_thread
from voxserve.errors import (
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    NoAudioError,
    VoxserveError,
    invalid_fields,
)
from voxserve.request import Sampling
from voxserve.setting_values import split_list_strings

logger = logging.getLogger("voxserve.engines")


class EngineSettings(BaseModel):
    """What every ``[engines.NAME]`` table may hold; an engine's ``Settings`` adds its own keys.

    Validated when the configuration loads (``config.py``): a misspelt key is an error naming it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int | None = Field(None, ge=1)
    """Engine calls at once; None: what the engine declares (``Capabilities.concurrency``)."""
    keep_alive: float | None = None
    """Seconds this engine stays loaded when idle (negative: forever); None: the top-level
    ``keep_alive`` (the default engine: forever)."""
    voice_aliases: dict[str, str] = Field(default_factory=dict)
    """Other names for this engine's voices, tried after its own ids and before the top-level
    ``voice_aliases`` (OpenAI's names)."""
    retries: int = Field(1, ge=0, le=5)
    """Tries again after a passing failure (``retryable``), while no audio has gone out."""
    retry_backoff: float = Field(0.5, ge=0, le=30)
    """Seconds before the first retry, doubled for each next one, less a random part of up to
    half (jitter: clients failed together do not retry together)."""
    retry_max_wait: float = Field(10.0, ge=0, le=300)
    """The longest wait before a retry: a provider asking for longer (``Retry-After``) fails the
    request at once, and the client is told how long to wait."""


class EngineOptions(BaseModel):
    """An engine's own per-request options (``Engine.Options``): unknown keys refused, frozen
    (its values key the segment cache)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SettingsGiven = EngineSettings | Mapping[str, Any] | None
"""What an engine is built from: its ``Settings``, or the ``[engines.NAME]`` table to check."""


class BlockingSettings(EngineSettings):
    call_timeout: float = Field(300.0, gt=0)
    """Seconds one engine call may take; past it the request fails (``engine_timeout``)."""


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; requests outside this get a clear 400, never a silent downgrade.
    Computed once per engine (``Engine.capabilities``), without loading a model."""

    sample_rate: int
    """Native output rate of the default voice."""
    languages: tuple[str, ...]
    """Every language the engine speaks, as IETF tags ("en-US") or bare codes ("en"); each
    voice says which of them it speaks (``Voice.speaks``)."""
    max_input_chars: int
    """Longest text one synthesis call takes."""
    preferred_chars: int | None = None
    """Text one call is best given (a sentence for Piper, more for engines that sound better
    with context); the planner cuts to it. None: ``max_input_chars``."""
    speed_range: tuple[float, float] = (0.25, 4.0)
    streaming: bool = False
    """Yields audio before a segment is fully synthesized."""
    cloning: bool = False
    """Can speak in a voice given by reference audio."""
    instructions: bool = False
    """Honours free-text style instructions (others accept them and report them ignored)."""
    concurrency: int = 1
    """Syntheses that may run at once without slowing each other down."""
    carries_context: bool = False
    """Keeps a voice consistent across the segments of one render, given a ``context_id``."""
    sampling: bool = False
    """Generates by sampling, and takes per-request ``Sampling``; no audio of a segment is then
    a failure worth another try (500), not text it cannot speak (400)."""
    multi_speaker: bool = False
    """Speaks a cast in one conversation: ``speakers`` in the options, ``[SPEAKERn]`` tags in the
    text; with a shared ``context_id``, each turn hears the turns before it."""
    word_timings: bool = False
    """Tells when each word is spoken (``AudioChunk.words``)."""
    emphasis: bool = False
    """Speaks SSML's ``<emphasis>``; where False (every engine so far) it is refused."""

    @property
    def chunk_chars(self) -> int:
        return min(self.preferred_chars or self.max_input_chars, self.max_input_chars)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Voice:
    """A voice an engine offers."""

    id: str
    engine: str
    name: str
    language: str
    """Its main language ("" when it has none of its own)."""
    description: str = ""
    sample_rate: int | None = None
    """Native rate when it differs between an engine's voices."""
    languages: tuple[str, ...] = ()
    """Every language it speaks, when more than ``language``."""

    def speaks(self) -> tuple[str, ...]:
        """The languages of this voice; () when it has none of its own (the engine's, then)."""
        return self.languages or ((self.language,) if self.language else ())


@dataclass(frozen=True)
class Cost:
    """What speaking a text costs on a paid engine, known before anything is spent."""

    units: int | float
    """What the provider bills: characters, tokens, or seconds of speech (not rounded per call:
    an estimate is the sum of its calls)."""
    unit: str
    """``characters``, ``tokens`` or ``seconds``."""
    usd: float

    def __add__(self, other: Cost) -> Cost:
        if other.unit != self.unit:
            raise ValueError(f"cannot add {other.unit} to {self.unit}")
        return Cost(self.units + other.units, self.unit, self.usd + other.usd)


@dataclass(frozen=True)
class SpeakerPrompt:
    """One voice of a multi-speaker dialogue, for the text's ``[SPEAKER0]``-style tag."""

    tag: str
    """The tag without brackets: ``SPEAKER0``."""
    reference_audio: str | None = None
    """Path of a WAV to clone for this speaker."""
    reference_text: str | None = None
    """What the reference audio says."""
    description: str | None = None
    """Who speaks, and how, in words."""


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-call options; None means the voice's own default."""

    voice: str
    speed: float = 1.0
    language: str | None = None
    instructions: str | None = None
    """Only for engines that declare ``instructions``; resolution leaves it None for the rest."""
    reference_audio: str | None = None
    """Path of a WAV to clone (engines that can clone)."""
    reference_text: str | None = None
    """What the reference audio says."""
    speaker_description: str | None = None
    """For description-driven engines."""
    speakers: tuple[SpeakerPrompt, ...] = ()
    """Per-speaker voices for text tagged ``[SPEAKER0] ... [SPEAKER1] ...`` (engines that can)."""
    context_id: str | None = None
    """Ties the segments of one render together (engines that declare ``carries_context``)."""
    sampling: Sampling | None = None
    """For engines that declare ``sampling``: the request's own type, unchanged."""
    engine_options: EngineOptions | None = None
    """The engine's own ``Options``, checked (a profile's, then the request's); None when the
    engine has none or none were given."""


@dataclass(frozen=True)
class Voicing:
    """Who speaks, and how: one engine, one of its voices, the options it takes, and the rate
    the stream is delivered at. Resolved once per request, dialogue speaker or chat character."""

    engine: Engine
    voice: Voice
    sample_rate: int
    """The output's rate (the request's, else the voice's native one)."""
    options: SynthesisOptions
    ignored: tuple[str, ...] = ()
    """Request fields accepted but not honoured by this engine (``instructions``): transports
    report them (``X-Ignored-Fields``), so nothing is dropped unseen."""
    volume: float = 1.0
    """Gain the synthesizer applies to the engine's samples (clipped to [-1, 1]): no engine's
    business, and its cached audio serves every volume."""
    replaceable: bool = False
    """An engine voice (named or the default, not a profile or a clip), which text in a
    language it does not speak may replace (``language_mismatch = "pick_voice"``)."""
    timed_words: bool = False
    """The request wants its words timed (``timestamps``, ``captions``): an engine that times
    none has them aligned to its audio (synthesis/word_alignment.py)."""

    @property
    def language(self) -> str:
        """What the text is in: the request's language, else the voice's."""
        return self.options.language or self.voice.language


@dataclass(frozen=True)
class Segment:
    """One engine call's worth of text, and who speaks it."""

    index: int
    text: str
    voicing: Voicing
    pause_after: float
    """Seconds of silence after this segment's audio."""
    pause_before: float = 0.0
    """Seconds of silence before it: only a pause written before anything is spoken."""
    neighbours: tuple[str, str] = ("", "")
    """The texts of the segments before and after it in its plan ("" at an end), for engines
    that speak a piece better knowing what surrounds it (ElevenLabs' previous_text, next_text)."""

    @property
    def engine(self) -> Engine:
        return self.voicing.engine


class Engine(ABC):
    """A text-to-speech engine.

    Construct cheaply (no model loading, no heavy imports); ``load()`` does the heavy work and
    is run in a worker thread; ``stream`` is called only after it has returned. ``voices()`` and
    ``capabilities`` must not need the model.
    """

    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    """The pip extra that installs this engine's dependencies (None: always installed)."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Importable modules the engine needs; used to tell whether it is installed."""
    Settings: ClassVar[type[EngineSettings]] = EngineSettings
    """The engine's ``[engines.NAME]`` table."""
    Options: ClassVar[type[EngineOptions] | None] = None
    """Per-request options of the engine's own (``engine_options`` of a request or a profile);
    None: it takes none, and any given are refused."""
    voices_listed_at_load: ClassVar[bool] = False
    """Whether ``load`` learns voices ``voices()`` cannot know before (a server's own list): a
    request naming this engine and a voice not yet known loads it before the voice is refused."""

    def __init__(self, settings: SettingsGiven = None, *, data_dir: Path | None = None):
        if isinstance(settings, EngineSettings):
            self.settings = settings
        else:
            self.settings = self.settings_from(dict(settings or {}))
        self.data_dir = data_dir

    @classmethod
    def settings_from(cls, table: Mapping[str, Any]) -> EngineSettings:
        """``[engines.NAME]`` as this engine's ``Settings``: environment strings for lists split
        at commas; a bad or unknown key is an error naming it (``engines.NAME.key``)."""
        try:
            return cls.Settings.model_validate(split_list_strings(cls.Settings, table))
        except ValidationError as error:
            problems = "; ".join(
                f"engines.{cls.name}.{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
                for item in error.errors()
            )
            raise EngineUnavailableError(
                f"invalid [engines.{cls.name}] settings: {problems}", code="engine_misconfigured"
            ) from None

    @classmethod
    def options_from(cls, given: Mapping[str, Any]) -> EngineOptions | None:
        """``engine_options`` checked against ``Options``: a wrong one is a 400 naming
        ``engine_options.<key>``; None when none were given."""
        if not given:
            return None
        if cls.Options is None:
            raise InvalidRequestError(
                f"engine {cls.name!r} takes no engine_options", param="engine_options",
                code="engine_options_not_supported",
            )  # fmt: skip
        try:
            return cls.Options.model_validate(given)
        except ValidationError as error:
            raise invalid_fields(
                [{**item, "loc": ("engine_options", *item["loc"])} for item in error.errors()]
            ) from None

    @classmethod
    def is_installed(cls) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in cls.requires)

    @functools.cached_property
    def capabilities(self) -> Capabilities:
        """What the engine declares, computed once (``describe``)."""
        return self.describe()

    @abstractmethod
    def describe(self) -> Capabilities:
        """The engine's capabilities; called once, cheap (no model, no torch)."""

    @abstractmethod
    def voices(self) -> list[Voice]:
        """Voices available now; must not need the model loaded."""

    def find_voice(self, spec: str) -> Voice | None:
        """The voice ``spec`` names on this engine: one of its ids, else one of its aliases
        (``voice_aliases``); None when it names none. An engine with richer specs (mixes such as
        ``a(2)+b(1)``) overrides this."""
        voices = {voice.id: voice for voice in self.voices()}
        if spec in voices:
            return voices[spec]
        alias = self.settings.voice_aliases.get(spec) or self.settings.voice_aliases.get(
            spec.lower()
        )
        return voices.get(alias) if alias else None

    def cost(self, text: str, options: SynthesisOptions) -> Cost | None:
        """What one call speaking ``text`` (one segment) is billed, from the engine's price
        table; None: the engine is free (it runs here). Paid engines override it."""
        return None

    @abstractmethod
    def load(self) -> None:
        """Load models; blocking (run in a worker thread)."""

    def unload(self) -> None:  # noqa: B027 (an optional hook)
        """Free models; the next request loads again."""

    @abstractmethod
    def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        """The engine's own audio for ``segment``, as it is made (an async generator)."""

    async def stream(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        """The contract: ``segment``'s audio as it is made, each chunk with the words it starts
        (timed from the chunk's start), for engines that time words."""
        for attempt in range(self.settings.retries + 1):
            produced = False
            try:
                async with contextlib.aclosing(self.generate(segment)) as chunks:
                    async for chunk in chunks:
                        if len(chunk.samples):
                            produced = True
                            yield chunk
            except EngineError as error:
                wait = self._retry_wait(attempt, error)
                last = attempt == self.settings.retries
                if not error.retryable or produced or last or wait is None:
                    raise
                logger.warning(
                    "engine %r: %s; trying again in %.2f s", self.name, error.message, wait
                )
                await asyncio.sleep(wait)
                continue
            except VoxserveError:
                raise
            except Exception as error:  # an engine bug fails this request, not the server
                raise EngineError(
                    f"engine {self.name!r} failed: {error}", code="engine_failed"
                ) from error
            if not produced:
                raise NoAudioError(self.name, unspeakable=not self.capabilities.sampling)
            return

    def _retry_wait(self, attempt: int, error: EngineError) -> float | None:
        """Seconds to wait before try ``attempt + 2``: what the provider asked for, else an
        exponential backoff with jitter; None: longer than ``retry_max_wait``, so no retry."""
        if error.retry_after is not None:
            wait = error.retry_after
        else:
            wait = self.settings.retry_backoff * 2**attempt * random.uniform(0.5, 1.0)
        return wait if wait <= self.settings.retry_max_wait else None


class BlockingEngine(Engine):
    """An engine on a library that blocks. ``synthesize`` is a blocking generator run in a
    worker thread, one chunk a step: closing the stream starts no further step (a step already
    running cannot be interrupted; the generator is closed as soon as it returns)."""

    Settings: ClassVar[type[EngineSettings]] = BlockingSettings
    settings: BlockingSettings

    @abstractmethod
    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        """Speak ``text`` (already normalized and cut to size); blocking."""

    async def generate(self, segment: Segment) -> AsyncIterator[AudioChunk]:
        timeout = self.settings.call_timeout
        deadline = time.monotonic() + timeout
        chunks = iterate_in_thread(self.synthesize(segment.text, segment.voicing.options))
        async with contextlib.aclosing(chunks):
            while True:
                limit = asyncio.timeout(max(0.0, deadline - time.monotonic()))
                try:
                    async with limit:
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if not limit.expired():  # the engine's own, not our limit
                        raise
                    raise EngineError(
                        f"engine {self.name!r} took over {timeout:g} s for one call "
                        f"(engines.{self.name}.call_timeout)",
                        code="engine_timeout",
                    ) from None
                yield chunk
