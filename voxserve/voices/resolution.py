"""Who speaks: a request, a dialogue turn or a chat character -> one ``Voicing``.

A voice is looked for in this order: a clip given with the request (or a path to one on the
server, in ``voice_paths``), a voice profile of that name, a voice of the engine the request
names (its own ids, then its aliases, then OpenAI's names as ``voice_aliases`` maps them, on
that engine only), then, when no engine was named, the ids of the other installed engines.

The voicing is checked against its engine and voice: speed, language (the voice's own),
cloning and sampling are refused with a 400 naming the field when the engine cannot honour
them, never quietly dropped. ``instructions`` alone are accepted by every engine, because OpenAI's
clients send them by default: an engine that cannot follow them gets none, and the voicing lists
them as ignored (``X-Ignored-Fields``).

A request without ``language`` to an engine of several languages is checked against its text's
language, detected (``voxserve.text.languages``; callers that have the text pass it). A voice
that speaks it speaks in it (a bilingual voice reads Chinese text as Chinese); for one that does
not, ``language_mismatch`` decides: ``pick_voice``, the engine's first voice that does (only in
place of a voice of the engine's own: a profile or a clone is the user's choice, and is kept),
``refuse``, a 400 naming ``language``, ``ignore``, the voice as asked. A text too short to tell
changes nothing. A replacement is logged, and the voicing's ``voice`` says who speaks (``ignored``
is for fields an engine did not honour, and lists none for it).

Resolution blocks (a SQLite lookup, reading and cleaning a clip, Whisper for a clip without a
transcript): ``resolve`` runs it in a worker thread; ``voicing`` is for code already in one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxserve.audio.transcribe import Transcriber
from voxserve.config import Settings
from voxserve.engines.base import Engine, SynthesisOptions, Voice, Voicing
from voxserve.engines.registry import EngineRegistry
from voxserve.errors import InvalidRequestError
from voxserve.request import SpeechOptions
from voxserve.text.languages import detect_language, load_detector
from voxserve.voices.clip_paths import read_clip, unusable_clip
from voxserve.voices.profile import VoiceProfile
from voxserve.voices.reference import MAX_CLIP_BYTES, ReferenceLimits, prepare_reference
from voxserve.voices.references import ReferenceCache
from voxserve.voices.store import VoiceStore

logger = logging.getLogger("voxserve.voices")


@dataclass(frozen=True)
class CloneReference:
    """A cleaned clip to clone and what it says."""

    path: Path
    text: str


class VoiceResolver:
    """Voicings from requests; owns the voice profiles, clone references and their transcriber."""

    def __init__(self, settings: Settings, registry: EngineRegistry):
        self.settings = settings
        self.registry = registry

    @functools.cached_property
    def voices(self) -> VoiceStore:
        """The user's voice profiles (created on first use)."""
        return VoiceStore(self.settings.data_path / "voices")

    @functools.cached_property
    def references(self) -> ReferenceCache:
        return ReferenceCache(self.settings.data_path / "references")

    @functools.cached_property
    def transcriber(self) -> Transcriber:
        return Transcriber(**self.settings.stt.model_dump())

    async def resolve(
        self,
        request: SpeechOptions,
        reference: CloneReference | None = None,
        text: str | None = None,
    ) -> Voicing:
        """``voicing``, in a worker thread."""
        return await asyncio.to_thread(self.voicing, request, reference, text)

    def for_text(self, voicing: Voicing, text: str) -> Voicing:
        """The voicing for one piece of text pushed after the request (a WebSocket's, an LLM's
        reply): ``voicing``, unless its language was left open and the piece reads as another
        one, which ``language_mismatch`` decides as for a whole request. Fast once the detector
        is loaded (``voicing`` loads it, in its thread, for an engine of several languages)."""
        if voicing.options.language is not None or voicing.options.reference_audio:
            return voicing
        voice, language = self._for_text(voicing.engine, voicing.voice, text, voicing.replaceable)
        if voice == voicing.voice and language is None:
            return voicing
        options = dataclasses.replace(voicing.options, voice=voice.id, language=language)
        return dataclasses.replace(voicing, voice=voice, options=options)

    def voicing(
        self,
        request: SpeechOptions,
        reference: CloneReference | None = None,
        text: str | None = None,
    ) -> Voicing:
        """The voicing ``request`` asks for, checked; raises naming the bad field. Blocking.

        ``reference``: a clip to clone, given with the request (it takes the place of ``voice``).
        ``text``: what it will say, where known, for its language (``language_mismatch``).
        """
        if reference is None and request.voice and _looks_like_path(request.voice):
            reference = self._path_reference(request.voice, request.model)
        if reference is not None:
            engine = self.cloning_engine(request.model, "the reference clip")
            voice = Voice("reference", engine.name, "reference clip", request.language or "")
            extra = {"reference_audio": str(reference.path), "reference_text": reference.text}
            return self._checked(engine, voice, request, request.speed, text, **extra)
        profile = self.voices.find(request.voice) if request.voice else None
        if profile is not None:
            return self._profile_voicing(profile, request, text)
        engine, voice = self.engine_voice(request.voice, request.model)
        return self._checked(engine, voice, request, request.speed, text, replaceable=True)

    def engine_voice(self, spec: str | None, model: str | None) -> tuple[Engine, Voice]:
        """The engine ``model`` names and its voice ``spec`` (None: its default voice)."""
        engine = self.registry.engine_for_model(model)
        if model is not None and self._learns_voices(engine, spec):
            self.registry.load_now(engine.name)  # its voices are known once it is loaded
        if spec is None:
            spec = self._default_voice(engine)
        voice = engine.find_voice(spec)
        alias = self.settings.voice_aliases.get(spec.lower())
        if voice is None and alias is not None:
            voice = engine.find_voice(alias)
        if voice is not None:
            return engine, voice
        if model is None:
            # No engine named: another installed engine's own voice of that id will do (never
            # an alias: OpenAI's names mean the default engine's voices).
            for name in self.registry.names():
                if name == engine.name or not self.registry.is_installed(name):
                    continue
                other = self.registry.get(name)
                if (found := other.find_voice(spec)) is not None:
                    return other, found
        known = ", ".join(voice.id for voice in engine.voices()) or "none"
        raise InvalidRequestError(
            f"unknown voice {spec!r} for engine {engine.name!r}; voices: {known}",
            param="voice",
            code="voice_not_found",
        )

    def _learns_voices(self, engine: Engine, spec: str | None) -> bool:
        """Whether ``engine`` must be loaded to know the voice ``spec`` (None: any voice)."""
        if not engine.voices_listed_at_load or self.registry.is_loaded(engine.name):
            return False
        return (not engine.voices()) if spec is None else engine.find_voice(spec) is None

    def _default_voice(self, engine: Engine) -> str:
        """The configured default voice on the default engine; another engine's first voice."""
        if engine.name == self.settings.default_engine:
            return self.settings.default_voice
        voices = engine.voices()
        if not voices:
            raise InvalidRequestError(
                f"engine {engine.name!r} offers no voices (is it configured?)",
                param="voice",
                code="voice_not_found",
            )
        return voices[0].id

    def _profile_voicing(
        self, profile: VoiceProfile, request: SpeechOptions, text: str | None
    ) -> Voicing:
        """A profile's voice: cloned from its reference where possible, else an engine voice."""
        engine = self.registry.engine_for_model(request.model or profile.engine)
        speed = request.speed
        if "speed" not in request.model_fields_set and profile.defaults.speed:
            speed = profile.defaults.speed
        extra = {"speaker_description": profile.speaker_description}
        reference = self.voices.reference_path(profile.id) if profile.has_reference else None
        if reference and (engine.capabilities.cloning or not profile.voice):
            engine = self.cloning_engine(engine.name, f"voice {profile.id!r}")
            voice = Voice(profile.id, engine.name, profile.display_name, profile.language or "")
            # A copy by content: deleting the profile meanwhile cannot pull the clip away.
            clip = self.references.store(reference.read_bytes())
            extra |= {"reference_audio": str(clip), "reference_text": profile.transcript}
        else:
            engine, voice = self.engine_voice(profile.voice, engine.name)
        # A profile's engine options are its own engine's; another engine does without them.
        own = engine.name == (profile.engine or self.settings.default_engine)
        options = profile.engine_options if own else None
        return self._checked(engine, voice, request, speed, text, profile_options=options, **extra)

    def cloning_engine(self, model: str | None, what: str) -> Engine:
        """The engine ``model`` names, if it can clone; else a 400 naming the engines that can."""
        engine = self.registry.engine_for_model(model)
        if engine.capabilities.cloning:
            return engine
        cloning = [
            name
            for name in self.registry.names()
            if self.registry.is_installed(name) and self.registry.get(name).capabilities.cloning
        ]
        raise InvalidRequestError(
            f"{what} needs an engine that can clone, and {engine.name!r} cannot; engines that "
            f"can: {', '.join(cloning) or 'none installed'}",
            param="voice",
            code="cloning_not_supported",
        )

    def _path_reference(self, voice: str, model: str | None) -> CloneReference:
        """A clip on the server named as ``voice``, in a directory of ``voice_paths``. The
        cheap checks come first: a request its engine cannot serve reads no file."""
        if not self.settings.voice_paths:
            raise InvalidRequestError(
                f"voice {voice!r} looks like a file path, and paths are not allowed on this "
                "server (voice_paths names the directories whose clips may be used)",
                param="voice",
                code="voice_paths_disabled",
            )
        self.cloning_engine(model, "the reference clip")
        audio = read_clip(voice, self.settings.voice_paths, MAX_CLIP_BYTES)
        try:
            return self.clone_reference(audio, None)
        except InvalidRequestError as error:
            if error.code == "invalid_audio":  # not audio: answered as any unusable path
                raise unusable_clip(voice) from error
            raise

    def clone_reference(self, audio: bytes, transcript: str | None) -> CloneReference:
        """Check and clean a clip given with a request (as its ``voice``: a refusal names that
        field); transcribe it when no transcript came. Blocking."""
        limits = ReferenceLimits(
            min_seconds=self.settings.reference_min_seconds,
            max_seconds=self.settings.reference_max_seconds,
        )
        try:
            clip = prepare_reference(audio, limits)
        except InvalidRequestError as error:
            raise InvalidRequestError(error.message, param="voice", code=error.code) from error
        text = (transcript or "").strip() or self.transcriber.transcribe(clip)
        return CloneReference(self.references.store(clip.to_wav_bytes()), text)

    def _checked(
        self,
        engine: Engine,
        voice: Voice,
        request: SpeechOptions,
        speed: float,
        text: str | None,
        *,
        replaceable: bool = False,
        profile_options: Mapping[str, Any] | None = None,
        **extra: str,
    ) -> Voicing:
        """``replaceable``: an engine voice, which a text in another language may replace."""
        capabilities = engine.capabilities
        low, high = capabilities.speed_range
        if not low <= speed <= high:
            raise InvalidRequestError(
                f"speed {speed} is outside {engine.name}'s range {low}-{high}",
                param="speed",
            )
        spoken = voice.speaks() or capabilities.languages
        if request.language and not language_supported(request.language, spoken):
            raise InvalidRequestError(
                f"voice {voice.id!r} of engine {engine.name!r} does not speak "
                f"{request.language!r}; it speaks {', '.join(spoken)}",
                param="language",
                code="unsupported_language",
            )
        if request.sampling is not None and not capabilities.sampling:
            raise InvalidRequestError(
                f"engine {engine.name!r} does not sample, so it takes no sampling settings",
                param="sampling",
                code="sampling_not_supported",
            )
        engine_options = engine.options_from(
            {**(profile_options or {}), **(request.engine_options or {})}
        )
        language = request.language
        if language is None and multilingual(engine):
            load_detector()  # here, in a worker thread: pushed text is then detected at once
        if language is None and text:
            voice, language = self._for_text(engine, voice, text, replaceable)
        follows = capabilities.instructions
        options = SynthesisOptions(
            voice=voice.id,
            speed=speed,
            language=language,
            instructions=request.instructions if follows else None,
            sampling=request.sampling,
            engine_options=engine_options,
            **extra,
        )
        ignored = ("instructions",) if request.instructions and not follows else ()
        sample_rate = request.sample_rate or voice.sample_rate or capabilities.sample_rate
        return Voicing(
            engine, voice, sample_rate, options, ignored, request.volume_multiplier, replaceable
        )

    def _for_text(
        self, engine: Engine, voice: Voice, text: str, replaceable: bool
    ) -> tuple[Voice, str | None]:
        """The voice to speak ``text`` and its language (None: the voice's own), as the text's
        detected language and ``language_mismatch`` decide (the module's docstring)."""
        languages = engine.capabilities.languages
        if not multilingual(engine):
            return voice, None
        detected = detect_language(text)
        if detected is None:
            return voice, None

        def speaking(candidate: Voice) -> tuple[Voice, str | None] | None:
            tag = matching_tag(detected, candidate.speaks() or languages)
            return None if tag is None else (candidate, None if tag == candidate.language else tag)

        if (found := speaking(voice)) is not None:
            return found
        mismatch = self.settings.language_mismatch
        if mismatch == "refuse":
            raise InvalidRequestError(
                f"the text reads as {detected!r}, which voice {voice.id!r} of engine "
                f"{engine.name!r} does not speak (it speaks "
                f"{', '.join(voice.speaks() or languages)}); choose a voice that does, or send "
                "language to say what the text is in",
                param="language",
                code="unsupported_language",
            )
        if mismatch == "pick_voice" and replaceable:
            for other in engine.voices():
                if (found := speaking(other)) is not None:
                    logger.info(
                        "the text reads as %r, which voice %r does not speak: %r speaks it",
                        detected, voice.id, other.id,
                    )  # fmt: skip
                    return found
        return voice, None


def multilingual(engine: Engine) -> bool:
    """Whether ``engine`` speaks several languages: its texts' languages are then detected."""
    return len({_base(tag) for tag in engine.capabilities.languages}) >= 2


def _looks_like_path(voice: str) -> bool:
    return "/" in voice or "\\" in voice or voice.startswith("~")


def language_supported(language: str, supported: tuple[str, ...]) -> bool:
    return matching_tag(language, supported) is not None


def matching_tag(language: str, supported: tuple[str, ...]) -> str | None:
    """The first of ``supported`` that is ``language`` or shares its base language ("en" and
    "en-US"); None when none does."""
    wanted = language.replace("_", "-").lower()
    for tag in supported:
        if wanted == tag.lower() or _base(wanted) == _base(tag):
            return tag
    return None


def _base(tag: str) -> str:
    return tag.replace("_", "-").lower().split("-")[0]
