"""The contract every engine meets, and what it declares about itself."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from voxserve.audio.frames import AudioChunk


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; requests outside this get a clear 400, never a silent downgrade."""

    sample_rate: int
    """Native output rate of the default voice."""
    languages: tuple[str, ...]
    """Languages as IETF tags ("en-US") or bare codes ("en")."""
    max_input_chars: int
    """Longest text one synthesis call takes; longer text is chunked at sentences, then clauses."""
    speed_range: tuple[float, float] = (0.25, 4.0)
    streaming: bool = False
    """Yields audio before a segment is fully synthesized."""
    cloning: bool = False
    """Can speak in a voice given by reference audio."""
    instructions: bool = False
    """Honours free-text style instructions."""
    concurrency: int = 1
    """Syntheses that may run at once without slowing each other down."""
    carries_context: bool = False
    """Keeps a voice consistent across the segments of one render, given a ``context_id``."""
    sampling: bool = False
    """Generates by sampling, and takes per-request ``SamplingOptions``."""
    multi_speaker: bool = False
    """Speaks a cast in one conversation: ``speakers`` in the options, ``[SPEAKERn]`` tags in the
    text; with a shared ``context_id``, each turn hears the turns before it."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Voice:
    """A voice an engine offers."""

    id: str
    engine: str
    name: str
    language: str
    description: str = ""
    sample_rate: int | None = None
    """Native rate when it differs between an engine's voices."""


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
class SamplingOptions:
    """Per-request sampling for engines that sample; None keeps the engine's configured value."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_new_tokens: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class SynthesisOptions:
    """Per-call options; None means the voice's own default."""

    voice: str
    speed: float = 1.0
    language: str | None = None
    instructions: str | None = None
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
    sampling: SamplingOptions | None = None
    """For engines that declare ``sampling``."""


class Engine(ABC):
    """A text-to-speech engine.

    Construct cheaply (no model loading); ``load()`` does the heavy work, in a worker thread.
    ``synthesize`` is a blocking generator, also run in a worker thread by the synthesizer; it is
    called only after ``load()`` has returned.
    """

    name: ClassVar[str]
    extra: ClassVar[str | None] = None
    """The pip extra that installs this engine's dependencies (None: always installed)."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Importable modules the engine needs; used to tell whether it is installed."""

    def __init__(self, settings: Mapping[str, Any] | None = None):
        self.settings = dict(settings or {})

    @classmethod
    def is_installed(cls) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in cls.requires)

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def voices(self) -> list[Voice]:
        """Voices available now; must not need the model loaded."""

    @abstractmethod
    def load(self) -> None:
        """Load models; blocking."""

    def unload(self) -> None:  # noqa: B027 (an optional hook)
        """Free models; the next request loads again."""

    @abstractmethod
    def synthesize(self, text: str, options: SynthesisOptions) -> Iterator[AudioChunk]:
        """Speak ``text`` (already normalized and chunked); blocking."""
